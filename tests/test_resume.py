"""Resuming: the learner's state round-trips exactly, and a corrupt checkpoint is passed over.

Component tier (one local Ray): a learner restored from its state trains bit for bit like the
one that wrote it, reward model and RND included. Smoke tier: the real CLI resumes from the
previous checkpoint when the newest one is corrupt, and says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray

from actors.versioned import VersionedRef
from cluster.components import learner_group
from cluster.config import OniConfig
from cluster.run_dir import RunDir
from learner.learner_group import INTRINSIC_STATE
from rewards.config import RewardModelConfig
from rewards.models import make_reward_model
from tests.helpers.cli import SMALL, finish, oniray
from tests.helpers.fragments import MESSAGES, make_fragment

pytestmark = pytest.mark.system

A, T, E = 23, 6, 2


def _reward_model_state() -> dict:
    model = make_reward_model(RewardModelConfig(kind="retrieval"))
    captions = [m for m in MESSAGES if m]
    labels = pa.table({
        "caption": captions,
        "label": [c.startswith("You kill") or "staircase" in c for c in captions],
        "judge": ["test"] * len(captions),
        "time": [0.0] * len(captions),
    })
    model.fit(labels=labels)
    return model.state()


def test_restored_learner_trains_exactly_like_the_original(ray_session: None) -> None:
    cfg = OniConfig()
    cfg.rewards.rnd.coef = 0.5
    cfg.rewards.intrinsic_coef = 1.0
    group = learner_group(cfg, num_actions=A)
    try:
        model = VersionedRef(7, ray.put(_reward_model_state()))
        first = [ray.put(make_fragment(T=T, E=E, seed=i)) for i in range(2)]
        ray.get(group.update(first, reward_model=model))
        state = group.state()
        assert state[INTRINSIC_STATE]["version"] == 7 and "rnd" in state[INTRINSIC_STATE]

        # No reward model is passed from here on: a restored learner must still hold it.
        nxt = [ray.put(make_fragment(T=T, E=E, seed=10 + i)) for i in range(2)]
        original = ray.get(group.update(nxt))
        weights = ray.get(group.actors[0].get_weights.remote())
        rnd_after = group.state()[INTRINSIC_STATE]["rnd"]

        group.load_state(state)
        replayed = ray.get(group.update(nxt))
        for key in ("total_loss", "intrinsic_mean", "rnd_loss", "reward_model_version"):
            assert replayed[key] == original[key], key
        assert original["intrinsic_mean"] != 0  # the restored model did score the batch
        for name, value in ray.get(group.actors[0].get_weights.remote()).items():
            assert np.array_equal(value, weights[name]), name
        for name, value in group.state()[INTRINSIC_STATE]["rnd"].items():
            assert np.array_equal(value.numpy(), rnd_after[name].numpy()), name
    finally:
        group.shutdown()


@pytest.mark.slow
def test_corrupt_newest_checkpoint_resumes_from_the_previous(tmp_path: Path) -> None:
    finish(oniray("train", "configs/corridor.yaml", f"run.out_dir={tmp_path}", "run.name=c",
                  "run.total_env_steps=5000", "run.random_baseline_episodes=0",
                  "run.checkpoint_every_updates=4", *SMALL), 180)
    run = RunDir(tmp_path / "c")
    paths = run._checkpoint_paths()
    assert len(paths) == 3, paths
    newest, previous = paths[-1], paths[-2]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the middle: a torn or rotten write
    newest.write_bytes(bytes(data))
    expected, path = run.load_latest_checkpoint()
    assert path == previous

    started = time.monotonic()
    out = finish(oniray("train", "--resume", str(run.root), "run.total_env_steps=7000"), 180)
    assert f"checkpoint {newest} fails its checksum (corrupt): using an older one" in out
    assert f"from {previous.name}" in out
    steps = expected["counters"]["env_steps_produced"]
    assert f"resumed at {steps:,} env steps, {expected['counters']['updates']} updates" in out
    summary = json.loads(run.summary.read_text())
    assert summary["env_steps"] >= 7000 and summary["policy_version"] == summary["updates"]
    assert summary["env_steps"] == summary["env_steps_trained"] + summary["env_steps_dropped"]
    assert time.monotonic() - started < 120
