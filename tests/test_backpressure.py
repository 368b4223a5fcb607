"""Smoke tier: under a learner made slow for real, rollouts wait and the object store stays
bounded (the real CLI; the numbers come from the run's metrics.parquet)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.run_dir import RunDir
from tests.helpers.cli import SMALL, finish, oniray
from tests.helpers.fragments import make_fragment

pytestmark = pytest.mark.system

MAX_QUEUED, ACTORS, IN_FLIGHT = 2, 1, 1
T, E, BATCH, CORE = 16, 8, 256, 1024
PER_BATCH = BATCH // (T * E)
STEPS = 24 * BATCH  # 24 updates: the queues fill and drain several times


@pytest.mark.slow
def test_slow_learner_keeps_queues_and_object_store_bounded(tmp_path: Path) -> None:
    # A GRU of 1024 and 8 epochs per batch: an update takes seconds on this CPU, while the
    # corridor's actor makes a fragment in milliseconds.
    # A step budget, not a time budget: a busy machine slows the run but cannot cut it short
    # of filling the queues many times over (the time cap is only a safety net).
    finish(oniray("train", "configs/corridor.yaml", f"run.out_dir={tmp_path}", "run.name=b",
                  f"run.total_env_steps={STEPS}", "run.max_minutes=2.5",
                  "run.random_baseline_episodes=0", "run.report_every_s=1",
                  f"model.core_hidden={CORE}", "learner.epochs=8",
                  f"learner.max_queued_batches={MAX_QUEUED}", f"learner.batch_size={BATCH}",
                  f"rollout.fragments_in_flight={IN_FLIGHT}", *SMALL), 180)
    run = RunDir(tmp_path / "b")
    rows = run.read_metrics()
    assert len(rows) >= 4, rows
    assert "step budget reached" in run.summary.read_text()  # not the time cap

    # The bound of cluster.driver: fragments alive and weight versions alive.
    fragments = (MAX_QUEUED + 1) * PER_BATCH + ACTORS * IN_FLIGHT
    fragment_bytes = make_fragment(T=T, E=E, seed=0, core_hidden=CORE).nbytes
    state, _ = run.load_latest_checkpoint()
    weight_bytes = sum(t.numel() * t.element_size() for t in state["learner"]["model"].values())
    # The learner's newest, the driver's, one per sample call in flight, one per actor.
    versions = 2 + ACTORS * IN_FLIGHT + ACTORS
    # A checkpoint passes the learner's state (weights and Adam's two moments) through the
    # store on its way to the driver; it is freed once the driver has written it.
    checkpoint_in_transit = 3
    bound_mb = (fragments * fragment_bytes
                + (versions + checkpoint_in_transit) * weight_bytes) / 2**20
    observed = [r["object_store_mb"] for r in rows if r["object_store_mb"] is not None]
    print(f"object store: max {max(observed):.1f} MiB observed, bound {bound_mb:.1f} MiB "
          f"(weights {weight_bytes / 2**20:.1f} MiB, {len(rows)} rows)")
    assert observed and max(observed) <= bound_mb

    # Rollouts outran the learner: it was saturated most of the time and the actors waited
    # (the ready queue never grew past one batch plus the calls in flight).
    saturated = sum(r["updates_queued"] == MAX_QUEUED for r in rows)
    assert saturated >= len(rows) // 2, [r["updates_queued"] for r in rows]
    assert max(r["fragments_ready"] for r in rows) <= PER_BATCH - 1 + ACTORS * IN_FLIGHT
    last = rows[-1]
    assert last["env_steps"] == last["env_steps_trained"] + last["env_steps_dropped"] + (
        last["fragments_ready"] + PER_BATCH * last["updates_queued"]) * T * E
    # Production was held to consumption: at every report the steps made but not yet trained
    # fit in the queues, however long the run (an actor running free would make ~100k steps/s).
    # Timing-free on purpose: how long the learner takes per update varies between machines.
    in_queues = (MAX_QUEUED * PER_BATCH + PER_BATCH - 1 + ACTORS * IN_FLIGHT) * T * E
    untrained = [r["env_steps"] - r["env_steps_trained"] - r["env_steps_dropped"] for r in rows]
    assert max(untrained) <= in_queues, untrained
    print(f"untrained max {max(untrained)} <= {in_queues}; env steps {last['env_steps']}")
    assert last["env_steps"] > 2 * in_queues  # ... and the run went on well past filling them
    assert pq.read_table(run.metrics).num_rows == len(rows)
