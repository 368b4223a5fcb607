"""What the benchmark scripts share: one training run in a temporary folder, steady-state SPS.

Imported by bench/annotation.py, bench/scaling.py and bench/learning.py (which put the
checkout on sys.path first).
"""

from __future__ import annotations

import tempfile

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
