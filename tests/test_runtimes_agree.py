"""Both runtimes, one config: `oniray train` (Ray) and `oniray train --local` leave the same run.

They share the wiring (``cluster.components``) and the loop (``cluster.loop``) and differ only
in how commands run, so what a run folder holds must not depend on the runtime: the same files,
the same metrics columns, the same summary keys, and the step accounting (produced == trained
+ dropped) in the summary and the newest checkpoint. Numbers are not compared: Ray's actors
sample concurrently, so its fragments and updates interleave differently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.run_dir import RunDir
from tests.helpers.cli import SMALL, finish, oniray

pytestmark = [pytest.mark.system, pytest.mark.slow]

QUICK = ["run.total_env_steps=2500", "run.random_baseline_episodes=8", "run.report_every_s=1",
         "run.checkpoint_every_updates=4", *SMALL]


def _names(run: RunDir) -> set[str]:
    """The run folder's entries, the TensorBoard file by its prefix (its name has a time)."""
    return {"events.out.tfevents" if p.name.startswith("events.out.tfevents") else p.name
            for p in run.root.iterdir()}


def _accounting(run: RunDir) -> dict:
    """The summary, after checking the accounting in it and in the newest checkpoint."""
    summary = json.loads(run.summary.read_text())
    assert summary["stop_reason"] == "step budget reached" and not summary["failed"], summary
    assert summary["env_steps"] == summary["env_steps_trained"] + summary["env_steps_dropped"]
    assert summary["updates"] == summary["policy_version"] > 0
    state, _ = run.load_latest_checkpoint()
    counters = state["counters"]
    assert counters["env_steps_produced"] == (counters["env_steps_trained"]
                                              + counters["env_steps_dropped"])
    assert counters["updates"] == state["learner"]["policy_version"]
    return summary


def test_ray_and_local_runs_leave_the_same_run_folder(tmp_path: Path) -> None:
    args = ["configs/corridor.yaml", f"run.out_dir={tmp_path}", *QUICK]
    # Side by side: Ray's start-up overlaps the local run.
    on_ray = oniray("train", *args, "run.name=ray")
    local = oniray("train", "--local", *args, "run.name=local")
    finish(local, 120)
    finish(on_ray, 180)
    ray_run, local_run = RunDir(tmp_path / "ray"), RunDir(tmp_path / "local")

    assert _names(ray_run) == _names(local_run)
    assert {"config.yaml", "metrics.parquet", "summary.json", "checkpoints",
            "events.out.tfevents", "curve.png", "report.md"} <= _names(local_run)
    assert pq.read_schema(ray_run.metrics).names == pq.read_schema(local_run.metrics).names
    ray_summary, local_summary = _accounting(ray_run), _accounting(local_run)
    assert ray_summary.keys() == local_summary.keys()
    assert ray_run.config.read_text().replace("name: ray", "name: local") == (
        local_run.config.read_text())
