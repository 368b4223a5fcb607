"""Security smoke tier: token auth on, loopback-only listeners, and no secret anywhere on disk.

One short corridor run of the real CLI with the openai judge against a local server and an API
key planted in the environment. While it runs: every listening socket of its process tree.
After it: the key is searched, as bytes, in its output, every file of its run folder (Parquet
and checkpoints included) and its Ray session's logs.

Ray's own listeners (GCS, raylet, object manager, the core workers' gRPC servers, including
the one inside the driver process, which listens on ``::``) bind the node's IP or every
address by Ray's design: other nodes must reach them, and Ray's token authentication guards
them. They are reported, not failed on. oniray's own listener, the metrics endpoint, must be
on 127.0.0.1 unless ``metrics.host`` says otherwise.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.judge_server import JudgeServer

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
WILDCARDS = ("0.0.0.0", "::")
# Ray's processes; their sockets follow Ray's rules (see the module docstring).
RAY_PROCESS = re.compile(r"gcs_server|raylet|ray::|ray/dashboard|ray/_private|default_worker|"
                         r"runtime_env|log_monitor|monitor\.py")


def _listeners(root: psutil.Process) -> list[tuple[int, str, str, int]]:
    """(pid, command line, address, port) of every listening inet socket in the tree."""
    out = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            cmdline = " ".join(proc.cmdline())
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if not cmdline:
            # A process on its way out: Linux frees its memory (the command line goes empty)
            # before it closes its sockets, so it cannot be told apart. A listener that
            # lives is sampled every 0.5 s with its command line, and is judged then.
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                out.append((proc.pid, cmdline, conn.laddr.ip, conn.laddr.port))
    return out


def _session_log_dir(root: psutil.Process) -> Path | None:
    """The logs folder of the Ray session this run started (not /tmp/ray/session_latest: other
    Rays on the machine move that link)."""
    for proc in root.children(recursive=True):
        try:
            found = re.search(r"--log_dir=(\S+)", " ".join(proc.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if found:
            return Path(found.group(1))
    return None


@pytest.mark.slow
def test_run_is_token_authenticated_loopback_only_and_never_writes_the_key(
    tmp_path: Path,
) -> None:
    key = f"sk-test-{secrets.token_hex(16)}"
    server = JudgeServer(mode="ok")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"PYTHONUNBUFFERED": "1", "ONIRAY_JUDGE_API_KEY": key}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "train", "configs/corridor.yaml",
         f"run.out_dir={tmp_path}", "run.name=sec", "run.total_env_steps=8000",
         "run.random_baseline_episodes=0", "run.checkpoint_every_updates=5",
         "rollout.num_actors=1", "ray.num_cpus=3", "ray.object_store_mb=128",
         "rewards.annotator.enabled=true", "rewards.model.kind=retrieval",
         "rewards.model.train_every_s=1", "rewards.intrinsic_coef=0.4",
         "rewards.judge.backend=openai", f"rewards.judge.openai.base_url={server.url}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    root = psutil.Process(proc.pid)
    listeners: list[tuple[int, str, str, int]] = []
    log_dir = None
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            # Sampled until the end: actors come up over the first seconds.
            listeners = sorted(set(listeners) | set(_listeners(root)))
            log_dir = log_dir or _session_log_dir(root)
            time.sleep(0.5)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.close()
    output = stdout + stderr
    assert proc.returncode == 0, output.decode(errors="replace")[-3000:]

    # The judge did get the key, so finding it nowhere below means something.
    sent = hashlib.sha256(f"Bearer {key}".encode()).hexdigest()
    assert server.stats()["auth_sha256"] == [sent]

    # Token authentication: Ray 2.60 turns it on for a local Ray and keeps the token in
    # ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH); the run says so when it starts Ray.
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray/auth_token"))
    assert token_file.is_file() and token_file.stat().st_size >= 32
    assert b"Token authentication is enabled for this Ray cluster" in output

    # Listeners: the metrics endpoint is oniray's and on loopback; no oniray-owned socket
    # listens on a wildcard address.
    metrics_port = int(re.search(rb"metrics: http://127\.0\.0\.1:(\d+)/metrics", output)[1])
    on_metrics_port = [(ip, port) for _, _, ip, port in listeners if port == metrics_port]
    assert on_metrics_port == [("127.0.0.1", metrics_port)], listeners
    # The driver process hosts Ray's core-worker gRPC server too; its core log names the port.
    assert log_dir is not None and log_dir.is_dir()
    ray_ports = {
        int(port) for log in log_dir.glob("python-core-driver-*.log")
        for port in re.findall(r"server started, listening on port (\d+)", log.read_text())
    }
    oniray_wildcards = [
        item for item in listeners if item[2] in WILDCARDS
        and not RAY_PROCESS.search(item[1]) and item[3] not in ray_ports
    ]
    assert not oniray_wildcards, (oniray_wildcards, ray_ports)

    # No secret in the output, in any file of the run folder, or in the Ray session's logs.
    needle = key.encode()
    assert needle not in output
    files = [p for p in (tmp_path / "sec").rglob("*") if p.is_file()]
    assert any(p.suffix == ".pt" for p in files) and any(p.suffix == ".parquet" for p in files)
    assert [p for p in files if needle in p.read_bytes()] == []
    logs = [p for p in log_dir.rglob("*") if p.is_file()]
    assert logs
    assert [p for p in logs if needle in p.read_bytes()] == []
    ray_wildcards = sorted({(c.split()[0].rsplit("/", 1)[-1], ip) for _, c, ip, _ in listeners
                            if ip in WILDCARDS})
    print(f"listeners: {len(listeners)}; Ray's on a wildcard address: {ray_wildcards}")
