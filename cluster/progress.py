"""What the driver records at each report: one metrics row and one progress line.

Consumes: the driver's :class:`cluster.counters.Counters`, the loop's queue depths, the
learner's newest losses and the annotator's stats dict. Emits: the row appended to
``metrics.parquet`` (the columns ``oniray report`` and the tests read) and the line printed
to the console. Pure functions: no Ray, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cluster.counters import Counters
from cluster.summary import success_rate
from learner import intrinsic as intrinsic_keys
from rewards.canary import CANARY_KIND_NAMES
from rewards.judges.guard import BLOCK_KINDS

# The annotator's stats (rewards.annotator_actor) by the column each one fills in a row.
ANNOTATOR_COLUMNS = {
    "store_labels": "labels_total",
    "labels_per_s": "labels_per_s",
    "queue_depth": "judge_queue_depth",
    "cache_hit_rate": "judge_cache_hit_rate",
    "parse_failures_total": "judge_parse_failures",
    "canary_fpr": "canary_fpr",
    "reward_model_version": "reward_model_version_published",
    "reward_model_accuracy": "reward_model_accuracy",
    "judge_circuit_state": "judge_circuit_state",
    "unanswered_total": "judge_unanswered",
    # The canaries' false-positive rate per kind (punctuation, reasoning, instruction, ...).
    **{f"canary_fpr_{kind}": f"canary_fpr_{kind}" for kind in CANARY_KIND_NAMES},
    "judge_guard_asked": "judge_guard_asked",
    **{f"judge_guard_blocked_{kind}": f"judge_guard_blocked_{kind}" for kind in BLOCK_KINDS},
}


@dataclass
class LoopState:
    """The training loop's side of a report, read at the moment it is written."""

    sps: float  # env steps produced per second since the previous report
    policy_version: int
    policy_lag: float  # mean lag of the fragments batched since the previous report
    fragments_ready: int  # waiting in the driver for a batch
    updates_queued: int  # batches handed to the learner and not yet finished
    object_store_mb: float | None


def metrics_row(c: Counters, loop: LoopState, learner_losses: dict[str, float | None],
                annotator: dict[str, Any]) -> dict[str, Any]:
    """One row of ``metrics.parquet``."""
    return {
        "time_s": c.elapsed_s,
        "env_steps": c.env_steps_produced,
        "env_steps_trained": c.env_steps_trained,
        "env_steps_dropped": c.env_steps_dropped,
        "fragments_dropped": c.fragments_dropped,
        "sps": loop.sps,
        "updates": c.updates,
        "policy_version": loop.policy_version,
        "policy_lag": loop.policy_lag,
        "episodes": c.episodes,
        "mean_return": float(np.mean(c.recent_returns)) if c.recent_returns else None,
        "success_rate": success_rate(c.recent_successes),
        "mean_length": float(np.mean(c.recent_lengths)) if c.recent_lengths else None,
        "fragments_lost": c.fragments_lost,
        "actor_restarts": c.actor_restarts,
        "annotator_restarts": c.annotator_restarts,
        "learners_rebuilt": c.learner_restarts,  # not learner_*: those are its losses
        # Backpressure, as seen at the report (tests/test_backpressure.py bounds these).
        "fragments_ready": loop.fragments_ready,
        "updates_queued": loop.updates_queued,
        "object_store_mb": loop.object_store_mb,
        **{f"learner_{k}": v for k, v in learner_losses.items()},
        **annotator,
    }


def annotator_columns(stats: dict[str, Any] | None, *, reward_model_version_trained: int,
                      learner_losses: dict[str, float | None]) -> dict[str, Any]:
    """The reward service's columns of a row. ``stats`` is None when the annotator did not
    answer in time: the learner's side of the columns does not depend on it."""
    row = {name: float(stats[key]) for key, name in ANNOTATOR_COLUMNS.items()
           if stats is not None and key in stats}
    row["reward_model_version_trained"] = reward_model_version_trained
    row["intrinsic_sparsity"] = learner_losses.get(intrinsic_keys.INTRINSIC_ZERO_FRACTION)
    return row


def progress_line(row: dict[str, Any], baseline: dict[str, float] | None) -> str:
    """The console line of a metrics row: ``[hh:mm:ss] steps ... | sps ... | lag ... | ...``."""
    ret = "   n/a" if row["mean_return"] is None else f"{row['mean_return']:6.2f}"
    base = f" (random {baseline['mean_return']:.2f})" if baseline else ""
    measure = f"return {ret}{base}"
    if row.get("success_rate") is not None:  # a goal task: judged by success (cluster.summary)
        random_success = baseline.get("success_rate") if baseline else None
        base = "" if random_success is None else f" (random {random_success:.2f})"
        measure = f"success {row['success_rate']:4.2f}{base} | return {ret}"
    return (f"[{clock(row['time_s'])}] steps {row['env_steps']:>10,} | sps {row['sps']:7,.0f} | "
            f"lag {row['policy_lag']:4.1f} | {measure} | episodes {row['episodes']:,} | "
            f"updates {row['updates']:,} | dropped {row['fragments_dropped']}")


def clock(seconds: float) -> str:
    """``hh:mm:ss``, hours past 24 included."""
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
