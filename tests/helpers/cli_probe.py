"""``oniray train --local`` run in a child Python that then reports on itself: its exit code,
the processes it left running, and which of Ray and wandb it imported.

``probe_train(args, env=..., timeout=...)`` returns ``({"code", "children", "ray", "wandb"},
output)``: ``children`` the pids still parented by the run's process, ``ray`` the ``ray.*``
modules it imported (sorted), ``wandb`` whether it imported wandb.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, sys
from cluster.cli import main
code = main(sys.argv[1:])

def parent_of(pid):
    try:  # any process on the machine may exit between listdir and open
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return None

children = [p for p in os.listdir("/proc") if p.isdigit() and parent_of(p) == str(os.getpid())]
print("PROBE " + json.dumps({
    "code": code, "children": children,
    "ray": sorted(m for m in sys.modules if m.split(".")[0] == "ray"),
    "wandb": "wandb" in sys.modules,
}))
"""


def probe_train(*args: str, env: dict[str, str] | None = None,
                timeout: float = 120) -> tuple[dict, str]:
    """Run ``oniray train --local ARGS`` from the repository root (``env``: the child's
    environment; default this one, one OpenMP thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if env is None else env
    env = {**env, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", PROBE, "train", "--local", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    text = proc.stdout + proc.stderr
    probe = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    assert probe, text[-3000:]
    return json.loads(probe[-1].removeprefix("PROBE ")), text
