"""Two learners on CPU (gloo) on one local Ray: they train one policy, in lockstep."""

from __future__ import annotations

import numpy as np
import ray

from cluster.config import OniConfig
from learner.learner_group import WEIGHTS, LearnerGroup
from tests.fragments import make_fragment

A = 23
T, E = 6, 2


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_two_learners_stay_bit_identical(ray_session: None, tmp_path) -> None:
    cfg = OniConfig()
    cfg.learner.num_learners = 2
    cfg.learner.lr = 1e-3
    group = LearnerGroup(cfg, num_actions=A)
    try:
        start = ray.get(group.actors[0].get_weights.remote())
        _assert_same(start, ray.get(group.actors[1].get_weights.remote()))

        metrics = {}
        for update in range(3):
            refs = [ray.put(make_fragment(T=T, E=E, seed=10 * update + i, fragment_id=i))
                    for i in range(4)]  # each rank trains on its own two fragments
            metrics = ray.get(group.update(refs))
        rank0, rank1 = ray.get([a.get_weights.remote() for a in group.actors])
        _assert_same(rank0, rank1)
        assert any(not np.array_equal(rank0[k], start[k]) for k in start)

        assert metrics["policy_version"] == 3
        assert metrics["env_steps"] == 2 * T * E  # rank 0's share
        published = metrics[WEIGHTS]
        assert published.version == 3
        _assert_same(ray.get(published.ref), rank0)
        weights = group.weights()
        assert weights.version == 3
        _assert_same(ray.get(weights.ref), rank0)

        group.save(tmp_path / "learner.pt")
        ray.get(group.update([ray.put(make_fragment(T=T, E=E, seed=99 + i)) for i in range(2)]))
        group.restore(tmp_path / "learner.pt")
        for weights in ray.get([a.get_weights.remote() for a in group.actors]):
            _assert_same(weights, rank0)
        assert group.weights().version == 3

        state = group.get_state()  # the driver's checkpoint path: state in its own file
        ray.get(group.update([ray.put(make_fragment(T=T, E=E, seed=77 + i)) for i in range(2)]))
        group.load_state(state)
        for weights in ray.get([a.get_weights.remote() for a in group.actors]):
            _assert_same(weights, rank0)
    finally:
        group.shutdown()
