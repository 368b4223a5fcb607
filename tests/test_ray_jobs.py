"""Smoke tier: a training run submitted as a Ray job to a real two-node, token-protected cluster.

The cluster is two ``ray start --block`` processes of our own (a head advertising
``learner_node``, a worker advertising ``rollout_node``), each in a new session so that tearing
them down kills exactly what they started: never ``ray stop``, which would also kill the test
session's Ray (tests/conftest.py) and anything else on the machine. The head has its own temp
dir and ports, a token of its own (``RAY_AUTH_TOKEN``, not ~/.ray/auth_token) and a dashboard
bound to 127.0.0.1.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import requests

from tests.helpers.ray_processes import clean_env, free_port

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60


@dataclass
class Cluster:
    address: str  # job server URL
    token: str
    processes: list[subprocess.Popen]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", *args], env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def _wait_for(
    what: str, check: Callable[[], bool], procs: list[subprocess.Popen], logs: list[Path]
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs, strict=True):
            if p.poll() is not None:
                pytest.fail(f"ray start exited with {p.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _teardown(procs: list[subprocess.Popen]) -> None:
    """SIGTERM then SIGKILL our nodes' process groups, and any descendant that left them."""
    family: set[psutil.Process] = set()
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            family |= {psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in reversed(procs):  # the worker node first, then the head
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        _, alive = psutil.wait_procs(list(family), timeout=15 if sig == signal.SIGTERM else 5)
        if not alive:
            break
        if sig == signal.SIGKILL:
            for proc in alive:
                proc.kill()
    _, alive = psutil.wait_procs(list(family), timeout=5)
    assert not alive, f"processes of the test cluster survived teardown: {alive}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    token = secrets.token_hex(32)
    with tempfile.TemporaryDirectory(prefix="oj-", dir="/tmp") as tmp:  # short: socket paths
        tmp_path = Path(tmp)
        env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        port, dash = free_port(), free_port()
        common = ["--num-cpus", "2", "--object-store-memory", str(100 * 1024**2),
                  "--node-ip-address", "127.0.0.1"]
        logs = [tmp_path / "head.log", tmp_path / "worker.log"]
        procs = [_start_node(
            ["--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
             "--dashboard-port", str(dash), "--ray-client-server-port", str(free_port()),
             "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", str(tmp_path),
             "--resources", json.dumps({"learner_node": 1}), *common], env, logs[0])]
        c = Cluster(address=f"http://127.0.0.1:{dash}", token=token, processes=procs)
        try:
            _wait_for("the head's job server", lambda: requests.get(
                f"{c.address}/api/version", headers=c.headers(), timeout=2).ok, procs, logs[:1])
            procs.append(_start_node(
                ["--address", f"127.0.0.1:{port}", "--dashboard-agent-listen-port",
                 str(free_port()), "--resources", json.dumps({"rollout_node": 1}), *common],
                env, logs[1]))
            _wait_for("two nodes", lambda: len(_alive_nodes(c)) == 2, procs, logs)
            yield c
        finally:
            _teardown(procs)


def _alive_nodes(c: Cluster) -> list:
    from ray.util.state import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    client = StateApiClient(address=c.address, headers=c.headers())
    nodes = client.list(StateResource.NODES, options=ListApiOptions(detail=True),
                        raise_on_missing_output=False)
    return [n for n in nodes if n.state == "ALIVE"]


def _oniray(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


def test_submitted_run_succeeds_on_the_nodes_its_config_names(
    cluster: Cluster, tmp_path: Path
) -> None:
    overrides = [
        "rollout.num_actors=2", "rollout.resources={rollout_node: 0.001}",
        "learner.resources={learner_node: 0.001}", "run.total_env_steps=8000",
        f"run.out_dir={tmp_path}", "run.name=job-run", "run.random_baseline_episodes=0",
        "metrics.enabled=false",
    ]
    # No RAY_AUTH_MODE here: `oniray submit` must turn token sending on by itself.
    env = clean_env(RAY_AUTH_TOKEN=cluster.token)
    started = time.monotonic()
    done = _oniray(["submit", "configs/corridor.yaml", *overrides, "--address", cluster.address,
                    "--job-id", "oniray-test-job"], env, timeout=180)
    wall_s = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "job oniray-test-job SUCCEEDED" in done.stdout

    run = tmp_path / "job-run"
    assert (run / "config.yaml").is_file()
    assert pq.read_table(run / "metrics.parquet").num_rows >= 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] >= 8000
    print(f"job wall time {wall_s:.1f} s, train {summary['elapsed_s']} s, "
          f"mean SPS {summary['mean_sps']}")

    status = _oniray(["job", "status", "oniray-test-job", "--address", cluster.address], env, 60)
    assert status.stdout.startswith("oniray-test-job: SUCCEEDED"), status.stdout + status.stderr
    logs = _oniray(["job", "logs", "oniray-test-job", "--address", cluster.address], env, 60)
    assert "summary: stop_reason=step budget reached" in logs.stdout, logs.stderr

    # Each actor ran on a node that advertises the role its config asks for.
    from ray.util.state import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    client = StateApiClient(address=cluster.address, headers=cluster.headers())
    nodes = {n.node_id: n.resources_total for n in client.list(
        StateResource.NODES, options=ListApiOptions(detail=True), raise_on_missing_output=False)}
    actors = client.list(StateResource.ACTORS, options=ListApiOptions(detail=True),
                         raise_on_missing_output=False)
    placed: dict[str, list[set[str]]] = {}
    for actor in actors:
        roles = {r for r in ("rollout_node", "learner_node") if r in nodes[actor.node_id]}
        placed.setdefault(actor.class_name, []).append(roles)
    assert placed["RolloutActor"] == [{"rollout_node"}, {"rollout_node"}], placed
    assert placed["LearnerActor"] == [{"learner_node"}], placed


@pytest.mark.parametrize("token_env", [{}, {"RAY_AUTH_TOKEN": "not-the-token"}],
                         ids=["no-token", "wrong-token"])
def test_submission_without_the_token_is_rejected(
    cluster: Cluster, tmp_path: Path, token_env: dict[str, str]
) -> None:
    # An empty HOME: no ~/.ray/auth_token to fall back on.
    env = clean_env(HOME=str(tmp_path), **token_env)
    done = _oniray(["submit", "configs/corridor.yaml", f"run.out_dir={tmp_path}",
                    "--address", cluster.address, "--job-id", f"rejected-{tmp_path.name}"],
                   env, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"the Ray cluster at {cluster.address} rejected the request" in done.stderr
    assert "RAY_AUTH_TOKEN" in done.stderr
    jobs = requests.get(f"{cluster.address}/api/jobs/", headers=cluster.headers(), timeout=10)
    assert all(not j["submission_id"].startswith("rejected-") for j in jobs.json())
