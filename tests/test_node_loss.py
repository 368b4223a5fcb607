"""System tier: a worker node of a real multi-node Ray cluster dies without warning mid-run.

The cluster is ``ray.cluster_utils.Cluster`` (tests/helpers/node_cluster.py: a head and two
worker nodes on 127.0.0.1, a token of its own, node deaths noticed in about 1.5 s). Custom
resources place the roles: ``rollout_node`` (one slot on the head, the rest on worker A),
``learner_node`` (worker B). A node is removed with ``allow_graceful=False``: its raylet,
object store and every worker on it are SIGKILLed at once, as when a machine or pod dies.

- Worker A (rollout actors) dies: its actors are restarted; while no node offers their
  resource they wait, and the actor on the head keeps training going; a node added back is
  where they land. Fragments whose only copy was in A's object store are dropped
  (``object_lost``), never waited on, never taken for a learner death.
- A fragment lost before the learner fetched it (here: its owner killed, on the test
  session's one-node Ray) makes every rank skip that batch together, and the group trains on.
- Worker B (the learner) dies: the group is rebuilt from the newest checkpoint on the node
  added back, and its lost updates are counted (``learner_lost``).

Each run ends with SIGTERM (a clean stop, ``failed`` false) and exact accounting.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray

from cluster.components import learner_group
from cluster.config import OniConfig
from cluster.run_dir import RunDir
from learner.learner_group import LOST
from tests.helpers.cli import oniray
from tests.helpers.fragments import NETHACK_SCORE_ACTIONS, make_fragment
from tests.helpers.node_cluster import NodeCluster
from tests.helpers.run_output import Output

pytestmark = pytest.mark.cluster

RUN = ["run.random_baseline_episodes=0", "run.report_every_s=1", "run.max_minutes=4",
       "run.total_env_steps=100000000", "run.checkpoint_every_updates=5",
       "rollout.resources={rollout_node: 1}", "learner.resources={learner_node: 1}",
       "rollout.fragments_in_flight=2",
       # 16 envs x 16 steps: a 160 KB fragment, past Ray's 100 KiB inline limit, so it lives in
       # its node's object store (a smaller one is kept by the driver and survives the node)
       "rollout.envs_per_actor=16", "learner.batch_size=512"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NodeCluster]:
    c = NodeCluster(tmp_path, head_resources={"rollout_node": 1})
    try:
        yield c
    finally:
        c.close()


def _train(c: NodeCluster, tmp_path: Path, *args: str) -> Output:
    return Output(oniray("train", "configs/corridor.yaml", f"run.out_dir={tmp_path}",
                         "run.name=n", f"ray.address={c.address}", *RUN, *args, env=c.env))


def _placed(out: Output, key: str) -> dict[str, str]:
    line = out.wait_for(rf"{key}: (.*)").group(1)
    return dict(item.split("=") for item in line.split())


def _logged_at(out: Output, pattern: str) -> float:
    """When the driver logged the first line matching ``pattern`` (its log's own clock)."""
    stamp = out.wait_for(rf"^(\S+ \S+) \w+ oniray: .*{pattern}").group(1)
    return time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S")) + float(
        "0." + stamp.split(",")[1])


def _finish(out: Output, run: RunDir) -> dict:
    out.proc.send_signal(signal.SIGTERM)
    code, text = out.finish(120)
    assert code == 0, text[-3000:]
    summary = json.loads(run.summary.read_text())
    assert not summary["failed"] and summary["stop_reason"] == "SIGTERM", summary
    assert summary["env_steps"] == summary["env_steps_trained"] + summary["env_steps_dropped"]
    assert sum(summary["env_steps_dropped_by_reason"].values()) == summary["env_steps_dropped"]
    state, _ = run.load_latest_checkpoint()
    counters = state["counters"]
    assert counters["env_steps_produced"] == (counters["env_steps_trained"]
                                              + counters["env_steps_dropped"])
    assert summary["updates"] == summary["policy_version"]
    return summary


@pytest.mark.slow
def test_rollout_node_lost_actors_come_back_on_a_new_node(cluster: NodeCluster,
                                                          tmp_path: Path) -> None:
    node_a = cluster.add({"rollout_node": 2})
    cluster.add({"learner_node": 1})
    out = _train(cluster, tmp_path, "rollout.num_actors=3")
    pids, nodes = _placed(out, "processes"), _placed(out, "nodes")
    on_a = sorted(int(name.split("-")[1]) for name, node in nodes.items()
                  if name.startswith("rollout") and node == node_a)
    assert len(on_a) == 2, nodes  # the head's one rollout slot holds the third
    out.wait_updates(10)

    # A learner that stalls for a moment leaves fragments queued for it; with the head's
    # actor stalled too, those that arrive meanwhile are all A's.
    paused = [int(pids["learner-0"])] + [int(pids[name]) for name in pids
                                          if name.startswith("rollout")
                                          and int(name.split("-")[1]) not in on_a]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(1.5)
    removed = time.time()
    cluster.remove(node_a)
    for pid in paused:
        os.kill(pid, signal.SIGCONT)
    for i in on_a:
        out.wait_for(rf"rollout actor {i} died \(Actor\w+Error\)")
    # Training goes on with the head's actor while A's wait for a node with rollout_node.
    out.wait_updates(out.updates() + 5)

    node_a2 = cluster.add({"rollout_node": 2})
    for i in on_a:
        back = out.wait_for(rf"rollout actor {i} back after ([\d.]+) s \(pid \d+\) on node (\w+)")
        assert back.group(2) == node_a2
    out.wait_updates(out.updates() + 5)
    summary = _finish(out, RunDir(tmp_path / "n"))
    for what, pattern in (("the driver saw an actor of A dead", r"rollout actor \d died"),
                          ("a learner gave up a lost fragment", r"could not be fetched")):
        print(f"{what} {_logged_at(out, pattern) - removed:.1f} s after A was killed")
    print("after losing a rollout node: " + ", ".join(
        f"{k}={summary[k]}" for k in ("env_steps", "env_steps_trained", "env_steps_dropped",
                                      "env_steps_dropped_by_reason", "fragments_lost")))
    assert summary["actor_restarts"] == 2 and summary["learner_restarts"] == 0
    # Each dead actor loses the calls it had in flight (1 or 2: the first tells its death).
    assert 2 <= summary["fragments_lost"] <= 4, summary
    # A's fragments queued at its death could not be fetched: dropped, the learner lives on.
    assert summary["env_steps_dropped_by_reason"].get("object_lost", 0) > 0, summary


@pytest.mark.slow
def test_learner_node_lost_group_rebuilt_on_a_new_node(cluster: NodeCluster,
                                                       tmp_path: Path) -> None:
    cluster.add({"rollout_node": 1})
    node_b = cluster.add({"learner_node": 1})
    out = _train(cluster, tmp_path, "rollout.num_actors=2")
    assert _placed(out, "nodes")["learner-0"] == node_b
    out.wait_updates(12)  # two checkpoints written (every 5 updates)

    cluster.remove(node_b)
    node_b2 = cluster.add({"learner_node": 1})
    rebuilt = out.wait_for(r"learner group rebuilt in ([\d.]+) s from (ckpt-\d+)\S* .* on nodes "
                           r"\['(\w+)'\]")
    assert rebuilt.group(3) == node_b2
    print(f"learner group rebuilt in {rebuilt.group(1)} s from {rebuilt.group(2)}")
    out.wait_updates(out.updates() + 5)
    summary = _finish(out, RunDir(tmp_path / "n"))
    print("after losing the learner's node: " + ", ".join(
        f"{k}={summary[k]}" for k in ("env_steps", "env_steps_trained", "env_steps_dropped",
                                      "env_steps_dropped_by_reason", "updates")))
    assert summary["learner_restarts"] == 1 and summary["actor_restarts"] == 0
    # What the dead learner trained since ckpt-10 or ckpt-15, and the batches queued for it.
    assert summary["env_steps_dropped_by_reason"].get("learner_lost", 0) > 0, summary
    assert "object_lost" not in summary["env_steps_dropped_by_reason"]


@ray.remote(num_cpus=0)
class _Owner:
    """Owns what it puts: when it dies, so do those objects (``OwnerDiedError``), as a
    fragment's only copy does with its node."""

    def put(self, fragment: object) -> list[ray.ObjectRef]:
        return [ray.put(fragment)]  # nested: the caller gets the ref, not the value

    def ping(self) -> None:
        pass


def _wait_until_lost(ref: ray.ObjectRef, timeout: float = 30) -> None:
    """Until Ray reports ``ref`` lost: ``ray.kill`` takes effect soon, not at once, and the
    object store frees a dead owner's objects soon after its death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(ref, timeout=5)
        except ray.exceptions.ObjectLostError:
            return
        time.sleep(0.2)
    pytest.fail("the dead owner's object never went")


def test_a_lost_fragment_skips_the_batch_on_every_rank_and_the_group_trains_on(
        ray_session: None) -> None:
    cfg = OniConfig()
    cfg.learner.num_learners = 2  # rank 1's share holds the lost fragment, rank 0's not
    group = learner_group(cfg, num_actions=NETHACK_SCORE_ACTIONS)
    owner = _Owner.remote()
    try:
        frags = [make_fragment(T=6, E=2, seed=i, fragment_id=i) for i in range(4)]
        good = [ray.put(f) for f in frags[:3]]
        [lost] = ray.get(owner.put.remote(frags[3]))
        ray.kill(owner)
        _wait_until_lost(lost)
        started = time.monotonic()
        # Rank 0 fetches its two fragments, rank 1 fails on its second: neither trains, and
        # rank 0 does not wait in the gradient all-reduce for a rank that gave up.
        assert ray.get(group.update([*good, lost]), timeout=60) == {LOST: 1.0}
        assert time.monotonic() - started < 30
        group.raise_peer_errors()  # rank 1 answered LOST too: no error, no dead learner
        metrics = ray.get(group.update([*good, good[0]]), timeout=60)
        assert metrics["policy_version"] == 1  # the skipped batch was never trained on
        rank0, rank1 = ray.get([a.get_weights.remote() for a in group.actors])
        assert all(np.array_equal(rank0[k], rank1[k]) for k in rank0)
    finally:
        group.shutdown()
