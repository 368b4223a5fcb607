"""ONI's reward models: known-answer losses and normaliser, learning, state round trips."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from rewards.config import RewardModelConfig
from rewards.models import (
    bradley_terry_loss,
    make_reward_model,
    reward_model_from_state,
    soft_label_loss,
)
from rewards.models.base import holdout_mask, label_columns, preference_targets
from rewards.models.classification import ClassificationRewardModel
from rewards.running_stats import RunningMeanStd
from rewards.scoring import score_messages
from tests.captions import captions, is_helpful


def _labels(caps: list[str]) -> pa.Table:
    return pa.table({"caption": caps, "label": [is_helpful(c) for c in caps]})


def _preferences(caps: list[str], n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    first, second, preferred = [], [], []
    for _ in range(n):
        a, b = rng.sample(caps, 2)
        ha, hb = is_helpful(a), is_helpful(b)
        first.append(a)
        second.append(b)
        preferred.append(-1 if ha == hb else (0 if ha else 1))
    return pa.table({"first": first, "second": second, "preferred": pa.array(preferred, pa.int8())})


def test_bradley_terry_loss_known_values_and_gradient() -> None:
    s1 = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    s2 = torch.tensor([0.0, 1.0, 1.0])
    loss = bradley_terry_loss(s1, s2, torch.tensor([1.0, 0.0, 0.5]))
    # first wins by 2: log(1 + e^-2); second wins by 1: log(1 + e^-1); tie: log 2
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2)) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.377779, abs=1e-6)
    loss.backward()
    sigmoid = 1 / (1 + math.exp(-2))
    assert s1.grad is not None
    assert s1.grad[0].item() == pytest.approx(-(1 - sigmoid) / 3, abs=1e-6)
    assert s1.grad[2].item() == pytest.approx(0.0, abs=1e-7)  # a tie of equal scores: at rest


def test_bradley_terry_loss_with_a_probability_target() -> None:
    s1 = torch.tensor([1.0], requires_grad=True)
    loss = bradley_terry_loss(s1, torch.tensor([0.0]), torch.tensor([0.8]))
    # d = 1: 0.8 log(1 + e^-1) + 0.2 log(1 + e^1) = log(1 + e^-1) + 0.2
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)) + 0.2, abs=1e-6)
    assert loss.item() == pytest.approx(0.513262, abs=1e-6)
    loss.backward()
    assert s1.grad is not None  # d loss / d s1 = sigmoid(d) - t
    assert s1.grad[0].item() == pytest.approx(1 / (1 + math.exp(-1)) - 0.8, abs=1e-6)


def test_soft_label_loss_known_values_and_gradient() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]], requires_grad=True)
    loss = soft_label_loss(logits, torch.tensor([1.0, 0.25]))
    # q = P(helpful) = 1/2 and 3/4: (-log 1/2 - (1/4 log 3/4 + 3/4 log 1/4)) / 2
    expected = (math.log(2) - (0.25 * math.log(0.75) + 0.75 * math.log(0.25))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.902394, abs=1e-6)
    loss.backward()
    assert logits.grad is not None  # d loss / d helpful logit = (q - t) / N
    assert logits.grad[:, 1].tolist() == pytest.approx([(0.5 - 1.0) / 2, (0.75 - 0.25) / 2])
    # A hard target is the usual cross-entropy.
    hard = soft_label_loss(logits.detach(), torch.tensor([1.0, 0.0]))
    assert hard.item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits.detach(), torch.tensor([1, 0])).item()
    )


def test_targets_take_the_probability_where_there_is_one() -> None:
    labels = pa.table({
        "caption": ["a", "b", "c", "d"],
        "label": [True, False, True, False],
        "prob": pa.array([0.7, None, 0.55, 0.3], pa.float64()),
    })
    captions_, helpful, target = label_columns(labels, threshold=0.6)
    assert captions_ == ["a", "b", "c", "d"]
    # c was labelled helpful at the judge's threshold then (0.5), but not at 0.6 now.
    assert helpful.tolist() == [True, False, False, False]
    assert target.dtype == np.float32
    assert target.tolist() == pytest.approx([0.7, 0.0, 0.55, 0.3])
    # A table without the column (a store written before it existed) is hard labels.
    _, helpful, target = label_columns(labels.drop_columns("prob"), threshold=0.6)
    assert helpful.tolist() == [True, False, True, False]
    assert target.tolist() == [1.0, 0.0, 1.0, 0.0]

    prefs = pa.table({
        "first": list("abcd"), "second": list("efgh"),
        "preferred": pa.array([0, 1, -1, 0], pa.int8()),
        "prob_first": pa.array([None, None, None, 0.6], pa.float64()),
    })
    assert preference_targets(prefs).tolist() == pytest.approx([1.0, 0.0, 0.5, 0.6])
    assert preference_targets(prefs.drop_columns("prob_first")).tolist() == [1.0, 0.0, 0.5, 1.0]


def test_running_mean_std_known_values_and_batch_equals_sequential() -> None:
    stats = RunningMeanStd().update(np.array([1.0, 2.0, 3.0]))
    assert (stats.mean, stats.var, stats.count) == pytest.approx((2.0, 2 / 3, 3))
    stats = stats.update(np.array([4.0, 5.0]))
    assert (stats.mean, stats.var, stats.count) == pytest.approx((3.0, 2.0, 5))
    assert stats.normalise(np.array([3.0, 5.0])) == pytest.approx([0.0, 2 / math.sqrt(2)])

    values = np.random.default_rng(0).normal(4.0, 3.0, 101)
    one_by_one = RunningMeanStd()
    for v in values:
        one_by_one = one_by_one.update(np.array([v]))
    assert (one_by_one.mean, one_by_one.var) == pytest.approx((values.mean(), values.var()))
    assert RunningMeanStd().update(np.array([])) == RunningMeanStd()


def test_holdout_split_is_stable_and_about_the_fraction() -> None:
    caps = [f"caption {i}" for i in range(2000)]
    mask = holdout_mask(caps, 0.2)
    assert 0.15 < mask.mean() < 0.25
    assert (holdout_mask(list(reversed(caps)), 0.2) == mask[::-1]).all()


def test_retrieval_is_the_label_table() -> None:
    caps = captions(200, seed=0)
    model = make_reward_model(RewardModelConfig(kind="retrieval"))
    assert model is not None
    model.fit(labels=_labels(caps))
    scores = model.score([*caps, "never labelled", ""])
    assert scores.dtype == np.float32
    assert (scores[:-2] == [float(is_helpful(c)) for c in caps]).all()
    assert scores[-2:].tolist() == [0.0, 0.0]
    assert model.version == 1


def test_retrieval_thresholds_probabilities_at_the_judge_threshold() -> None:
    labels = pa.table({
        "caption": ["sure", "unsure", "hard yes", "hard no"],
        "label": [True, True, True, False],
        "prob": pa.array([0.9, 0.6, None, None], pa.float64()),
    })
    model = make_reward_model(RewardModelConfig(kind="retrieval"), label_threshold=0.7)
    assert model is not None
    assert model.fit(labels=labels)["helpful"] == 2
    assert model.score(["sure", "unsure", "hard yes", "hard no"]).tolist() == [1, 0, 1, 0]
    restored = reward_model_from_state(model.state())
    assert restored.label_threshold == 0.7
    assert restored.score(["sure", "unsure"]).tolist() == [1, 0]


def test_classification_trains_on_soft_targets() -> None:
    # The same kind of caption, three confidences: the model's P(helpful) must order them as
    # the judge's probabilities do, and sit near them (hard labels would push all to 1 or 0).
    caps = [f"{word} {i}" for word in ("key", "door", "wall") for i in range(20)]
    prob = {"key": 0.9, "door": 0.6, "wall": 0.1}
    labels = pa.table({
        "caption": caps,
        "label": [prob[c.split()[0]] > 0.5 for c in caps],
        "prob": [prob[c.split()[0]] for c in caps],
    })
    cfg = RewardModelConfig(kind="classification", holdout_fraction=0.0, train_steps=150)
    model = make_reward_model(cfg)
    assert isinstance(model, ClassificationRewardModel)
    model.fit(labels=labels)
    p = model.probabilities(["key 99", "door 99", "wall 99"])
    assert p[0] > p[1] > p[2]
    assert p.tolist() == pytest.approx([0.9, 0.6, 0.1], abs=0.1)


def test_classification_learns_captions_and_round_trips() -> None:
    caps = captions(800, seed=1)
    cfg = RewardModelConfig(kind="classification", holdout_fraction=0.2, train_steps=200)
    model = make_reward_model(cfg)
    assert model is not None
    start = time.perf_counter()
    metrics = model.fit(labels=_labels(caps))
    assert time.perf_counter() - start < 30
    assert metrics["holdout"] > 50 and metrics["accuracy"] > 0.95
    fresh = captions(200, seed=99)  # mostly unseen strings of the same kinds
    scores = model.score(fresh)
    assert np.mean((scores > 0) == np.array([is_helpful(c) for c in fresh])) > 0.95
    assert set(np.unique(scores)) <= {0.0, 1.0}
    assert model.score([""])[0] == 0.0

    restored = reward_model_from_state(model.state())
    assert restored.version == model.version == 1
    assert (restored.score(fresh) == scores).all()


def test_ranking_learns_preferences_and_round_trips() -> None:
    caps = captions(400, seed=2)
    cfg = RewardModelConfig(kind="ranking", holdout_fraction=0.2, train_steps=200)
    model = make_reward_model(cfg)
    assert model is not None
    metrics = model.fit(labels=_labels(caps), preferences=_preferences(caps, 600, seed=3))
    assert metrics["holdout"] > 50 and metrics["accuracy"] > 0.9

    fresh = captions(200, seed=98)
    scores = model.score(fresh)
    helpful = np.array([is_helpful(c) for c in fresh])
    assert (scores[helpful] > 0).mean() > 0.9 and (scores[~helpful] == 0).mean() > 0.9
    # The reward is the normalised score itself where it clears the quantile threshold (and 0).
    z = model.stats.normalise(model.raw_scores(fresh))
    assert scores == pytest.approx(np.where(z > model.threshold, np.maximum(z, 0.0), 0.0))
    assert scores[helpful] == pytest.approx(z[helpful])

    restored = reward_model_from_state(model.state())
    assert (restored.score(fresh) == scores).all()


def test_score_messages_scores_each_distinct_message_once() -> None:
    class CountingModel:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def score(self, captions: list[str]) -> np.ndarray:
            self.seen += captions
            return np.array([len(c) for c in captions], np.float32)

    messages = pa.chunked_array([["ab", "", "abc"], ["ab", None, "abc", "ab"]])
    model = CountingModel()
    out = score_messages(model, messages)  # type: ignore[arg-type]
    assert out.dtype == np.float32
    assert out.tolist() == [2, 0, 3, 2, 0, 3, 2]
    assert sorted(model.seen) == ["", "ab", "abc"]


def test_count_model_rewards_every_message_by_its_count_alone() -> None:
    """kind=count: every non-empty caption scores 1 with no labels, so ONI's combination
    leaves c_int * N^-beta: 0.4 for a first sighting, 0.4 / 2**3 = 0.05 for a second."""
    from learner.intrinsic import IntrinsicScorer
    from rewards.combine import combine_rewards
    from rewards.config import RewardsConfig
    from rewards.models import needs_labels
    from tests.fragments import make_fragment

    model = make_reward_model(RewardModelConfig(kind="count"))
    assert not needs_labels("count") and needs_labels("retrieval") and not needs_labels("none")
    assert model.score(["", "  ", "The door opens.", "g - a key."]).tolist() == [0, 0, 1, 1]
    model.fit(labels=_labels(["The door opens."]))  # labels change nothing
    again = reward_model_from_state(model.state())
    assert again.kind == "count" and again.score(["x", ""]).tolist() == [1, 0]
    # On the learner it exists before any annotator publishes anything.
    scorer = IntrinsicScorer(RewardsConfig(model=RewardModelConfig(kind="count")), crop_size=9)
    fragment = make_fragment(T=8, E=2, seed=0)
    r_int = scorer([fragment]).reward_model
    messages = np.array(fragment.column("message").to_pylist()[2:]).reshape(8, 2)
    assert r_int is not None and (r_int.numpy() == (messages != "")).all()
    reward = combine_rewards(
        extrinsic=torch.zeros(3), intrinsic=torch.ones(3), msg_count=torch.tensor([1, 2, 3]),
        extrinsic_coef=10.0, extrinsic_clip=None, intrinsic_coef=0.4, count_exponent=3.0,
    )
    assert torch.allclose(reward, torch.tensor([0.4, 0.05, 0.4 / 27]))
