"""The real `oniray` CLI in a subprocess, as a user runs it (the system tier's runner).

``oniray(*args)`` starts ``python -m cluster.cli ARGS`` from the repository root;
``finish(proc, timeout)`` waits for it, fails the test on a timeout or a non-zero exit, and
returns its output. ``SMALL``: overrides that fit a run on a 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "rollout.num_actors=1",
    "rollout.envs_per_actor=8",
    "ray.num_cpus=2",
    "ray.object_store_mb=128",
]


def oniray(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """``env``: the environment to run in (default: this one)."""
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
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
