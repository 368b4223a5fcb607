"""What the benchmark scripts share: one training run in a temporary folder, steady-state SPS.

Imported by bench/annotation.py, bench/scaling.py, bench/learning.py (and its MiniHack
bench, bench/learning_task.py) and
bench/peers/compare.py (which put the checkout on sys.path first).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cluster.config import OniConfig
from cluster.run_dir import RunDir

T = TypeVar("T")


def train(cfg: OniConfig, name: str) -> tuple[dict, list[dict]]:
    """Run ``cfg`` to its budget in a throwaway run folder; its summary and metrics rows."""
    summary, rows, _ = train_and_inspect(cfg, name, lambda _run_dir: None)
    return summary, rows


def train_and_inspect(
    cfg: OniConfig, name: str, inspect: Callable[[RunDir], T]
) -> tuple[dict, list[dict], T]:
    """As :func:`train`, plus ``inspect(run_dir)`` on the finished run folder before it is
    deleted (the learning bench reads the judge's labels from its label store)."""
    from cluster.driver import train_on_ray

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir.create(tmp, name)
        summary = train_on_ray(cfg, run_dir)
        return summary, run_dir.read_metrics(), inspect(run_dir)


def steady_sps(rows: list[dict], skip_s: float = 15.0) -> float:
    """SPS after the warm-up (actor start, first weights, a judge's model load)."""
    rows = [r for r in rows if r["time_s"] >= skip_s]
    if len(rows) < 2:
        return float("nan")
    return (rows[-1]["env_steps"] - rows[0]["env_steps"]) / (rows[-1]["time_s"] - rows[0]["time_s"])


def git_commit() -> str | None:
    """The checkout's short commit, stored with a result so a figure names the code it measured."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                              cwd=Path(__file__).resolve().parents[1], text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
