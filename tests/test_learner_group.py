"""Two learners on CPU (gloo) on one local Ray: they train one policy and one RND, in lockstep."""

from __future__ import annotations

import numpy as np
import ray
import torch

from cluster.components import learner_group
from cluster.config import OniConfig
from learner.appo import Learner
from learner.batch import make_batch
from learner.intrinsic import IntrinsicScorer
from learner.learner_group import INTRINSIC_STATE, WEIGHTS
from tests.helpers.fragments import make_fragment

A = 23
T, E = 6, 2


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def _rnd_arrays(state: dict) -> dict[str, np.ndarray]:
    """RND's networks, Adam moments and running statistics, as arrays by name."""
    scorer = state[INTRINSIC_STATE]
    out = {f"net.{k}": v.numpy() for k, v in scorer["rnd"].items()}
    for i, moments in scorer["rnd_optimizer"]["state"].items():
        out.update({f"adam.{i}.{k}": np.asarray(v) for k, v in moments.items()})
    out.update({f"stats.{k}": np.asarray(v) for k, v in scorer["rnd_stats"].items()})
    return out


def test_two_learners_stay_bit_identical(ray_session: None) -> None:
    cfg = OniConfig()
    cfg.learner.precision = "float32"  # compared with a float32 reference at rtol 1e-4
    cfg.learner.num_learners = 2
    cfg.learner.lr = 1e-3
    cfg.rewards.rnd.coef = 0.5
    cfg.learner.normalize_advantages = True  # over the union of the ranks' batches
    group = learner_group(cfg, num_actions=A)
    # One RND and one policy trained on both ranks' batches together, in one process: what
    # the ranks' must equal (the mean of equal shards' gradients is the gradient of their
    # union, and the advantages are normalized with the union's moments).
    alone = IntrinsicScorer(cfg.rewards, crop_size=cfg.env.crop_size, seed=cfg.run.seed)
    policy_alone = Learner(cfg, num_actions=A)
    try:
        start = ray.get(group.actors[0].get_weights.remote())
        _assert_same(start, ray.get(group.actors[1].get_weights.remote()))
        rnd_start = _rnd_arrays(group.state())

        metrics = {}
        for update in range(3):
            fragments = [make_fragment(T=T, E=E, seed=10 * update + i, fragment_id=i)
                         for i in range(4)]  # each rank trains on its own two fragments
            metrics = ray.get(group.update([ray.put(f) for f in fragments]))
            union = make_batch(fragments)
            terms = alone(union)
            policy_alone.update(union, judged=terms.judged, novelty=terms.novelty)
        rank0, rank1 = ray.get([a.get_weights.remote() for a in group.actors])
        _assert_same(rank0, rank1)
        assert any(not np.array_equal(rank0[k], start[k]) for k in start)
        for name, value in policy_alone.get_weights().items():
            np.testing.assert_allclose(rank0[name], value, rtol=1e-4, atol=1e-6, err_msg=name)

        rnd0, rnd1 = (_rnd_arrays(s) for s in ray.get([a.state.remote() for a in group.actors]))
        _assert_same(rnd0, rnd1)  # one RND, whichever rank the checkpoint reads
        assert rnd0["stats.count"] == 3 * 4 * T * E  # every rank's observations, merged
        assert any(not np.array_equal(rnd0[k], rnd_start[k]) for k in rnd_start
                   if k.startswith("net.predictor"))
        assert alone.rnd is not None
        for name, value in alone.rnd.state_dict().items():
            torch.testing.assert_close(torch.from_numpy(rnd0[f"net.{name}"]), value,
                                       rtol=1e-4, atol=1e-6)

        assert metrics["policy_version"] == 3
        assert metrics["env_steps"] == 2 * T * E  # rank 0's share
        published = metrics[WEIGHTS]
        assert published.version == 3
        _assert_same(ray.get(published.ref), rank0)
        weights = group.weights()
        assert weights.version == 3
        _assert_same(ray.get(weights.ref), rank0)

        state = group.state()  # the driver's checkpoint path: state in its own file
        ray.get(group.update([ray.put(make_fragment(T=T, E=E, seed=77 + i)) for i in range(2)]))
        group.load_state(state)
        for weights in ray.get([a.get_weights.remote() for a in group.actors]):
            _assert_same(weights, rank0)
        for restored in ray.get([a.state.remote() for a in group.actors]):
            _assert_same(_rnd_arrays(restored), rnd0)
        assert group.weights().version == 3
    finally:
        group.shutdown()
