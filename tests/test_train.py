"""Smoke tier: the real `oniray train` CLI on the small environment, end to end.

Each test runs the command in a subprocess with its own local Ray, as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from cluster.run_dir import RunDir
from cluster.tensorboard import read_scalars

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "rollout.num_actors=1",
    "rollout.envs_per_actor=8",
    "ray.num_cpus=2",
    "ray.object_store_mb=128",
]


def oniray(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs,
    )


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"oniray did not finish in {timeout}s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_training_improves_return_and_writes_the_run_folder(tmp_path: Path) -> None:
    out = finish(oniray("train", "configs/corridor.yaml", f"run.out_dir={tmp_path}",
                        "run.name=improves", "run.total_env_steps=40000", *SMALL), 300)
    run = tmp_path / "improves"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["beats_random"], summary
    assert summary["final_mean_return"] > 0.8 > summary["random_mean_return"]
    # Episodes reach the exit (NLE's goal status, not just a score), unlike a random agent's.
    assert summary["final_success_rate"] > 0.8 > summary["random_success_rate"]
    assert summary["env_steps"] == summary["env_steps_trained"] + summary["env_steps_dropped"]
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    assert len(rows) >= 2 and rows[-1]["env_steps"] >= 40000
    assert rows[-1]["updates"] > rows[0]["updates"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["env"]["id"] == "oniray/Corridor-v0" and saved["run"]["name"] == "improves"
    assert (run / "curve.png").stat().st_size > 10_000
    assert "Episodes reaching the goal" in (run / "report.md").read_text()
    assert RunDir(run).load_latest_checkpoint() is not None
    assert "random agent: mean return" in out and "summary:" in out
    # TensorBoard: every numeric column of every row, at its env_steps, as a float32 scalar.
    scalars = read_scalars(run)
    for column in ("mean_return", "success_rate", "sps", "updates", "learner_policy_loss"):
        expected = [(r["env_steps"], np.float32(r[column])) for r in rows
                    if r.get(column) is not None]
        assert expected and scalars[column] == expected, column


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_continues(tmp_path: Path) -> None:
    proc = oniray("train", "configs/corridor.yaml", f"run.out_dir={tmp_path}", "run.name=r",
                  "run.total_env_steps=10000000", "run.max_minutes=10",
                  "run.random_baseline_episodes=0", "run.report_every_s=1", *SMALL)
    run = RunDir(tmp_path / "r")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait until it trains, then preempt it
        rows = run.read_metrics() if run.metrics.exists() else []
        if rows and rows[-1]["updates"] >= 5:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("training never reached 5 updates")
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out = finish(proc, 120)
    assert time.monotonic() - sent < 60, "SIGTERM took too long to checkpoint"
    assert "stopping: SIGTERM" in out
    state, _ = run.load_latest_checkpoint()
    steps_before = state["counters"]["env_steps_produced"]
    updates_before = state["counters"]["updates"]
    version_before = state["learner"]["policy_version"]
    assert steps_before > 0 and updates_before >= 5 and version_before == updates_before

    out = finish(oniray("train", "--resume", str(run.root),
                        f"run.total_env_steps={steps_before + 3000}"), 240)
    assert f"resumed at {steps_before:,} env steps" in out
    summary = json.loads(run.summary.read_text())
    assert summary["env_steps"] >= steps_before + 3000
    assert summary["updates"] > updates_before
    assert summary["policy_version"] == summary["updates"]  # optimiser state went on, too
    state_after, _ = run.load_latest_checkpoint()
    assert state_after["counters"]["elapsed_s"] > state["counters"]["elapsed_s"]


@pytest.mark.slow
def test_fragments_older_than_the_lag_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    # Three sample calls in flight per actor and a lag bound of 0: fragments acted by an
    # older policy than the one they would train are dropped, never trained on.
    finish(oniray("train", "configs/corridor.yaml", f"run.out_dir={tmp_path}", "run.name=lag",
                  "run.total_env_steps=12000", "run.random_baseline_episodes=0",
                  "run.report_every_s=1", "rollout.max_policy_lag=0",
                  "rollout.fragments_in_flight=3", *SMALL), 240)
    summary = json.loads((tmp_path / "lag" / "summary.json").read_text())
    rows = pq.read_table(tmp_path / "lag" / "metrics.parquet").to_pylist()
    assert summary["env_steps_dropped"] > 0
    assert summary["env_steps"] == summary["env_steps_trained"] + summary["env_steps_dropped"]
    assert all(r["policy_lag"] == 0 for r in rows)  # every trained fragment was on-policy
    assert rows[-1]["fragments_dropped"] * 16 * 8 <= summary["env_steps_dropped"]
