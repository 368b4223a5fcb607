"""The run's final summary: the counters, the final return, and whether it beats random
(by success rate on goal tasks, by return on the others).

Consumes: the driver's :class:`cluster.counters.Counters` and the random baseline.
Emits: the flat dict written to ``summary.json`` and printed as the summary line.
"""

from __future__ import annotations

import math
from typing import Any

from cluster.counters import Counters
from cluster.report import mean_and_interval

REWARDED_KEPT = 1000  # messages the run's credit table keeps (a NetHack run meets thousands)
REWARDED_IN_SUMMARY = 5


def add_rewarded(table: dict[str, list[float]], batch: dict[str, list[float]]) -> None:
    """Add one update's {message: [credit, steps]} (learner.intrinsic.REWARDED_MESSAGES) to
    the run's table; past twice ``REWARDED_KEPT`` entries the least credited are forgotten."""
    for message, (credit, steps) in batch.items():
        row = table.setdefault(message, [0.0, 0.0])
        row[0] += credit
        row[1] += steps
    if len(table) > 2 * REWARDED_KEPT:
        keep = sorted(table, key=lambda msg: -abs(table[msg][0]))[:REWARDED_KEPT]
        kept = {msg: table[msg] for msg in keep}
        table.clear()
        table.update(kept)


def top_rewarded(table: dict[str, list[float]], n: int = REWARDED_IN_SUMMARY) -> list[dict]:
    """The ``n`` messages that earned the most judged reward, most first."""
    top = sorted(table.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
    return [{"message": msg, "reward": round(credit, 3), "steps": int(steps)}
            for msg, (credit, steps) in top if credit > 0]


def rewarded_lines(summary: dict[str, Any]) -> list[str]:
    """The summary's rewarded messages as printed lines (none when nothing was rewarded)."""
    rows = summary.get("rewarded_messages") or []
    if not rows:
        return []
    out = ["messages that earned the judged reward (reward credited, steps):"]
    out += [f"  {row['reward']:10.2f} {row['steps']:>9,}  {row['message']}" for row in rows]
    return out


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
        # policy_lag, stop, learner_lost (cluster.scheduler); sums to env_steps_dropped
        "env_steps_dropped_by_reason": dict(c.env_steps_dropped_by_reason),
        "fragments_lost": c.fragments_lost,
        "actor_restarts": c.actor_restarts,
        "annotator_restarts": c.annotator_restarts,
        "learner_restarts": c.learner_restarts,
        "updates": c.updates,
        "policy_version": policy_version,
        "episodes": c.episodes,
        "elapsed_s": round(c.elapsed_s, 1),
        "mean_sps": round(c.env_steps_produced / max(c.elapsed_s, 1e-9), 1),
        "final_mean_return": mean,
        "final_return_ci95": half,
        "final_window_episodes": len(c.recent_returns),
        # Goal tasks (Staircase, Oracle, MiniHack, Corridor): the share of recent episodes
        # that reached the goal; None on tasks without one (NetHackScore: actors.envs.has_goal).
        "final_success_rate": success_rate(c.recent_successes),
        # Which captions the intrinsic reward went to: what the judge made the agent seek.
        "rewarded_messages": top_rewarded(c.rewarded_messages),
        # Their denominator: the judged reward credited in all (a share of it per message is
        # what the learning bench reports, e.g. how much a distractor took).
        "rewarded_total": round(sum(max(credit, 0.0) for credit, _ in
                                    c.rewarded_messages.values()), 3),
    }
    if baseline:
        summary["random_mean_return"] = baseline["mean_return"]
        summary["random_return_ci95"] = baseline["ci95"]
        random_success = baseline.get("success_rate")  # None: no goal, or an old checkpoint
        if random_success is not None:
            summary["random_success_rate"] = random_success
        final_success = summary["final_success_rate"]
        if final_success is not None and random_success is not None:
            # Goal tasks are judged by success, not return: an agent can out-earn a random
            # one merely by no longer paying the step penalty, while never succeeding.
            z = success_z(final_success, len(c.recent_successes), random_success,
                          int(baseline.get("episodes", 0)))
            summary["beats_random_by"] = "success_rate"
        else:
            # A one-sided Welch z-test on the mean return.
            base_mean, base_half = baseline["mean_return"], baseline["ci95"]
            std_error = math.hypot(half, base_half) / 1.96
            z = (mean - base_mean) / max(std_error, 1e-9)
            summary["beats_random_by"] = "return"
        summary["beats_random_z"] = round(min(max(z, -1e6), 1e6), 2)
        summary["beats_random"] = bool(z > 1.645)  # one-sided, at the 5% level
    return summary


def success_z(p1: float, n1: int, p0: float, n0: int) -> float:
    """One-sided two-proportion z statistic of success rate p1 (n1 episodes) over p0 (n0),
    with the pooled standard error; 0 when neither side varies (both all 0 or all 1)."""
    if n1 == 0 or n0 == 0:
        return 0.0
    pooled = (p1 * n1 + p0 * n0) / (n1 + n0)
    std_error = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    return 0.0 if std_error == 0 else (p1 - p0) / std_error
