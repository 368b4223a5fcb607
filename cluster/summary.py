"""The run's final summary: the counters, the final return, and whether it beats random.

Consumes: the driver's :class:`cluster.checkpointing.Counters` and the random baseline.
Emits: the flat dict written to ``summary.json`` and printed as the summary line.
"""

from __future__ import annotations

import math
from typing import Any

from cluster.checkpointing import Counters
from cluster.report import mean_and_interval


def success_rate(successes: list[bool]) -> float | None:
    """Share of episodes that reached the task's goal (actors.envs.episode_succeeded)."""
    return sum(successes) / len(successes) if successes else None


def summarise(
    c: Counters,
    baseline: dict[str, float] | None,
    *,
    policy_version: int,
    stop_reason: str | None,
    failed: bool,
) -> dict[str, Any]:
    """``failed``: a failure, not the budget or a signal, stopped the run (exit code 1)."""
    mean, half = mean_and_interval(c.recent_returns)
    summary: dict[str, Any] = {
        "stop_reason": stop_reason,
        "failed": failed,
        "env_steps": c.env_steps_produced,
        "env_steps_trained": c.env_steps_trained,
        "env_steps_dropped": c.env_steps_dropped,
        "fragments_lost": c.fragments_lost,
        "actor_restarts": c.actor_restarts,
        "annotator_restarts": c.annotator_restarts,
        "updates": c.updates,
        "policy_version": policy_version,
        "episodes": c.episodes,
        "elapsed_s": round(c.elapsed_s, 1),
        "mean_sps": round(c.env_steps_produced / max(c.elapsed_s, 1e-9), 1),
        "final_mean_return": mean,
        "final_return_ci95": half,
        "final_window_episodes": len(c.recent_returns),
        # Goal tasks (Staircase, Oracle, Corridor): the share of recent episodes that reached
        # the goal; 0 on NetHackScore, which has none.
        "final_success_rate": success_rate(c.recent_successes),
    }
    if baseline:
        summary["random_mean_return"] = baseline["mean_return"]
        summary["random_return_ci95"] = baseline["ci95"]
        if baseline.get("success_rate") is not None:  # older checkpoints' baselines lack it
            summary["random_success_rate"] = baseline["success_rate"]
        # A one-sided Welch z-test at the 5% level, not merely a higher mean.
        base_mean, base_half = baseline["mean_return"], baseline["ci95"]
        std_error = math.hypot(half, base_half) / 1.96
        z = (mean - base_mean) / max(std_error, 1e-9)
        summary["beats_random_z"] = round(min(max(z, -1e6), 1e6), 2)
        summary["beats_random"] = bool(z > 1.645)
    return summary
