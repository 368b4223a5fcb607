"""Smoke tier: real kill -9 of a run's actors under the real `oniray train` CLI.

A dead rollout actor is restarted (within rollout.max_restarts, then the run stops with a
checkpoint and exit code 1), a dead annotator is restarted and asks nothing twice, a dead
learner's group is rebuilt from the newest checkpoint (within learner.max_restarts, then the
run stops with a resume hint), with exact accounting, and the resume continues.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.run_dir import RunDir
from tests.helpers.cli import SMALL, finish, oniray
from tests.helpers.run_output import Output, pids

pytestmark = pytest.mark.system

FAST = ["run.random_baseline_episodes=0", "run.report_every_s=1", "run.max_minutes=4",
        "run.total_env_steps=100000000"]


def _invariant_holds(counters: dict) -> bool:
    return counters["env_steps_produced"] == (
        counters["env_steps_trained"] + counters["env_steps_dropped"]
    )


@pytest.mark.slow
def test_rollout_actor_killed_is_restarted_then_the_budget_stops_the_run(tmp_path) -> None:
    out = Output(oniray("train", "configs/corridor.yaml", f"run.out_dir={tmp_path}",
                        "run.name=r", "rollout.max_restarts=1", "rollout.fragments_in_flight=2",
                        *FAST, *SMALL))
    os.kill(pids(out)["rollout-0"], signal.SIGKILL)
    killed = time.monotonic()
    back = out.wait_for(r"rollout actor 0 back after ([\d.]+) s \(pid (\d+)\)")
    print(f"rollout actor restarted in {time.monotonic() - killed:.1f} s (driver: "
          f"{back.group(1)} s from noticing)")
    before = out.updates()
    out.wait_updates(before + 5)  # training goes on with the replacement

    os.kill(int(back.group(2)), signal.SIGKILL)  # the second death exceeds max_restarts=1
    code, text = out.finish(120)
    assert code == 1, text[-3000:]
    assert "rollout.max_restarts are used up" in text
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["failed"] and summary["actor_restarts"] == 1
    # Each death loses the fragments in flight (1 or 2 here), each counted once.
    assert 2 <= summary["fragments_lost"] <= 4, summary
    assert summary["env_steps"] == summary["env_steps_trained"] + summary["env_steps_dropped"]
    state, _ = RunDir(tmp_path / "r").load_latest_checkpoint()
    assert _invariant_holds(state["counters"])
    assert state["counters"]["updates"] == summary["updates"] == state["learner"]["policy_version"]
    rows = pq.read_table(tmp_path / "r" / "metrics.parquet").to_pylist()
    assert rows[-1]["actor_restarts"] == 1 and rows[-1]["fragments_lost"] >= 2


@pytest.mark.slow
def test_annotator_killed_is_restarted_and_asks_nothing_twice(tmp_path: Path) -> None:
    out = Output(oniray("train", "configs/corridor.yaml", f"run.out_dir={tmp_path}",
                        "run.name=a", "rewards.annotator.enabled=true",
                        "rewards.judge.backend=rules", "rewards.judge.rules.positive=[key]",
                        "rewards.model.kind=retrieval", "rewards.intrinsic_coef=0.5",
                        "rewards.model.train_every_s=1", "rewards.annotator.num_cpus=0",
                        *FAST, *SMALL))
    pid = pids(out)["annotator"]
    run = RunDir(tmp_path / "a")

    def trained_version() -> float:
        rows = run.read_metrics() if run.metrics.exists() else []
        return max([r.get("reward_model_version_trained") or -1 for r in rows] or [-1])

    deadline = time.monotonic() + 90
    while trained_version() < 1:  # the learners score with a reward model
        assert time.monotonic() < deadline, "no reward model reached the learners"
        time.sleep(0.5)
    time.sleep(1.5)  # > flush_interval_s: every label so far is on disk
    labelled = len(pq.read_table(run.labels).to_pylist())
    assert labelled >= 2

    os.kill(pid, signal.SIGKILL)
    back = out.wait_for(r"annotator back after ([\d.]+) s \(pid \d+, (\d+) labels reloaded\)")
    print(f"annotator back in {back.group(1)} s")
    assert int(back.group(2)) >= labelled
    out.wait_updates(out.updates() + 10)
    out.proc.send_signal(signal.SIGTERM)
    code, text = out.finish(120)
    assert code == 0, text[-3000:]

    captions = pq.read_table(run.labels).column("caption").to_pylist()
    assert len(captions) == len(set(captions)), "a caption was asked again"
    summary = json.loads(run.summary.read_text())
    assert summary["annotator_restarts"] == 1 and not summary["failed"]
    versions = [r["reward_model_version_trained"] for r in run.read_metrics()]
    # The learners kept their model through the restart: the version never went back.
    assert versions == sorted(versions) and versions[-1] >= 1


@pytest.mark.slow
def test_learner_killed_is_rebuilt_then_the_budget_stops_and_resume_continues(
        tmp_path: Path) -> None:
    out = Output(oniray("train", "configs/corridor.yaml", f"run.out_dir={tmp_path}",
                        "run.name=l", "run.checkpoint_every_updates=5", "learner.max_restarts=1",
                        *FAST, *SMALL))
    pid = pids(out)["learner-0"]
    out.wait_updates(12)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    # Rebuilt from the newest checkpoint (10 updates or more); training goes on past it.
    rebuilt = out.wait_for(r"learner group rebuilt in .* pids \[(\d+)")
    print(f"learner kill to rebuilt group: {time.monotonic() - killed:.1f} s")
    out.wait_updates(out.updates() + 5)
    os.kill(int(rebuilt.group(1)), signal.SIGKILL)  # the second death exceeds max_restarts=1
    code, text = out.finish(120)
    assert code == 1, text[-3000:]
    run = RunDir(tmp_path / "l")
    assert f"Resume with: oniray train --resume {run.root}" in text
    state, path = run.load_latest_checkpoint()
    assert f"the newest checkpoint is {path.name}" in text
    assert _invariant_holds(state["counters"]) and state["counters"]["updates"] >= 10
    # Exact accounting: the updates each dead learner took with it are dropped, not missing.
    summary = json.loads(run.summary.read_text())
    assert summary["env_steps"] == summary["env_steps_trained"] + summary["env_steps_dropped"]
    assert sum(summary["env_steps_dropped_by_reason"].values()) == summary["env_steps_dropped"]
    assert summary["learner_restarts"] == 1 and summary["failed"]
    print("after two learner deaths: " + ", ".join(
        f"{k}={summary[k]}" for k in ("env_steps", "env_steps_trained", "env_steps_dropped",
                                      "env_steps_dropped_by_reason", "updates")))
    assert summary["updates"] == state["counters"]["updates"] == state["learner"]["policy_version"]

    steps = state["counters"]["env_steps_produced"]
    resumed = finish(oniray("train", "--resume", str(run.root),
                            f"run.total_env_steps={steps + 2000}"), 180)
    assert f"resumed at {steps:,} env steps, {state['counters']['updates']} updates" in resumed
    summary = json.loads(run.summary.read_text())
    assert summary["policy_version"] == summary["updates"] > state["counters"]["updates"]
