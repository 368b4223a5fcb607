"""Local-runtime tier: `oniray train --local` trains the corridor in one process, no Ray.

The run goes through the real CLI in a subprocess, which reports afterwards whether any Ray
module was imported and whether it has child processes (a raylet or a worker would be one).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.run_dir import RunDir
from rewards.label_store import LabelStore
from tests.helpers.cli_probe import probe_train

# The in-process loop: no Ray, no CLI subprocess beyond this interpreter's child.
pytestmark = pytest.mark.local

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["run.total_env_steps=3000", "run.random_baseline_episodes=8", "run.report_every_s=1",
         "run.checkpoint_every_updates=4"]

def _local(*args: str, timeout: float = 120) -> tuple[dict, str]:
    return probe_train(*args, timeout=timeout)


def test_local_run_writes_the_complete_run_folder_without_ray(tmp_path: Path) -> None:
    probe, text = _local("configs/corridor.yaml", f"run.out_dir={tmp_path}", "run.name=l", *QUICK)
    assert (probe["code"], probe["children"], probe["ray"]) == (0, [], []), text[-3000:]
    run = RunDir(tmp_path / "l")
    for path in (run.config, run.metrics, run.summary, run.curve, run.root / "report.md"):
        assert path.exists(), path
    assert list(run.root.glob("events.out.tfevents.*"))
    summary = json.loads(run.summary.read_text())
    assert summary["stop_reason"] == "step budget reached" and not summary["failed"]
    assert summary["env_steps"] >= 3000
    assert summary["env_steps"] == summary["env_steps_trained"] + summary["env_steps_dropped"]
    assert summary["updates"] == summary["policy_version"] >= 8
    assert "random_mean_return" in summary  # the baseline was measured
    rows = pq.read_table(run.metrics).to_pylist()
    assert rows and rows[-1]["updates"] >= 4 and rows[-1]["learner_total_loss"] is not None
    state, path = run.load_latest_checkpoint()
    assert state["counters"]["updates"] == state["learner"]["policy_version"] == summary["updates"]


def test_resume_auto_continues_from_the_newest_checkpoint(tmp_path: Path) -> None:
    args = ["configs/corridor.yaml", f"run.out_dir={tmp_path}", "run.name=a", "run.resume=auto"]
    probe, text = _local(*args, *QUICK)
    assert probe["code"] == 0, text[-3000:]
    first = json.loads((tmp_path / "a" / "summary.json").read_text())
    # The same command again, as a Ray Jobs or RayJob retry would run it, with more budget.
    probe, text = _local(*args, *QUICK, "run.total_env_steps=5000")
    assert probe["code"] == 0, text[-3000:]
    assert f"resumed at {first['env_steps']:,} env steps, {first['updates']} updates" in text
    second = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert second["updates"] == second["policy_version"] > first["updates"]
    assert second["env_steps"] == second["env_steps_trained"] + second["env_steps_dropped"]
    assert second["env_steps"] >= 5000


def test_local_run_labels_with_the_annotator_in_process(tmp_path: Path) -> None:
    probe, text = _local("configs/corridor.yaml", f"run.out_dir={tmp_path}", "run.name=j", *QUICK,
                         "rewards.annotator.enabled=true", "rewards.judge.backend=rules",
                         "rewards.model.kind=retrieval", "rewards.intrinsic_coef=0.1",
                         # retrain on every new label: a reward model within the short run
                         "rewards.model.train_every_labels=1",
                         # Ask at once: a short run must not end inside the batch wait.
                         "rewards.annotator.batch_wait_s=0")
    assert (probe["code"], probe["children"], probe["ray"]) == (0, [], []), text[-3000:]
    rows = pq.read_table(tmp_path / "j" / "metrics.parquet").to_pylist()
    assert rows[-1]["labels_total"] > 0  # the corridor's messages, judged by the rules judge
    assert list((tmp_path / "j" / "labels").glob("labels-*.parquet"))  # flushed at the stop
    # The summary names the messages the judged reward went to: the ones the judge called
    # helpful, and none other.
    summary = json.loads((tmp_path / "j" / "summary.json").read_text())
    labels = LabelStore(tmp_path / "j" / "labels")
    rewarded = summary["rewarded_messages"]
    assert rewarded and all(labels.get(row["message"]) is True for row in rewarded), rewarded
    assert all(row["reward"] > 0 and row["steps"] > 0 for row in rewarded)
    assert "messages that earned the judged reward" in text
    assert rewarded[0]["message"] in text
