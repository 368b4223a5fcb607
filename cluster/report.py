"""Plots and summaries of a run folder (``oniray report RUN_DIR``; ``make train`` ends with it).

Consumes: ``metrics.parquet`` and ``summary.json`` of a run. Emits: ``curve.png`` (mean return
and, on goal tasks, success against environment steps, with the random agent's level) and, for
``oniray report``, ``report.png`` with more panels and ``report.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt

from cluster.run_dir import RunDir


def mean_and_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% interval (0 for fewer than 2 values)."""
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, 1.96 * math.sqrt(var / len(values))


def plot_curve(rows: list[dict[str, Any]], baseline: dict[str, float] | None, path: Path) -> None:
    """Return against steps; on a goal task (rows with a success rate), success beside it,
    each with the random agent's level: goal tasks are judged by success."""
    with_success = any(r.get("success_rate") is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if with_success else 1, figsize=(12 if with_success else 7, 4),
                             squeeze=False)
    panels = [("mean_return", "episode return", "mean_return", "ci95")]
    if with_success:
        panels.insert(0, ("success_rate", "episodes reaching the goal", "success_rate", None))
    for ax, (key, label, base_key, half_key) in zip(axes.flat, panels, strict=True):
        steps = [r["env_steps"] for r in rows if r.get(key) is not None]
        ax.plot(steps, [r[key] for r in rows if r.get(key) is not None],
                label="agent (recent episodes)", color="tab:blue")
        level = baseline.get(base_key) if baseline else None
        if level is not None:
            ax.axhline(level, color="tab:red", linestyle="--", label="random agent")
            assert baseline is not None
            if half_key is not None:
                half = baseline[half_key]
            else:  # a success rate: the normal 95% interval of a proportion
                episodes = max(int(baseline.get("episodes") or 0), 1)
                half = 1.96 * math.sqrt(level * (1 - level) / episodes)
            ax.axhspan(level - half, level + half, color="tab:red", alpha=0.15)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


REPORT_PANELS = (
    ("mean_return", "mean episode return"),
    ("success_rate", "episodes reaching the goal (recent)"),
    ("sps", "environment steps per second"),
    ("policy_lag", "mean policy lag (versions)"),
    ("labels_total", "judge labels"),
    ("reward_model_accuracy", "reward-model held-out accuracy"),
    ("intrinsic_sparsity", "intrinsic reward: fraction of zero"),
)


def _number(value: Any) -> bool:
    """A value to plot: present and not NaN (a retrieval model has no held-out accuracy)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _headline(summary: dict[str, Any], last: dict[str, Any]) -> list[str]:
    """The run in a few sentences: budget, speed, outcome against random, reward service."""
    if not summary:
        return ["The run has no summary yet (still running, or stopped without one)."]
    minutes = summary.get("elapsed_s", 0) / 60
    out = [f"Trained **{summary['env_steps']:,}** environment steps in {minutes:.1f} min "
           f"({summary.get('mean_sps', 0):,.0f} steps/s), {summary.get('updates', 0):,} updates; "
           f"stopped: {summary.get('stop_reason')}."]
    if summary.get("final_mean_return") is not None:
        line = (f"Final mean return **{summary['final_mean_return']:.2f} ± "
                f"{summary['final_return_ci95']:.2f}** over the last "
                f"{summary['final_window_episodes']} episodes")
        if "random_mean_return" in summary:
            line += (f"; a random agent: {summary['random_mean_return']:.2f} ± "
                     f"{summary['random_return_ci95']:.2f}")
            if summary.get("beats_random_by", "return") == "return":
                line += _verdict(summary)
        out.append(line + ".")
    success, random_success = summary.get("final_success_rate"), summary.get("random_success_rate")
    if success is not None:  # a task with a goal (Staircase, Oracle, MiniHack, Corridor)
        line = f"Episodes reaching the goal: **{100 * success:.1f}%** of the last window"
        if random_success is not None:
            line += f" (a random agent: {100 * random_success:.1f}%)"
        if summary.get("beats_random_by") == "success_rate":
            line += _verdict(summary)
        out.append(line + ".")
    if _number(last.get("labels_total")):
        sparsity = last.get("intrinsic_sparsity")
        nonzero = "" if not _number(sparsity) else (
            f", intrinsic reward non-zero on {100 * (1 - sparsity):.1f}% of the last batch's "
            "steps")
        out.append(f"Reward service: {last['labels_total']:,.0f} labels, reward model version "
                   f"{last.get('reward_model_version_trained')} in use{nonzero}.")
    rewarded = summary.get("rewarded_messages") or []
    if rewarded:
        listed = "; ".join(f"\"{row['message']}\" ({row['reward']:.2f} over {row['steps']:,} "
                           "steps)" for row in rewarded)
        out.append(f"The judged reward went most to: {listed}.")
    out.append(f"Faults: {summary.get('fragments_lost', 0)} fragments lost, "
               f"{summary.get('actor_restarts', 0)} actor and "
               f"{summary.get('annotator_restarts', 0)} annotator restarts.")
    return out


def _verdict(summary: dict[str, Any]) -> str:
    verdict = "beats" if summary.get("beats_random") else "does not beat"
    return f", so the agent **{verdict}** random (z = {summary.get('beats_random_z')})"


def write_report(run: Path) -> Path:
    """``report.png`` + ``report.md`` for a run folder; returns the markdown's path."""
    run_dir = RunDir(run)
    rows = run_dir.read_metrics()
    if not rows:
        raise FileNotFoundError(f"{run}: no metrics.parquet rows: is this a run folder?")
    summary = json.loads(run_dir.summary.read_text()) if run_dir.summary.exists() else {}
    panels = [(k, t) for k, t in REPORT_PANELS if any(_number(r.get(k)) for r in rows)]
    cols = 2
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(11, 3.2 * math.ceil(
        len(panels) / cols)), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        xs = [r["env_steps"] for r in rows if _number(r.get(key))]
        ys = [r[key] for r in rows if _number(r.get(key))]
        ax.plot(xs, ys)
        ax.set_title(title)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(run / "report.png", dpi=100)
    plt.close(fig)
    headline = [f"- {sentence}" for sentence in _headline(summary, rows[-1])]
    lines = [f"# oniray run `{run.name}`", "", *headline, "", "| summary | value |", "|---|---|"]
    lines += [f"| {key} | {_fmt(summary[key])} |" for key in sorted(summary)
              if key != "rewarded_messages"]
    lines += ["", "![report](report.png)", ""]
    md = run / "report.md"
    md.write_text("\n".join(lines))
    return md
