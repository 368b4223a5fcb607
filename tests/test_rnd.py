"""RND: the bonus of a repeatedly trained-on observation falls; a novel one stays high."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.fragment import MAX_GLYPH
from learner.batch import make_batch
from learner.intrinsic import IntrinsicScorer
from rewards.config import RewardsConfig
from rewards.rnd import RND, fit_step, rnd_bonus
from rewards.running_stats import RunningMeanStd
from tests.helpers.fragments import make_fragment


def test_scorer_rates_the_observations_the_steps_led_to() -> None:
    """The learner's RND bonus of step t is the novelty of row t + 1, normalised by the
    statistics of this batch's errors; then the predictor takes one step on those rows."""
    cfg = RewardsConfig()
    cfg.rnd.coef, cfg.rnd.embedding_dim = 0.5, 16
    scorer = IntrinsicScorer(cfg, crop_size=9, seed=3)
    batch = make_batch([make_fragment(T=5, E=3, seed=0, crop_size=9)])
    reference = RND(crop_size=9, embedding_dim=16, seed=3)
    glyphs = torch.from_numpy(batch.rows.glyph_crop.numpy()[1:].reshape(15, 9, 9))
    blstats = torch.from_numpy(batch.rows.blstats.numpy()[1:].reshape(15, 27))
    expected, _ = rnd_bonus(reference, RunningMeanStd(), glyphs, blstats)

    novelty = scorer(batch).novelty

    assert novelty is not None and novelty.shape == (5, 3)
    np.testing.assert_allclose(novelty.numpy().reshape(-1), expected, rtol=1e-5)
    assert scorer.rnd_stats.count == 15
    assert scorer.rnd is not None
    moved = [not torch.equal(a, b) for a, b in
             zip(scorer.rnd.predictor.parameters(), reference.predictor.parameters(), strict=True)]
    assert any(moved)


def test_fit_step_applies_the_gradients_its_reducer_leaves() -> None:
    """The reducer runs between backward and step: what it leaves is what Adam applies
    (zeroed gradients move nothing), and it is handed the predictor's parameters only."""
    rnd = RND(crop_size=9, embedding_dim=8, seed=0)
    before = [p.detach().clone() for p in rnd.predictor.parameters()]
    seen: list[int] = []

    def zero(params: list[torch.nn.Parameter]) -> None:
        seen.append(len(params))
        assert all(p.grad is not None for p in params)
        for p in params:
            p.grad.zero_()

    opt = torch.optim.Adam(rnd.predictor.parameters(), lr=1e-2)
    glyphs = torch.zeros(4, 9, 9, dtype=torch.int16)
    fit_step(rnd, opt, glyphs, torch.ones(4, 27), reduce_gradients=zero)
    assert seen == [len(before)]
    assert all(torch.equal(p, b) for p, b in zip(rnd.predictor.parameters(), before, strict=True))


def test_bonus_falls_on_a_seen_observation_and_stays_high_on_a_novel_one() -> None:
    rng = np.random.default_rng(0)

    def observation(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        glyphs = torch.from_numpy(rng.integers(0, MAX_GLYPH + 1, (n, 9, 9)).astype(np.int16))
        return glyphs, torch.from_numpy(rng.uniform(0, 100, (n, 27)).astype(np.float32))

    seen, novel = observation(1), observation(1)
    others = observation(64)  # a batch to give the running std a meaningful start
    rnd = RND(crop_size=9, embedding_dim=64, seed=0)
    opt = torch.optim.Adam(rnd.predictor.parameters(), lr=1e-3)
    _, stats = rnd_bonus(rnd, RunningMeanStd(), *others)
    with torch.no_grad():
        seen_before, novel_before = rnd(*seen).item(), rnd(*novel).item()

    losses = [fit_step(rnd, opt, *seen) for _ in range(100)]

    with torch.no_grad():
        seen_after, novel_after = rnd(*seen).item(), rnd(*novel).item()
    assert losses[-1] < 0.01 * losses[0]
    assert seen_after < 0.01 * seen_before
    assert novel_after > 0.2 * novel_before  # some generalisation, but it stays novel
    both = (torch.cat([seen[0], novel[0]]), torch.cat([seen[1], novel[1]]))
    bonus, stats_after = rnd_bonus(rnd, stats, *both)
    assert bonus[1] > 20 * bonus[0]
    assert stats_after.count == stats.count + 2
    assert bonus == pytest.approx(
        np.array([seen_after, novel_after]) / np.sqrt(stats_after.var), rel=1e-4
    )
    assert all(p.grad is None for p in rnd.target.parameters())
