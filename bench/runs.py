"""What the benchmark scripts share: one training run in a temporary folder, steady-state SPS.

Imported by bench/annotation.py, bench/scaling.py, bench/learning.py and
bench/peers/compare.py (which put the checkout on sys.path first).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from cluster.config import OniConfig


def train(cfg: OniConfig, name: str) -> tuple[dict, list[dict]]:
    """Run ``cfg`` to its budget in a throwaway run folder; its summary and metrics rows."""
    from cluster.driver import run_training
    from cluster.run_dir import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir.create(tmp, name)
        summary = run_training(cfg, run_dir)
        return summary, run_dir.read_metrics()


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
