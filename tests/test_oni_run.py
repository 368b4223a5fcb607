"""Smoke tier: ONI end to end on real NetHack, and the dashboards against a real Prometheus.

One training run serves both tests (module-scoped): `oniray train` on NetHackScore with the
annotation service on (regex judge, classification reward model), its metrics endpoint scraped
by Debian's Prometheus every second. The run is stopped with SIGTERM once labels have arrived,
the reward model has scored a batch and intrinsic rewards are non-zero.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rewards.label_store import LabelStore
from tests.helpers.dashboard_queries import dashboard_paths, panel_queries, prometheus_expr
from tests.helpers.prometheus_fixture import PrometheusServer, free_port, query, start_prometheus

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]


@dataclass
class LiveRun:
    run_dir: Path
    prometheus: PrometheusServer
    output: str


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []


def _ready(rows: list[dict]) -> bool:
    return any(
        (r.get("labels_total") or 0) > 20
        and (r.get("reward_model_version_trained") or -1) >= 1
        and (r.get("learner_intrinsic_nonzero_steps") or 0) > 0
        for r in rows
    ) and len(rows) >= 4


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    tmp = tmp_path_factory.mktemp("oni")
    port = free_port()
    prometheus = start_prometheus(tmp / "prometheus", [f"127.0.0.1:{port}"])
    args = [
        sys.executable, "-m", "cluster.cli", "train", "configs/nethack/score_classification.yaml",
        f"run.out_dir={tmp}", "run.name=oni", "run.max_minutes=4", "run.report_every_s=3",
        "run.random_baseline_episodes=0", "rollout.num_actors=1", "ray.num_cpus=3",
        "ray.object_store_mb=200", f"metrics.port={port}", "metrics.scrape_every_s=1",
        # The regex judge answers at once, so labels arrive within seconds on any machine.
        "rewards.judge.backend=rules", "rewards.model.train_every_s=3",
        "rewards.model.train_steps=50", "rewards.model.holdout_fraction=0.2",
    ]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    run_dir = tmp / "oni"
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(_rows(run_dir)):
                break
            time.sleep(1)
        time.sleep(8)  # a few more scrapes, so every rate() has two points in its window
        yield LiveRun(run_dir, prometheus, "")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        prometheus.stop()


def test_labels_arrive_and_intrinsic_rewards_become_nonzero(live_run: LiveRun) -> None:
    rows = _rows(live_run.run_dir)
    assert _ready(rows), rows[-1] if rows else "no metrics rows"
    last = rows[-1]
    assert last["judge_parse_failures"] == 0  # the regex judge always answers
    assert last["intrinsic_sparsity"] > 0.5  # sparse, as ONI's rewards are
    assert last["learner_intrinsic_nonzero_steps"] > 0  # ... but not empty
    # The label store on disk holds what the service reported, with both kinds of label.
    store = LabelStore(live_run.run_dir / "labels")
    labels = store.labels().column("label").to_pylist()
    assert len(labels) >= 20 and any(labels) and not all(labels)


def test_every_dashboard_panel_returns_data(live_run: LiveRun) -> None:
    base = live_run.prometheus.base_url
    assert query(base, "up")[0]["value"][1] == "1"
    empty = []
    for path in dashboard_paths():
        for title, expr in panel_queries(path):
            if not query(base, prometheus_expr(expr)):
                empty.append(f"{path.name}: {title}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
