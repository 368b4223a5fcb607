"""W&B tracking (``run.wandb``, cluster/tracking.py): offline with no network and no API key.

The runs go through the real CLI in a subprocess (``oniray train --local`` on the corridor),
with W&B's server pointed at a closed loopback port, no key anywhere (no WANDB_API_KEY, an
empty NETRC) and W&B's own folders in the test's tmp folder; the mode comes from the config
only. The offline run is read back with wandb's own protobuf (tests/helpers/wandb_records.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cluster.config import ConfigError, describe, load_config
from cluster.run_dir import RunDir
from cluster.tensorboard import read_scalars
from tests.helpers.cli_probe import probe_train
from tests.helpers.wandb_records import offline_runs

ROOT = Path(__file__).resolve().parents[1]
CORRIDOR = "configs/corridor.yaml"
# report_every_s=0.25: several rows in a 3,000-step run, for an axis to be monotone on.
QUICK = ["run.total_env_steps=3000", "run.random_baseline_episodes=8", "run.report_every_s=0.25",
         "run.checkpoint_every_updates=4"]
OFFLINE = ["run.wandb.mode=offline", "run.wandb.group=sweep-1", "run.wandb.tags=[corridor,test]"]
W_AND_B_ONLY = {"_step", "_runtime", "_timestamp", "env_steps"}  # the rest: TensorBoard's tags



def _offline_env(tmp: Path) -> dict[str, str]:
    """No W&B setting from the outside, no key, no reachable server; its files under tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return env | {
        "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # the discard port: nothing listens there
        "NETRC": str(tmp / "no-netrc"),  # where `wandb login` would have kept a key: none
        "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp / "wandb-data"),
    }


def _train(tmp: Path, *args: str) -> tuple[dict, str]:
    return probe_train(*args, env=_offline_env(tmp), timeout=180)


@pytest.mark.local
def test_offline_run_without_network_or_key_and_its_resume_keep_one_id(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "w")
    probe, text = _train(tmp_path, CORRIDOR, f"run.out_dir={tmp_path}", "run.name=w", *QUICK,
                         *OFFLINE)
    # wandb ran here, and its service process is gone when the run is.
    assert (probe["code"], probe["children"], probe["wandb"]) == (0, [], True), text[-3000:]
    (first,) = offline_runs(run.root)  # one W&B run for one training run
    run_id = (run.root / "wandb_run_id").read_text().strip()
    assert f"upload it with: wandb sync {first.folder}" in text
    assert (first.run_id, first.project, first.group, first.name, first.tags) == (
        run_id, "oniray", "sweep-1", "w", ["corridor", "test"])
    # The resolved config, as saved in the run folder.
    assert first.config["run"]["total_env_steps"] == 3000
    assert first.config["env"]["id"] == "oniray/Corridor-v0"
    assert first.config["run"]["wandb"]["mode"] == "offline"

    rows = run.read_metrics()
    assert len(rows) >= 2, text[-3000:]
    steps = [h["env_steps"] for h in first.history]
    assert steps == [r["env_steps"] for r in rows]
    # Monotone (two rows may share a count: a report with no new fragment in between).
    assert steps == sorted(steps) and steps[-1] > steps[0], steps
    assert [h["_step"] for h in first.history] == list(range(len(rows)))  # the row's index
    # The same metrics as TensorBoard, with the rows' values.
    logged = {key for h in first.history for key in h} - W_AND_B_ONLY
    assert logged == set(read_scalars(run.root))
    for column in ("mean_return", "success_rate", "sps", "updates", "learner_policy_loss"):
        expected = [(r["env_steps"], r[column]) for r in rows if r.get(column) is not None]
        assert expected, column
        # Exact: JSON carries a float64 whole (TensorBoard keeps a float32).
        assert [(h["env_steps"], h[column]) for h in first.history if column in h] == expected
    # The end: the summary's numbers, the report and curve as files, a clean exit.
    summary = json.loads(run.summary.read_text())
    assert first.summary["env_steps"] == summary["env_steps"]
    assert first.summary["beats_random"] == summary["beats_random"]
    assert {"report.md", "report.png", "curve.png"} <= set(first.files)
    assert (first.folder / "files" / "report.md").read_text() == (
        run.root / "report.md").read_text()
    assert first.exit_code == 0

    # Resumed with more budget: the same W&B run (its id from the run folder), continued.
    # Offline, wandb writes each session to a folder of its own with that one id; `wandb
    # sync` uploads the sessions of one run in the order they started, and the steps join up.
    probe, text = _train(tmp_path, "--resume", str(run.root), "run.total_env_steps=5000")
    assert (probe["code"], probe["children"], probe["wandb"]) == (0, [], True), text[-3000:]
    assert (run.root / "wandb_run_id").read_text().strip() == run_id
    sessions = offline_runs(run.root)
    assert [s.run_id for s in sessions] == [run_id, run_id]
    assert sessions[0].history == first.history  # the first session's folder is untouched
    rows = run.read_metrics()
    history = [h for s in sessions for h in s.history]
    assert [h["_step"] for h in history] == list(range(len(rows)))
    steps = [h["env_steps"] for h in history]
    assert steps == [r["env_steps"] for r in rows] and steps[-1] >= 5000
    assert steps == sorted(steps), steps
    assert sessions[1].exit_code == 0


@pytest.mark.local
def test_disabled_by_default_and_then_wandb_is_never_imported(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "d")
    probe, text = _train(tmp_path, CORRIDOR, f"run.out_dir={tmp_path}", "run.name=d",
                         "run.total_env_steps=1000", "run.random_baseline_episodes=0")
    assert (probe["code"], probe["children"], probe["wandb"]) == (0, [], False), text[-3000:]
    assert (run.root / "report.md").exists()  # the run went to its end
    assert not (run.root / "wandb").exists() and not (run.root / "wandb_run_id").exists()


@pytest.mark.unit
def test_earlier_rows_are_logged_once_and_a_failed_run_is_marked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker called directly, as the run loop calls it: tracking turned on for a run
    folder that has rows (a resumed run that had it off), then a session an exception ends."""
    from cluster import tracking

    for key, value in _offline_env(tmp_path).items():
        if key.startswith(("WANDB_", "NETRC")):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = load_config(CORRIDOR, ["run.wandb.mode=offline", f"run.wandb.dir={tmp_path / 'wb'}"])
    run_dir = RunDir.create(str(tmp_path), "f")
    earlier = [{"env_steps": 128, "mean_return": None, "sps": 900.0, "failed": False},
               {"env_steps": 256, "mean_return": 0.5, "sps": 1000.0, "failed": False}]
    for rows in (earlier, [*earlier, {"env_steps": 384, "mean_return": 0.25}]):
        tracker = tracking.start(cfg, run_dir, rows=rows)
        assert tracker is not None
        tracker.log({"env_steps": 512, "mean_return": 0.75, "sps": 1100.0}, index=len(rows))
        tracker.finish(failed=True)
        tracker.finish(summary={"env_steps": 1})  # a second call: nothing
    # run.wandb.dir holds W&B's folder; both sessions are the one W&B run.
    first, second = offline_runs(tmp_path / "wb")
    assert first.run_id == second.run_id == (run_dir.root / "wandb_run_id").read_text().strip()
    assert first.exit_code == second.exit_code == 1
    assert first.summary["env_steps"] == 512  # the last row's, not the ignored 1

    def logged(run: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in h.items() if k not in ("_runtime", "_timestamp")}
                for h in run.history]

    # The rows the folder had, first (None and booleans are no scalars, as in TensorBoard);
    # the second session's W&B run already has them: only its own row.
    assert logged(first) == [{"_step": 0, "env_steps": 128, "sps": 900.0},
                             {"_step": 1, "env_steps": 256, "mean_return": 0.5, "sps": 1000.0},
                             {"_step": 2, "env_steps": 512, "mean_return": 0.75, "sps": 1100.0}]
    assert logged(second) == [
        {"_step": 3, "env_steps": 512, "mean_return": 0.75, "sps": 1100.0}]


@pytest.mark.unit
def test_wandb_settings_are_validated_and_listed() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CORRIDOR, ["run.wandb.mode=cloud", "run.wandb.tags=solo"])
    assert len(info.value.problems) == 2
    assert "'run.wandb.mode' = 'cloud' is not valid (expected one of 'disabled', 'offline', " \
        "'online')" in info.value.problems[0]
    assert "'run.wandb.tags' = 'solo' is not valid" in info.value.problems[1]
    with pytest.raises(ConfigError) as info:
        load_config(CORRIDOR, ["run.wandb.project=team/oniray", f"run.wandb.tags=[ok,{'x' * 65}]"])
    assert info.value.problems == [
        "command line: 'run.wandb.project' = 'team/oniray' must be 1 to 128 characters, none "
        "of / \\ # ? % :",
        f"command line: 'run.wandb.tags' has '{'x' * 65}': a W&B tag is 1 to 64 characters",
    ]
    assert load_config(CORRIDOR).run.wandb.mode == "disabled"
    listed = "\n".join(describe())
    for key in ("mode", "project", "entity", "group", "tags", "dir"):
        assert f"run.wandb.{key}" in listed, key
