"""The MiniHack learning bench: does the judge matter on a key room? (``bench/learning.py
--task keyroom-s15`` or ``keyroom-s5``; this module holds its logic.)

Arms, all from ``configs/minihack/keyroom.yaml`` with the same step penalty and the same
shared settings (``--set key=value``, applied to every arm alike):

    extrinsic       the environment's reward alone
    retrieval       ONI with the offline embedding judge, told the task's goal (no MiniHack
    classification  message among its examples, no rules for the task): the label table,
    ranking         a classifier, a ranking model
    count           label-free: every message rewarded by its episodic count alone
                    (rewards.model.kind=count, ONI's formula with every caption helpful)

Resumable: every finished (arm, seed, settings) run is stored in the results JSON, written
atomically after each run, under a key of arm, seed and a hash of the settings; a stored run
is never run again. Runs interleave seed-major, as this machine's speed drifts.

Reports per arm: success over the last episodes (``run.summary_window_episodes``) with a 95%
interval over seeds, success against env steps with bands, the steps until success first
exceeds 10% and 50%, and the judge's labels for the task's distinct messages (read from each
run's label store). Writes ``<out>.json``, ``<out>.md`` and ``<out>.png``.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bench.runs import git_commit, train_and_inspect
from cluster.config import OniConfig, load_config
from cluster.run_dir import RunDir, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "minihack" / "keyroom.yaml"
TASKS = {"keyroom-s15": "MiniHack-KeyRoom-S15-v0", "keyroom-s5": "MiniHack-KeyRoom-S5-v0"}
ARMS: dict[str, list[str]] = {
    "extrinsic": ["rewards.annotator.enabled=false", "rewards.model.kind=none",
                  "rewards.intrinsic_coef=0"],
    "retrieval": ["rewards.model.kind=retrieval"],
    "classification": ["rewards.model.kind=classification"],
    "ranking": ["rewards.model.kind=ranking"],
    "count": ["rewards.annotator.enabled=false", "rewards.model.kind=count"],
}
# The protocol: at least 5 seeds where the comparison matters most, 3 elsewhere.
DEFAULT_SEEDS = {"extrinsic": 5, "retrieval": 5, "count": 5, "classification": 3, "ranking": 3}
THRESHOLDS = (0.1, 0.5)
FINISHED = ("step budget reached", "time budget reached")  # a run's budget, not a signal
DIAGNOSTICS = ("learner_entropy_loss", "learner_intrinsic_mean", "intrinsic_sparsity")


def settings(task: str, arm: str, *, minutes: float, steps: int, shared: list[str]) -> dict:
    """Everything that decides what a run computes (the seed aside): its key's hash."""
    return {"env_id": TASKS[task], "arm": ARMS[arm], "minutes": minutes, "steps": steps,
            "shared": sorted(shared)}


def settings_hash(s: dict) -> str:
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


def run_key(arm: str, seed: int, digest: str) -> str:
    return f"{arm}/seed={seed}/{digest}"


def config_for(s: dict, seed: int) -> OniConfig:
    overrides = [f"env.id={s['env_id']}", f"run.max_minutes={s['minutes']}",
                 f"run.total_env_steps={s['steps']}", f"run.seed={seed}",
                 "run.random_baseline_episodes=0", "run.report_every_s=10",
                 "metrics.enabled=false", *s["shared"], *s["arm"]]
    return load_config(BASE_CONFIG, overrides)


def read_judgements(run_dir: RunDir) -> dict[str, Any]:
    """The judge's labels (caption -> helpful) and, for ranking, each caption's preference
    record (caption -> [wins, comparisons]) from a finished run's label store."""
    if not run_dir.labels.is_dir():
        return {"labels": {}, "preferences": {}}
    from rewards.label_store import LabelStore

    store = LabelStore(run_dir.labels)
    table = store.labels()
    labels = dict(zip(table.column("caption").to_pylist(), table.column("label").to_pylist(),
                      strict=True))
    prefs: dict[str, list[int]] = {}
    for first, second, preferred in zip(*(store.preferences().column(c).to_pylist()
                                          for c in ("first", "second", "preferred")),
                                        strict=True):
        for i, caption in enumerate((first, second)):
            record = prefs.setdefault(caption, [0, 0])
            record[1] += 1
            record[0] += int(preferred == i)
    return {"labels": labels, "preferences": prefs}


def one_run(arm: str, s: dict, seed: int) -> dict:
    cfg = config_for(s, seed)
    summary, rows, judged = train_and_inspect(cfg, f"{arm}-{seed}", read_judgements)
    curve = [{"env_steps": r["env_steps"], "time_s": r["time_s"],
              "success_rate": r.get("success_rate"), "mean_return": r.get("mean_return"),
              "mean_length": r.get("mean_length"),
              # Why a run stalls: a collapsing policy (entropy) or an intrinsic reward that
              # stops paying (its mean per step).
              **{k: r.get(k) for k in DIAGNOSTICS if r.get(k) is not None}} for r in rows]
    return {"summary": summary, "curve": curve, **judged}


# ---- statistics --------------------------------------------------------------------------
def band(values: list[float | None]) -> tuple[float, float]:
    """Mean and 95% half-width (normal approximation) over seeds; NaN when there are none."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return float("nan"), float("nan")
    half = 1.96 * statistics.stdev(kept) / math.sqrt(len(kept)) if len(kept) > 1 else 0.0
    return statistics.fmean(kept), half


def steps_to_exceed(curve: list[dict], threshold: float) -> int | None:
    """The env steps at the first report whose success rate exceeds ``threshold``."""
    for point in curve:
        if point.get("success_rate") is not None and point["success_rate"] > threshold:
            return int(point["env_steps"])
    return None


def curve_band(runs: list[dict], key: str, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% half-width over seeds of ``key`` interpolated on a common step grid."""
    curves = []
    for run in runs:
        points = [(c["env_steps"], c[key]) for c in run["curve"] if c.get(key) is not None]
        if len(points) >= 2:
            xs, ys = zip(*points, strict=True)
            curves.append(np.interp(grid, xs, ys, left=np.nan, right=np.nan))
    if not curves:
        return np.full_like(grid, np.nan), np.full_like(grid, np.nan)
    stack = np.vstack(curves)
    count = np.sum(~np.isnan(stack), axis=0)
    with warnings.catch_warnings():  # a grid point no seed reached is NaN, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stack, axis=0)
        std = np.nanstd(stack, axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
    return mean, 1.96 * np.nan_to_num(std) / np.sqrt(np.maximum(count, 1))


def arm_table(runs: list[dict]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "seeds": len(runs),
        "final_success_rate": band([r["summary"].get("final_success_rate") for r in runs]),
        "final_mean_return": band([r["summary"].get("final_mean_return") for r in runs]),
        "env_steps": band([r["summary"].get("env_steps") for r in runs]),
    }
    for threshold in THRESHOLDS:
        reached = [steps_to_exceed(r["curve"], threshold) for r in runs]
        hit = [s for s in reached if s is not None]
        row[f"steps_to_{threshold:g}"] = {"per_seed": reached, "reached": len(hit),
                                          "mean": band(hit)[0] if hit else None}
    return row


def message_labels(by_arm: dict[str, list[dict]]) -> dict[str, dict[str, str]]:
    """caption -> {arm: how its judge saw it}: helpful seeds / seeds for label tables, the
    preference win rate for ranking."""
    out: dict[str, dict[str, str]] = {}
    for arm, runs in by_arm.items():
        counts: dict[str, list[int]] = {}
        for run in runs:
            for caption, label in run.get("labels", {}).items():
                c = counts.setdefault(caption, [0, 0])
                c[0] += int(bool(label))
                c[1] += 1
        for caption, (helpful, seen) in counts.items():
            out.setdefault(caption, {})[arm] = f"{helpful}/{seen}"
        wins: dict[str, list[int]] = {}
        for run in runs:
            for caption, (won, compared) in run.get("preferences", {}).items():
                w = wins.setdefault(caption, [0, 0])
                w[0] += won
                w[1] += compared
        for caption, (won, compared) in wins.items():
            out.setdefault(caption, {})[arm] = f"wins {won}/{compared}"
    return out


# ---- the bench ------------------------------------------------------------------------------
def load_results(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"bench": "learning-minihack", "runs": {}}


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=1, default=str) + "\n")


def run_bench(task: str, *, arms: list[str], seeds: dict[str, int], minutes: float,
              steps: int, shared: list[str], out: Path, random_episodes: int,
              report_only: bool = False) -> dict:
    """Run every (arm, seed) not yet stored under the current settings; then report.

    ``report_only``: write the table and plot of the runs stored so far and nothing else (no
    run, no random agent, the JSON untouched): safe beside a bench that is still running."""
    json_path = out.with_suffix(".json")
    results = load_results(json_path)
    plan = {arm: settings(task, arm, minutes=minutes, steps=steps, shared=shared)
            for arm in arms}
    for arm in arms:  # fail on a bad --set before any run starts
        config_for(plan[arm], 0)
    if report_only:
        report = build_report(results, task, plan)
        write_markdown(out.with_suffix(".md"), report, results.get("random"))
        plot(out.with_suffix(".png"), results, plan, report)
        return report
    started_ray = False
    for seed in range(max(seeds[a] for a in arms)):
        for arm in arms:
            if seed >= seeds[arm]:
                continue
            digest = settings_hash(plan[arm])
            key = run_key(arm, seed, digest)
            if key in results["runs"]:
                print(f"kept: {key}", flush=True)
                continue
            if not started_ray:
                from cluster.ray_setup import init_ray

                # Sized for an arm with the annotator, the most CPUs any arm reserves.
                init_ray(config_for(settings(task, "retrieval", minutes=minutes, steps=steps,
                                             shared=shared), seed))
                started_ray = True
            run = one_run(arm, plan[arm], seed)
            reason = run["summary"].get("stop_reason")
            if reason not in FINISHED:  # e.g. SIGINT: a cut-short run must run again
                raise SystemExit(f"{key} stopped early ({reason}); not stored, so the same "
                                 f"command runs it again")
            results["runs"][key] = {"arm": arm, "seed": seed, "settings_hash": digest,
                                    "settings": plan[arm], "commit": git_commit(),
                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **run}
            save_results(json_path, results)  # after every run: a kill loses one run at most
            s = run["summary"]
            print(f"{key}: success {s.get('final_success_rate')}, return "
                  f"{s.get('final_mean_return')}, steps {s.get('env_steps'):,}", flush=True)
    penalty = config_for(plan[arms[0]], 0).env.penalty_step
    random_key = f"{TASKS[task]}/penalty={penalty}/episodes={random_episodes}"
    if random_episodes and results.get("random", {}).get("key") != random_key:
        results["random"] = {"key": random_key,
                             **random_agent(TASKS[task], random_episodes, penalty)}
        save_results(json_path, results)
    report = build_report(results, task, plan)
    results["report"] = report
    save_results(json_path, results)
    write_markdown(out.with_suffix(".md"), report, results.get("random"))
    plot(out.with_suffix(".png"), results, plan, report)
    return report


def random_agent(env_id: str, episodes: int, penalty_step: float | None) -> dict:
    """A uniformly random agent on the task: each of 8 envs' first episodes (unbiased)."""
    from actors.rollout_worker import RolloutWorker
    from cluster.config import EnvConfig, ModelConfig, RolloutConfig

    worker = RolloutWorker(env=EnvConfig(id=env_id, penalty_step=penalty_step),
                           rollout=RolloutConfig(envs_per_actor=8, fragment_length=32),
                           model=ModelConfig(), actor_id=0, seed=1234)
    stats = worker.play_random(episodes_per_env=-(-episodes // worker.num_envs))
    worker.close()
    n = len(stats.episode_successes)
    p = sum(stats.episode_successes) / n
    return {"episodes": n, "env_steps": stats.env_steps, "success_rate": p,
            # Wilson would be kinder at p = 0; the normal interval is what the arms get too.
            "success_ci95": 1.96 * math.sqrt(p * (1 - p) / n),
            "mean_return": statistics.fmean(stats.episode_returns)}


def build_report(results: dict, task: str, plan: dict[str, dict]) -> dict:
    """The current settings' runs per arm, their table and the judge's labels."""
    by_arm = {arm: [r for r in results["runs"].values()
                    if r["arm"] == arm and r["settings_hash"] == settings_hash(s)]
              for arm, s in plan.items()}
    return {"task": TASKS[task], "plan": plan,
            "arms": {arm: arm_table(runs) for arm, runs in by_arm.items() if runs},
            "labels": message_labels(by_arm), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _fmt_steps(entry: dict, seeds: int) -> str:
    if entry["mean"] is None:
        return f"never (0/{seeds})"
    return f"{entry['mean'] / 1e6:.2f} M ({entry['reached']}/{seeds})"


def write_markdown(path: Path, report: dict, random: dict | None) -> None:
    any_plan = next(iter(report["plan"].values()))
    shared = ", ".join(any_plan["shared"]) or "those of configs/minihack/keyroom.yaml"
    lines = [f"# Learning bench: {report['task']}", "",
             f"Per run: {any_plan['minutes']} min or {any_plan['steps']:,} env steps; shared "
             f"settings: {shared}."
             " Success: the episode reached the goal (the environment's end status). Final: the "
             "last episodes of each run (run.summary_window_episodes); ± is a 95% interval over "
             "seeds. Steps to X%: the mean over the seeds that got there (how many did).", "",
             "| arm | seeds | final success (±95%) | final return (±95%) | steps to 10% | "
             "steps to 50% | env steps |", "|---|---|---|---|---|---|---|"]
    for arm, row in report["arms"].items():
        (s, sh), (r, rh), (st, _) = (row["final_success_rate"], row["final_mean_return"],
                                     row["env_steps"])
        lines.append(f"| {arm} | {row['seeds']} | {s:.3f} ± {sh:.3f} | {r:.2f} ± {rh:.2f} | "
                     f"{_fmt_steps(row['steps_to_0.1'], row['seeds'])} | "
                     f"{_fmt_steps(row['steps_to_0.5'], row['seeds'])} | {st:,.0f} |")
    if random:
        lines.append(f"| random agent | {random['episodes']} episodes | "
                     f"{random['success_rate']:.3f} ± {random['success_ci95']:.3f} | "
                     f"{random['mean_return']:.2f} | | | {random['env_steps']:,} |")
    labels = report["labels"]
    if labels:
        judge_arms = [a for a in report["arms"] if a in ("retrieval", "classification",
                                                         "ranking")]
        lines += ["", "## The judge's view of the task's messages", "",
                  "Label-table arms: seeds whose judge labelled the message helpful / seeds "
                  "that saw it; ranking: the message's wins / comparisons.", "",
                  "| message | " + " | ".join(judge_arms) + " |",
                  "|---|" + "---|" * len(judge_arms)]
        for caption in sorted(labels, key=lambda c: (-_helpful_share(labels[c]), c))[:60]:
            cells = [labels[caption].get(a, "") for a in judge_arms]
            lines.append(f"| {caption.replace('|', '/')} | " + " | ".join(cells) + " |")
        if len(labels) > 60:
            lines.append(f"\n({len(labels) - 60} more messages in the JSON)")
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines[:len(report["arms"]) + 8]), flush=True)


def _helpful_share(cells: dict[str, str]) -> float:
    shares = []
    for cell in cells.values():
        num, den = cell.removeprefix("wins ").split("/")
        shares.append(int(num) / max(int(den), 1))
    return max(shares, default=0.0)


def plot(path: Path, results: dict, plan: dict[str, dict], report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {arm: [r for r in results["runs"].values()
                  if r["arm"] == arm and r["settings_hash"] == settings_hash(s)]
            for arm, s in plan.items()}
    max_steps = max((c["env_steps"] for rs in runs.values() for r in rs for c in r["curve"]),
                    default=1)
    grid = np.linspace(0, max_steps, 60)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for arm, rs in runs.items():
        if not rs:
            continue
        for ax, key in zip(axes, ("success_rate", "mean_return"), strict=True):
            mean, half = curve_band(rs, key, grid)
            ax.plot(grid, mean, label=f"{arm} ({len(rs)} seeds)")
            ax.fill_between(grid, mean - half, mean + half, alpha=0.2)
    random = results.get("random")
    if random:
        axes[0].axhline(random["success_rate"], color="k", ls="--", lw=1, label="random agent")
        axes[1].axhline(random["mean_return"], color="k", ls="--", lw=1, label="random agent")
    for ax, title in zip(axes, ("success rate (last episodes)", "mean episode return"),
                         strict=True):
        ax.set_title(f"{report['task']}: {title}")
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
