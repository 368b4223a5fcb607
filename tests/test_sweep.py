"""System tier: the arms bench's grid as Ray Tune trials (bench/sweep.py, bench/sweep_trial.py)
on a real token-protected local Ray: 2 arms x 2 seeds of the corridor.

One sweep, driven the way a user drives it: the same command twice. In the first, one trial's
process dies after its first checkpoint (the injected fault, ``ONIRAY_SWEEP_FAULT``) and Tune
retries it; then the sweep's driver is killed with SIGKILL. The second finishes the grid. Then:
each (arm, seed) finished exactly once, each trial's actors were in its own placement group
(Ray's state API), none is left, the retried run resumed from a checkpoint with exact
accounting, and the sequential bench (bench/learning.py without --tune) keeps every run and
writes the very same report.

The Ray is a ``ray start --head --block`` of our own (its own temp dir, ports and token, on
127.0.0.1), so that the state API can be asked after the sweep's driver is gone; torn down by
process group, never by ``ray stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from tests.helpers.ray_processes import clean_env, free_port

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARMS, SEEDS, STEPS = ("extrinsic", "count"), 2, 6_000
FAULTY = "count/seed=0"


@dataclass
class Head:
    gcs: str  # host:port, what the sweep joins
    dashboard: str  # the state API's URL
    token: str

    def state(self, resource: str) -> list:
        from ray.util.state import StateApiClient
        from ray.util.state.common import ListApiOptions, StateResource

        client = StateApiClient(address=self.dashboard,
                                headers={"Authorization": f"Bearer {self.token}"})
        return client.list(StateResource(resource), options=ListApiOptions(detail=True,
                           limit=10_000), raise_on_missing_output=False)


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    token = secrets.token_hex(32)
    with tempfile.TemporaryDirectory(prefix="os-", dir="/tmp") as tmp:  # short: socket paths
        port, dash = free_port(), free_port()
        log = Path(tmp) / "head.log"
        # 8 logical CPUs: room for two trials of 3 bundles' CPUs (driver, rollout, learner).
        args = ["--head", "--block", "--port", str(port), "--num-cpus", "8",
                "--object-store-memory", str(150 * 1024**2), "--node-ip-address", "127.0.0.1",
                "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                "--ray-client-server-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", tmp]
        with log.open("w") as out:
            proc = subprocess.Popen([str(BIN / "ray"), "start", *args], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token))
        h = Head(gcs=f"127.0.0.1:{port}", dashboard=f"http://127.0.0.1:{dash}", token=token)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the head did not come up"
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{h.dashboard}/api/version", timeout=2, headers={
                            "Authorization": f"Bearer {token}"}).ok:
                        break
                time.sleep(0.5)
            yield h
        finally:
            _teardown(proc)


def _teardown(proc: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL the head's process group, and any descendant that left it."""
    with contextlib.suppress(psutil.NoSuchProcess):
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        _, alive = psutil.wait_procs(family, timeout=15 if sig == signal.SIGTERM else 5)
        if not alive:
            return
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _bench_command(tmp: Path) -> list[str]:
    """The sequential bench's command for the grid."""
    return [sys.executable, "bench/learning.py", "--env", "oniray/Corridor-v0",
            "--config", "configs/corridor.yaml", "--steps", str(STEPS), "--arms", *ARMS,
            "--seeds", str(SEEDS), "--random-episodes", "16", "--out", str(tmp / "learning"),
            # one rollout actor a run: fewer processes to start on a small machine
            "--set", "rollout.num_actors=1"]


def _sweep_command(tmp: Path, head: Head) -> list[str]:
    """The same grid as Tune trials."""
    return [*_bench_command(tmp), "--tune", "--max-concurrent", "2", "--max-failures", "2",
            "--storage", str(tmp / "tune"), "--ray-address", head.gcs]


def _env(head: Head) -> dict[str, str]:
    return clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token,
                      ONIRAY_SWEEP_FAULT=FAULTY)


def _sessions(run: Path) -> list[dict]:
    path = run / "sweep-sessions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sweep_survives_a_trial_crash_and_a_killed_driver(head: Head, tmp_path: Path) -> None:
    from bench import learning_task as lt

    runs = tmp_path / "tune" / "runs"
    faulty = None
    started = time.monotonic()
    log1 = tmp_path / "first.log"
    with log1.open("w") as out:
        first = subprocess.Popen(_sweep_command(tmp_path, head), cwd=ROOT, env=_env(head),
                                 stdout=out, stderr=subprocess.STDOUT)
    # Kill the driver once the faulty trial has crashed and Tune's retry has started (so a
    # trial is under way from its checkpoint), while other runs are still to finish.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        faulty = next(iter(runs.glob("count-seed0-*")), None) if runs.exists() else None
        if faulty is not None and len([s for s in _sessions(faulty)
                                       if s["event"] == "start"]) >= 2:
            break
        time.sleep(0.2)
    assert first.poll() is None, f"the sweep ended before the kill:\n{log1.read_text()[-4000:]}"
    assert faulty is not None and (faulty / ".sweep-fault-injected").exists()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = time.monotonic()
    stored = lt.load_results(tmp_path / "learning.json")["runs"]
    assert len(stored) < len(ARMS) * SEEDS, "the kill came after every run had finished"

    second = subprocess.run(_sweep_command(tmp_path, head), cwd=ROOT, env=_env(head),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, (log1.read_text()[-3000:], second.stdout[-5000:],
                                    second.stderr[-5000:])
    assert "resuming the sweep" in second.stdout
    print(f"first command {killed_at - started:.0f} s to the kill, second "
          f"{time.monotonic() - killed_at:.0f} s")

    # Every (arm, seed) stored, each finished once (one "finished" session per run folder).
    results = lt.load_results(tmp_path / "learning.json")
    assert sorted((r["arm"], r["seed"]) for r in results["runs"].values()) == sorted(
        (a, s) for a in ARMS for s in range(SEEDS))
    folders = sorted(runs.iterdir())
    assert len(folders) == len(ARMS) * SEEDS
    for folder in folders:
        assert [s["event"] for s in _sessions(folder)].count("finished") == 1, folder.name

    # The retried run: a second session from its checkpoint, and exact accounting.
    starts = [s for s in _sessions(faulty) if s["event"] == "start"]
    assert starts[0]["resumed_from"] is None and starts[1]["resumed_from"] is not None
    key = lt.run_key("count", 0, lt.settings_hash(results["runs"][
        next(k for k in results["runs"] if k.startswith(FAULTY))]["settings"]))
    summary = results["runs"][key]["summary"]
    assert summary["stop_reason"] == lt.STEP_BUDGET and summary["env_steps"] >= STEPS
    assert summary["env_steps"] == summary["env_steps_trained"] + summary["env_steps_dropped"]
    assert sum(summary["env_steps_dropped_by_reason"].values()) == summary["env_steps_dropped"]

    # Each session's actors are in that session's placement group, the right number of each.
    actors = [a for a in head.state("actors")
              if a.class_name in ("RolloutActor", "LearnerActor", "AnnotatorActor")]
    groups = {s["placement_group"] for f in folders for s in _sessions(f) if s["event"] == "start"}
    assert None not in groups
    assert {a.placement_group_id for a in actors} <= groups, "an actor outside its trial's group"
    run_actors = ["LearnerActor", "RolloutActor"]
    for folder in folders:
        events = _sessions(folder)
        finisher = [s for s in events if s["event"] == "start"][-1]
        for session in (s for s in events if s["event"] == "start"):
            mine = sorted(a.class_name for a in actors
                          if a.placement_group_id == session["placement_group"])
            # A session the kill cut short may not have started all of them.
            assert not set(mine) - set(run_actors) and len(mine) <= len(run_actors), folder.name
            if session is finisher:
                assert mine == run_actors, folder.name
    # No actor is left once the sweep has ended, nor any placement group.
    deadline = time.monotonic() + 30
    while any(a.state != "DEAD" for a in head.state("actors")) and time.monotonic() < deadline:
        time.sleep(1)
    assert [a.class_name for a in head.state("actors") if a.state != "DEAD"] == []
    assert [g.placement_group_id for g in head.state("placement_groups")
            if g.state != "REMOVED"] == []

    # The sequential bench on the same command keeps every run and writes the same report.
    table = (tmp_path / "learning.md").read_text()
    done = subprocess.run(_bench_command(tmp_path), cwd=ROOT, env=clean_env(), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("kept: ") == len(ARMS) * SEEDS
    assert (tmp_path / "learning.md").read_text() == table
    assert "| extrinsic | 2 |" in table and "| count | 2 |" in table


def test_oniray_submit_runs_a_sweep_as_a_ray_job(head: Head, tmp_path: Path) -> None:
    """``oniray submit --sweep``: the bench's grid as a job (one trial here), its results where
    --out says, through the token-protected job server."""
    from bench import learning_task as lt

    bench_args = ["--env", "oniray/Corridor-v0", "--config", "configs/corridor.yaml",
                  "--steps", "3000", "--arms", "extrinsic", "--seeds", "1",
                  "--random-episodes", "0", "--set", "rollout.num_actors=1",
                  "--out", str(tmp_path / "learning"), "--storage", str(tmp_path / "tune")]
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "submit", "--address", head.dashboard,
         "--job-id", "oniray-sweep-test", "--sweep", *bench_args],
        cwd=ROOT, env=clean_env(RAY_AUTH_TOKEN=head.token), capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "job oniray-sweep-test SUCCEEDED" in done.stdout
    assert "bench/learning.py --env oniray/Corridor-v0" in done.stdout  # the entrypoint
    runs = lt.load_results(tmp_path / "learning.json")["runs"]
    assert [(r["arm"], r["seed"]) for r in runs.values()] == [("extrinsic", 0)]
    assert "| extrinsic | 1 |" in (tmp_path / "learning.md").read_text()
