"""RND: the bonus of a repeatedly trained-on observation falls; a novel one stays high."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.fragment import MAX_GLYPH
from rewards.rnd import RND, fit_step, fragment_observations, rnd_bonus
from rewards.running_stats import RunningMeanStd
from tests.helpers.fragments import make_fragment


def test_fragment_observations_are_the_step_rows() -> None:
    fragment = make_fragment(T=5, E=3, seed=0, crop_size=9)
    glyphs, blstats = fragment_observations(fragment)
    assert glyphs.shape == (15, 9, 9) and glyphs.dtype == torch.int16
    assert blstats.shape == (15, 27) and blstats.dtype == torch.float32
    expected = fragment.column("glyph_crop").to_numpy_ndarray()[:15]
    assert (glyphs.numpy() == expected).all()


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
