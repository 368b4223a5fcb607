"""The one state contract (``actors.checkpointable``): every checkpointed or published component
answers ``state()`` / ``load_state(state)``, and a fresh component (another seed, another
config) that loads a state gives exactly the outputs of the one that wrote it.

States travel through ``torch.save`` / ``torch.load`` as a checkpoint does, so nothing is
shared with the writer (a live ``state_dict`` holds the very tensors training moves).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from actors.checkpointable import Checkpointable, check_checkpointable
from cluster.components import InProcess, connect_components
from cluster.config import OniConfig, load_config
from cluster.scheduler import Limits, Scheduler
from learner.appo import UPDATE_SECONDS, Learner
from learner.intrinsic import IntrinsicScorer
from learner.learner_core import LearnerCore
from learner.learner_group import LearnerGroup
from rewards.config import RewardModelConfig
from rewards.models import RewardModel, make_reward_model, reward_model_from_state
from rewards.models.encoder import CharCNN, encode_bytes, make_net, to_batch
from rewards.running_stats import RunningMeanStd
from tests.helpers.captions import captions, is_helpful
from tests.helpers.fragments import make_fragment

A = 23
CORRIDOR = Path(__file__).resolve().parents[1] / "configs" / "corridor.yaml"
KINDS = ("retrieval", "classification", "ranking", "count")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _saved(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _assert_equal(a: Any, b: Any, path: str = "") -> None:
    """Nested states equal to the bit (arrays and tensors included)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (np.ndarray, torch.Tensor)):
        assert np.array_equal(np.asarray(a), np.asarray(b)), path
    else:
        assert a == b, path


@pytest.mark.parametrize(
    "cls", [Scheduler, Learner, LearnerCore, LearnerGroup, IntrinsicScorer, CharCNN, RewardModel]
)
def test_every_stateful_component_answers_the_contract(cls: type) -> None:
    assert issubclass(cls, Checkpointable)


def _fitted(kind: str) -> RewardModel:
    caps = captions(120, seed=4)
    labels = pa.table({"caption": caps, "label": [is_helpful(c) for c in caps]})
    rng = random.Random(5)
    pairs = [rng.sample(caps, 2) for _ in range(120)]
    preferred = [-1 if is_helpful(a) == is_helpful(b) else int(is_helpful(b)) for a, b in pairs]
    preferences = pa.table({
        "first": [a for a, _ in pairs], "second": [b for _, b in pairs],
        "preferred": pa.array(preferred, pa.int8()),
    })
    model = make_reward_model(
        RewardModelConfig(kind=kind, train_steps=30, holdout_fraction=0.2), label_threshold=0.6
    )
    assert model is not None
    for _ in range(2):  # the version counts fits
        model.fit(labels=labels, preferences=preferences)
    return model


@pytest.mark.parametrize("kind", KINDS)
def test_a_reward_model_loaded_into_a_fresh_one_scores_alike(kind: str) -> None:
    model = _fitted(kind)
    probe = [*captions(300, seed=77), "", "never seen"]
    expected = model.score(probe)
    # Another config (the classification threshold), another threshold and another seed
    # where the kind has one: load_state must overwrite them all.
    other = RewardModelConfig(kind=kind, threshold=0.9, ranking_quantile=0.1)
    seeded = {"seed": 7} if kind in ("classification", "ranking") else {}
    fresh = type(model)(other, label_threshold=0.1, **seeded)
    fresh.load_state(_saved(model.state()))
    assert fresh.version == model.version == 2 and fresh.label_threshold == 0.6
    assert np.array_equal(fresh.score(probe), expected)
    _assert_equal(fresh.state(), model.state())
    # The factory picks the class from the state, then loads it.
    rebuilt = reward_model_from_state(_saved(model.state()))
    assert type(rebuilt) is type(model) and np.array_equal(rebuilt.score(probe), expected)
    with pytest.raises(ValueError, match="loaded into"):
        (make_reward_model(RewardModelConfig(kind="count"))
         if kind != "count" else make_reward_model(RewardModelConfig(kind="retrieval"))
         ).load_state(model.state())


def test_a_state_written_before_label_threshold_existed_still_loads() -> None:
    """The keys of an early checkpoint's published model: hard labels, so threshold 0.5."""
    old = {"kind": "retrieval", "version": 3, "helpful": ["You kill the newt!"],
           "config": {"kind": "retrieval"}}
    model = reward_model_from_state(old)
    assert model.version == 3 and model.label_threshold == 0.5
    assert model.score(["You kill the newt!", "It's a wall."]).tolist() == [1.0, 0.0]


def test_the_char_cnn_loaded_into_another_seed_gives_the_same_outputs() -> None:
    net, fresh = make_net(2, seed=0), make_net(2, seed=1)
    tokens, mask = to_batch(encode_bytes(captions(40, seed=8)))
    assert not torch.equal(net(tokens, mask), fresh(tokens, mask))
    fresh.load_state(_saved(net.state()))
    assert torch.equal(fresh(tokens, mask), net(tokens, mask))


def test_running_stats_are_a_value_rebuilt_from_their_state() -> None:
    stats = RunningMeanStd().update(np.array([1.0, 2.0, 4.0]))
    assert RunningMeanStd(**_saved(stats.state())) == stats


def test_a_learner_core_loaded_from_a_state_trains_on_identically() -> None:
    """The learner, its Adam moments, its RNG, and the intrinsic scorer (the published reward
    model and RND's networks, optimiser and statistics): the next update from a loaded state
    gives the same metrics and weights as the next update of the component that wrote it."""
    cfg = OniConfig()
    cfg.rewards.rnd.coef, cfg.rewards.rnd.embedding_dim = 0.5, 16
    cfg.rewards.model.kind = "classification"
    core = LearnerCore(cfg, num_actions=A)
    model = _fitted("classification")
    core.scorer.set_model(model.version, model.state())
    core.update([make_fragment(T=4, E=2, seed=1, crop_size=cfg.env.crop_size)])
    state = _saved(core.state())
    nxt = [make_fragment(T=4, E=2, seed=2, crop_size=cfg.env.crop_size)]
    expected = core.update(nxt)

    other = OniConfig()
    other.rewards.rnd.coef, other.rewards.rnd.embedding_dim = 0.5, 16
    other.run.seed = 9
    fresh = LearnerCore(other, num_actions=A)
    fresh.load_state(state)  # the torch RNG too: both updates start from the same one
    assert fresh.policy_version == 1 and fresh.scorer.version == model.version
    got = fresh.update(nxt)
    del got[UPDATE_SECONDS], expected[UPDATE_SECONDS]  # wall time, the one inexact metric
    assert got == expected
    _assert_equal(fresh.get_weights(), core.get_weights())
    _assert_equal(fresh.state(), core.state())


# ---- the contract checked where the run wires its components --------------------------------
class _Stateless:
    """A learner that forgot the contract: the fault a real component cannot be made to show."""

    def state(self) -> dict[str, Any]:
        return {}


class _LoadsNothing(_Stateless):
    def load_state(self) -> None:  # the state argument missing
        pass


def test_the_check_names_the_role_the_class_and_what_is_missing() -> None:
    with pytest.raises(TypeError, match=r"the learner \(_Stateless\) .*: no load_state\(\)"):
        check_checkpointable(_Stateless(), role="learner")
    with pytest.raises(TypeError, match=r"load_state\(\) cannot be called with 1 argument$"):
        check_checkpointable(_LoadsNothing(), role="learner")
    check_checkpointable(Scheduler(Limits.from_config(OniConfig())), role="scheduler")  # real


def test_wiring_refuses_a_learner_outside_the_contract(tmp_path: Any) -> None:
    class Forgetful(InProcess):
        def learners(self, cfg: OniConfig, *, num_actions: int) -> Any:
            return _Stateless()

    cfg = load_config(CORRIDOR, ["rollout.num_actors=1"])
    with pytest.raises(TypeError, match=r"the learner \(_Stateless\) does not answer"):
        connect_components(cfg, Forgetful(), labels_dir=str(tmp_path))
    # The runtime's own learner passes the same check.
    makers = InProcess()
    parts = connect_components(cfg, makers, labels_dir=str(tmp_path))
    assert isinstance(parts.learners, LearnerCore)
    makers.close(parts)
