"""What tests that start Ray nodes of their own (``ray start``, a Ray Job, a Tune sweep) need:
free loopback ports, and an environment free of the test session's Ray."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any RAY_* variable (the session's Ray sets RAY_ADDRESS), with
    this venv first on PATH: a job's entrypoint runs `python` from the nodes' PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env | extra
