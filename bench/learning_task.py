"""The arms bench: does the judge matter on a task? (``bench/learning.py --env ENV_ID``, or the
key-room aliases ``--task keyroom-s15`` / ``keyroom-s5``; this module holds its logic.)

Any environment id oniray runs (every MiniHack id, the NLE tasks, the Corridor). Arms, all
from one base config (MiniHack: ``configs/minihack/oni.yaml``; others: ``configs/default.yaml``;
``--config`` picks another) with the same shared settings (``--set key=value``, applied to
every arm alike):

    extrinsic       the environment's reward alone
    retrieval       ONI with the offline embedding judge, told the task's goal (no message
    classification  of the task among its examples, no rules for the task): the label table,
    ranking         a classifier, a ranking model
    count           label-free: every message rewarded by its episodic count alone
                    (rewards.model.kind=count, ONI's formula with every caption helpful)

Every run ends at its step budget (``--steps``); ``--minutes``, off by default, is only a
safety cap, and a run it cut short is not stored. Resumable: every finished (arm, seed,
settings) run is stored in the results JSON, written atomically after each run, under a key
of arm, seed and a hash of the settings; a stored run is never run again. Runs interleave
seed-major, as this machine's speed drifts. One results file per (task, settings): the
default name carries the task and a hash of the shared settings. ``--tune`` plays the same
grid as Ray Tune trials (bench/sweep.py), stored and reported by the same functions here
(:func:`to_run`, :func:`store_run`, :func:`finish_bench`).

Reports per arm (``bench/stats.py``): final success over the last episodes
(``run.summary_window_episodes``) with a 95% Student-t interval over seeds, its interquartile
mean with a bootstrap interval, success against env steps with t bands, the steps until
success first exceeds 10% and 50%; per judged arm against each control (extrinsic, count):
Welch's t and the probability of improvement with its bootstrap interval; the judge's labels
for the task's distinct messages (read from each run's label store) and the share of the
judged reward each message took. Writes ``<out>.json``, ``<out>.md`` and ``<out>.png``.
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

from bench import stats
from bench.runs import git_commit, train_and_inspect
from cluster.config import ConfigError, OniConfig, load_config, reserved_cpus
from cluster.run_dir import RunDir, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
MINIHACK_CONFIG = REPO / "configs" / "minihack" / "oni.yaml"
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
# Short names for the tasks the bench was first run on (their results files predate --env).
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
STEP_BUDGET = "step budget reached"
TIME_BUDGET = "time budget reached"  # a finish only for settings that set a time cap
JUDGED_ARMS = ("retrieval", "classification", "ranking")
CONTROLS = ("extrinsic", "count")
# Kept per report row, to tell why a run stalls or collapses: the policy (entropy, the update's
# size and clipping), the critic, and the intrinsic reward (its mean per step, how many steps
# it pays, which reward-model version paid it and how many labels that model has seen).
# An update's size (issue 28): its KL, the gradient norm before and after clipping, the
# critic's fit, the advantages' scale and the learning rate in force (learner.appo's keys).
DIAGNOSTICS = ("learner_entropy_loss", "learner_grad_norm", "learner_clip_fraction",
               "learner_mean_ratio", "learner_value_loss", "learner_mean_value",
               "learner_mean_reward", "learner_intrinsic_mean", "intrinsic_sparsity",
               "learner_reward_model_version", "labels_total", "learner_kl",
               "learner_grad_norm_clipped", "learner_explained_variance",
               "learner_advantage_mean", "learner_advantage_std", "learner_lr",
               "learner_kl_coef", "learner_reward_norm_scale")


def env_id_of(task: str) -> str:
    """The environment id for a key-room alias or an id as given."""
    return TASKS.get(task, task)


def base_config(env_id: str) -> Path:
    return MINIHACK_CONFIG if env_id.startswith("MiniHack-") else DEFAULT_CONFIG


def _base_of(s: dict) -> Path:
    """The config file a run's settings start from."""
    return REPO / s["config"] if "config" in s else base_config(s["env_id"])


# The default learner changed on 2026-12-08 (issue 28): whitening with its std floored at 1.0
# and value clipping at 1.0, where every run stored before had neither (``learner.preset=plain``
# reproduces it). A run whose learner that change alters says so in its settings ("learner":
# STABILISED), so its key is not an older run's and a stored run is never taken for it; a run
# whose overrides pin the learner's keys either way computes what it did and keeps its key.
STABILISED = "stabilised"
_PLAIN = "learner.preset=plain"


def _learner_changed(s: dict) -> bool:
    """Whether today's defaults give this run another learner than the plain one runs stored
    before 2026-12-08 had."""
    base = _base_of(s)
    keys = [f"env.id={s['env_id']}", *s["shared"], *s["arm"]]
    try:
        today, before = (load_config(base, keys).learner,
                         load_config(base, [_PLAIN, *keys]).learner)
    except ConfigError:  # a stored run's renamed key (see migrate), or a typo config_for reports
        return False
    today.preset = before.preset = "none"  # the preset's name alone changes nothing computed
    return today != before


def settings(task: str, arm: str, *, minutes: float | None, steps: int, shared: list[str],
             config: Path | None = None) -> dict:
    """Everything that decides what a run computes (the seed aside): its key's hash. The base
    config enters only when it is not the task's default, and the learner only when today's
    default learner changes the run (``STABILISED``), so older results keep their keys."""
    # learner.preset=plain asks for the learner every run stored without the marker had: such
    # a run's key, so that adding it to an older table's command finds that table's runs.
    plain = _PLAIN in shared
    s = {"env_id": env_id_of(task), "arm": ARMS[arm], "minutes": minutes, "steps": steps,
         "shared": sorted(o for o in shared if o != _PLAIN)}
    if config is not None and Path(config).resolve() != base_config(s["env_id"]):
        s["config"] = str(Path(config).resolve().relative_to(REPO))
    if not plain and _learner_changed(s):
        s["learner"] = STABILISED
    return s


def settings_hash(s: dict) -> str:
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


def run_key(arm: str, seed: int, digest: str) -> str:
    return f"{arm}/seed={seed}/{digest}"


def default_stem(task: str, *, minutes: float | None, steps: int, shared: list[str],
                 config: Path | None = None) -> Path:
    """``bench/results/learning-<task>-<hash>``: one results file per (task, settings)."""
    env_id = env_id_of(task)
    slug = env_id.removeprefix("MiniHack-").removesuffix("-v0").replace("/", "-").lower()
    common = settings(task, "extrinsic", minutes=minutes, steps=steps, shared=shared,
                      config=config)
    common.pop("arm")
    return REPO / "bench" / "results" / f"learning-{slug}-{settings_hash(common)[:6]}"


def config_for(s: dict, seed: int) -> OniConfig:
    cap = "null" if s["minutes"] is None else s["minutes"]
    overrides = [f"env.id={s['env_id']}", f"run.max_minutes={cap}",
                 f"run.total_env_steps={s['steps']}", f"run.seed={seed}",
                 "run.random_baseline_episodes=0", "run.report_every_s=10",
                 "metrics.enabled=false", *s["shared"], *s["arm"]]
    if "learner" not in s:  # the learner it ran with: before 2026-12-08, or pinned either way
        overrides.insert(0, _PLAIN)
    return load_config(_base_of(s), overrides)


def finished(s: dict, stop_reason: str | None) -> bool:
    """A run that reached its budget (a signal or a failure cut it short otherwise)."""
    return stop_reason == STEP_BUDGET or (stop_reason == TIME_BUDGET and s["minutes"] is not None)


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
    _, _, record = train_and_inspect(config_for(s, seed), f"{arm}-{seed}", run_record)
    return record


def run_record(run_dir: RunDir) -> dict:
    """What the results keep of a finished run folder: its summary, its curve and its judge's
    labels (the same record whether the run was played here or as a Tune trial)."""
    return {"summary": json.loads(run_dir.summary.read_text()),
            "curve": [curve_point(r) for r in run_dir.read_metrics()], **read_judgements(run_dir)}


def curve_point(row: dict) -> dict:
    """What the results keep of one metrics row: progress (with the episodes ended so far,
    which tell a report over a full window of episodes from one over its first few), and why
    a run stalls or collapses (DIAGNOSTICS, where the row has them)."""
    return {"env_steps": row["env_steps"], "time_s": row["time_s"],
            "episodes": row.get("episodes"),
            "success_rate": row.get("success_rate"), "mean_return": row.get("mean_return"),
            "mean_length": row.get("mean_length"),
            **{k: row[k] for k in DIAGNOSTICS if _finite(row.get(k))}}


def judged_reports(run: dict) -> list[dict]:
    """The reports of a run whose success rate is over a full window of episodes
    (``run.summary_window_episodes``): the first reports of a run are over the few episodes
    that ended first, and on a task with a time limit those are the successes (one episode
    of 145 steps, a success, made a first report of 1.00 on KeyRoom-S15). Peaks, collapses
    and steps to a success rate are read from these alone.

    A report stored with its episode count counts from ``window`` episodes on. One stored
    before reports kept the count counts from the steps by which that many must have ended:
    each of the run's N environments ends an episode at least every T steps, T being the
    time limit, read as the longest mean episode length of any report (a window of timeouts
    alone shows it exactly, as every stored KeyRoom run's does): N * T * ceil(window / N).
    A hand-made record with neither (no settings) keeps every report."""
    curve, cfg = run["curve"], _stored_config(run)
    window = 100 if cfg is None else cfg.run.summary_window_episodes  # 100: the default
    if curve and all(p.get("episodes") is not None for p in curve):
        return [p for p in curve if p["episodes"] >= window]
    if cfg is None:
        return curve
    envs = cfg.rollout.num_actors * cfg.rollout.envs_per_actor
    longest = max((p["mean_length"] for p in curve if p.get("mean_length") is not None),
                  default=0.0)
    first_full = envs * longest * math.ceil(window / envs)
    return [p for p in curve if p["env_steps"] >= first_full]


def _stored_config(run: dict) -> OniConfig | None:
    """The config a stored run ran with (None for a hand-made record without its settings)."""
    settings = run.get("settings") or {}
    if not {"env_id", "minutes", "steps", "shared", "arm"} <= settings.keys():
        return None
    return config_for(settings, int(run.get("seed") or 0))


def _finite(value: Any) -> bool:
    """A number JSON can hold (explained variance is NaN where the targets do not vary)."""
    return value is not None and (not isinstance(value, float) or math.isfinite(value))


# ---- statistics --------------------------------------------------------------------------
def band(values: list[float | None]) -> tuple[float, float]:
    """Mean and 95% half-width over seeds (Student's t: few seeds, bootstrap-free)."""
    return stats.t_band(values)


def steps_to_exceed(curve: list[dict], threshold: float) -> int | None:
    """The env steps at the first report whose success rate exceeds ``threshold``."""
    for point in curve:
        if point.get("success_rate") is not None and point["success_rate"] > threshold:
            return int(point["env_steps"])
    return None


def peak_success(curve: list[dict]) -> float | None:
    """The highest success rate of any report of a run (each over its last episodes)."""
    rates = [p["success_rate"] for p in curve if p.get("success_rate") is not None]
    return max(rates) if rates else None


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
    multiplier = np.array([stats.t_multiplier(int(n)) for n in count])
    return mean, multiplier * np.nan_to_num(std) / np.sqrt(np.maximum(count, 1))


def steps_to_threshold(runs: list[dict], threshold: float) -> list[float]:
    """Per seed, the steps to exceed ``threshold``; a seed that never did counts as its whole
    budget (censored: it took at least that long), so a comparison never drops the failures."""
    return [float(steps_to_exceed(judged_reports(r), threshold) or r["summary"].get("env_steps")
                  or 0) for r in runs]


def arm_table(runs: list[dict]) -> dict[str, Any]:
    success = [r["summary"].get("final_success_rate") for r in runs]
    judged = [judged_reports(r) for r in runs]  # once a run: a stored run loads its config
    row: dict[str, Any] = {
        "seeds": len(runs),
        "seed_ids": [r.get("seed") for r in runs],
        "final_success_rate": band(success),
        "final_success_per_seed": success,
        "final_success_iqm": stats.iqm_interval(success),
        "final_mean_return": band([r["summary"].get("final_mean_return") for r in runs]),
        # A run that learnt and then lost it ends where one that never learnt does: the best
        # report of each seed tells them apart (an upward-biased view: read it beside final).
        "peak_success_per_seed": [peak_success(reports) for reports in judged],
        # Learnt (>= 0.30) and lost by the end (< half the peak): bench/stats.py's collapse.
        "collapse_per_seed": [stats.collapse([p.get("success_rate") for p in reports])
                              for reports in judged],
        "env_steps": band([r["summary"].get("env_steps") for r in runs]),
    }
    for threshold in THRESHOLDS:
        reached = [steps_to_exceed(reports, threshold) for reports in judged]
        hit = [s for s in reached if s is not None]
        row[f"steps_to_{threshold:g}"] = {"per_seed": reached, "reached": len(hit),
                                          "mean": band(hit)[0] if hit else None}
    return row


def intervals_apart(mean_x: float, half_x: float, mean_y: float, half_y: float) -> str:
    """"above" / "below" where interval X lies wholly above / below interval Y, else
    "overlap" (intervals that touch overlap)."""
    if mean_x - half_x > mean_y + half_y:
        return "above"
    if mean_x + half_x < mean_y - half_y:
        return "below"
    return "overlap"


def comparisons(by_arm: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """Each judged arm against each control: final success (Welch's t, probability of
    improvement) and steps to 50% (Welch's t on censored steps: fewer is better)."""
    out = []
    for arm in (a for a in JUDGED_ARMS if by_arm.get(a)):
        for control in (c for c in CONTROLS if by_arm.get(c)):
            x, y = by_arm[arm], by_arm[control]
            success_x = [r["summary"].get("final_success_rate") for r in x]
            success_y = [r["summary"].get("final_success_rate") for r in y]
            steps_x, steps_y = steps_to_threshold(x, 0.5), steps_to_threshold(y, 0.5)
            mean_x, half_x = band(success_x)
            mean_y, half_y = band(success_y)
            out.append({
                "arm": arm, "control": control,
                "success_difference": mean_x - mean_y,
                # the bar is "above": the arm's 95% interval wholly over the
                # control's (None: an arm has one seed, which has no interval)
                "success_intervals_apart": (None if min(len(x), len(y)) < 2 else
                                            intervals_apart(mean_x, half_x, mean_y, half_y)),
                "success_welch": stats.welch(success_x, success_y),
                "success_improvement": stats.improvement(success_x, success_y),
                "steps_to_0.5_welch": stats.welch(steps_x, steps_y),
                "steps_to_0.5_improvement": stats.improvement([-v for v in steps_x],
                                                              [-v for v in steps_y]),
            })
    return out


def judged_reward_shares(runs: list[dict], top: int = 5) -> list[tuple[str, float]]:
    """The messages that took the largest mean share of a run's judged reward (the summary's
    rewarded messages over its rewarded total), over the arm's seeds."""
    shares: dict[str, float] = {}
    for run in runs:
        total = run["summary"].get("rewarded_total") or 0.0
        for row in run["summary"].get("rewarded_messages") or []:
            if total > 0:
                shares[row["message"]] = shares.get(row["message"], 0.0) + row["reward"] / total
    ranked = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [(message, share / len(runs)) for message, share in ranked]


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
# Config keys renamed since runs were stored (issue 20 put the judge's backend settings in
# sub-sections): a stored run's settings are read with today's names, so the same command
# with today's keys finds it.
RENAMED_KEYS = {
    "rewards.judge.embedding_goal_sentences": "rewards.judge.embedding.goal_sentences",
    "rewards.judge.embedding_negatives": "rewards.judge.embedding.negatives",
}


def _renamed(override: str) -> str:
    key, sep, value = override.partition("=")
    return f"{RENAMED_KEYS.get(key, key)}{sep}{value}"


def migrate(results: dict) -> dict:
    """Re-key stored runs whose settings use renamed keys (nothing a run computed changes)."""
    runs = {}
    for key, run in results["runs"].items():
        shared = sorted(_renamed(o) for o in run["settings"]["shared"])
        if shared != run["settings"]["shared"]:
            run["settings"] = {**run["settings"], "shared": shared}
            run["settings_hash"] = settings_hash(run["settings"])
            key = run_key(run["arm"], run["seed"], run["settings_hash"])
        runs[key] = run
    results["runs"] = runs
    return results


def load_results(path: Path) -> dict:
    if path.exists():
        return migrate(json.loads(path.read_text()))
    return {"bench": "learning", "runs": {}}


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=1, default=str) + "\n")


def run_bench(task: str, *, arms: list[str], seeds: dict[str, int], minutes: float | None,
              steps: int, shared: list[str], out: Path, random_episodes: int,
              report_only: bool = False, random_only: bool = False,
              config: Path | None = None) -> dict:
    """Run every (arm, seed) not yet stored under the current settings; then report.

    ``random_only``: measure the random agent's row (if not stored for these settings) and
    report, running no arm: what a task's pilot asks first (how often does chance succeed?).

    ``report_only``: write the table and plot of the runs stored so far and nothing else (no
    run, no random agent, the JSON untouched): safe beside a bench that is still running."""
    json_path = out.with_suffix(".json")
    results = load_results(json_path)
    plan = {arm: settings(task, arm, minutes=minutes, steps=steps, shared=shared,
                          config=config) for arm in arms}
    for arm in arms:  # fail on a bad --set before any run starts
        config_for(plan[arm], 0)
    if report_only:
        report = build_report(results, task, plan)
        write_markdown(out.with_suffix(".md"), report, results.get("random"))
        plot(out.with_suffix(".png"), results, plan, report)
        return report
    started_ray = False
    for arm, seed in [] if random_only else to_run(results, plan, seeds):
        if not started_ray:
            from cluster.ray_setup import init_ray

            # Sized for the planned arm that reserves the most CPUs (one with the annotator,
            # if any): a retrieval config may not be valid under these settings.
            init_ray(max((config_for(s, seed) for s in plan.values()),
                         key=lambda cfg: sum(reserved_cpus(cfg).values())))
            started_ray = True
        store_run(json_path, results, arm=arm, seed=seed, s=plan[arm],
                  run=one_run(arm, plan[arm], seed))
    return finish_bench(json_path, results, task=task, plan=plan, out=out,
                        random_episodes=random_episodes)


def to_run(results: dict, plan: dict[str, dict], seeds: dict[str, int]) -> list[tuple[str, int]]:
    """The (arm, seed) runs not yet stored under the plan's settings, seed-major (this
    machine's speed drifts: interleaved, a drift touches every arm alike)."""
    todo = []
    for seed in range(max(seeds[a] for a in plan)):
        for arm in plan:
            if seed >= seeds[arm]:
                continue
            key = run_key(arm, seed, settings_hash(plan[arm]))
            if key in results["runs"]:
                print(f"kept: {key}", flush=True)
                continue
            todo.append((arm, seed))
    return todo


def store_run(json_path: Path, results: dict, *, arm: str, seed: int, s: dict,
              run: dict) -> str:
    """Keep a run that reached its budget under its key, written at once (a kill loses one run
    at most); a run cut short (e.g. SIGINT) is not kept, so the same command runs it again."""
    key = run_key(arm, seed, settings_hash(s))
    reason = run["summary"].get("stop_reason")
    if not finished(s, reason):
        raise SystemExit(f"{key} stopped early ({reason}); not stored, so the same "
                         f"command runs it again")
    results["runs"][key] = {"arm": arm, "seed": seed, "settings_hash": settings_hash(s),
                            "settings": s, "commit": git_commit(),
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **run}
    save_results(json_path, results)
    summary = run["summary"]
    print(f"{key}: success {summary.get('final_success_rate')}, return "
          f"{summary.get('final_mean_return')}, steps {summary.get('env_steps'):,}", flush=True)
    return key


def finish_bench(json_path: Path, results: dict, *, task: str, plan: dict[str, dict],
                 out: Path, random_episodes: int) -> dict:
    """The random agent's row (once per task and settings), then the report: the JSON's, the
    table (``<out>.md``) and the plot (``<out>.png``)."""
    arms = list(plan)
    penalty = config_for(plan[arms[0]], 0).env.penalty_step
    random_key = f"{env_id_of(task)}/penalty={penalty}/episodes={random_episodes}"
    if random_episodes and results.get("random", {}).get("key") != random_key:
        results["random"] = {"key": random_key,
                             **random_agent(env_id_of(task), random_episodes, penalty)}
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
    """The current settings' runs per arm, their table, the arms' comparisons and the
    judge's labels."""
    by_arm = {arm: [r for r in results["runs"].values()
                    if r["arm"] == arm and r["settings_hash"] == settings_hash(s)]
              for arm, s in plan.items()}
    return {"task": env_id_of(task), "plan": plan,
            "arms": {arm: arm_table(runs) for arm, runs in by_arm.items() if runs},
            "comparisons": comparisons(by_arm),
            "judged_reward_shares": {arm: judged_reward_shares(runs)
                                     for arm, runs in by_arm.items()
                                     if runs and arm in (*JUDGED_ARMS, "count")},
            "labels": message_labels(by_arm), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _fmt_steps(entry: dict, seeds: int) -> str:
    if entry["mean"] is None:
        return f"never (0/{seeds})"
    return f"{entry['mean'] / 1e6:.2f} M ({entry['reached']}/{seeds})"


def _interval(entry: list | tuple | None, digits: int = 2) -> str:
    if entry is None:
        return "n/a"
    point, low, high = entry
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _apart(apart: str | None) -> str:
    if apart is None:
        return "n/a (1 seed)"
    return "no" if apart == "overlap" else f"yes, {apart}"


def _plus_minus(point: float, half: float, seeds: int, digits: int) -> str:
    """"0.830 ± 0.120"; "0.830 ± n/a" for one seed: no spread, not a zero-width interval;
    "n/a" for a task without success (NetHackScore: no episode reaches a goal)."""
    if not math.isfinite(point):
        return "n/a"
    spread = "n/a" if seeds < 2 else f"{half:.{digits}f}"
    return f"{point:.{digits}f} ± {spread}"


def _per_seed(values: list[float | None] | None) -> str:
    return "n/a" if not values else " / ".join("–" if v is None else f"{v:.2f}" for v in values)


def _collapsed_cell(row: dict) -> str:
    """"2/5 (seeds 1, 2)": the seeds that learnt and lost it (rows from before issue 28: n/a)."""
    if "collapse_per_seed" not in row:
        return "n/a"
    ids = row.get("seed_ids") or list(range(row["seeds"]))
    hit = [str(i) for i, c in zip(ids, row["collapse_per_seed"], strict=True) if c["collapsed"]]
    return f"{len(hit)}/{row['seeds']}" + (f" (seeds {', '.join(hit)})" if hit else "")


def _collapse_lines(arms: dict[str, dict]) -> list[str]:
    """Every seed that learnt (success reached the collapse rule's bar), peak to end."""
    lines = []
    for arm, row in arms.items():
        ids = row.get("seed_ids") or list(range(row["seeds"]))
        for seed, c in zip(ids, row.get("collapse_per_seed") or [], strict=True):
            if c["peak"] is not None and c["peak"] >= stats.COLLAPSE_LEARNT:
                verdict = "**collapsed**" if c["collapsed"] else (
                    "fell below half its peak, recovered" if c["low_after_peak"]
                    < stats.COLLAPSE_SHARE * c["peak"] else "kept it")
                lines.append(f"- {arm} seed {seed}: peak {c['peak']:.2f}, lowest after it "
                             f"{c['low_after_peak']:.2f}, final {c['final']:.2f}: {verdict}")
    if not lines:
        return []
    return ["", "## Collapses", "",
            f"Seeds whose success reached {stats.COLLAPSE_LEARNT:.2f}; collapsed: below "
            f"{stats.COLLAPSE_SHARE:g} of the peak at the end.", "", *lines]


def _welch(entry: list | tuple | None) -> str:
    return "n/a" if entry is None else f"{entry[0]:+.2f} (p = {entry[1]:.3f})"


def write_markdown(path: Path, report: dict, random: dict | None) -> None:
    any_plan = next(iter(report["plan"].values()))
    base = any_plan.get("config") or base_config(any_plan["env_id"]).relative_to(REPO)
    shared = ", ".join(any_plan["shared"]) or "none"
    cap = ("no time cap" if any_plan["minutes"] is None
           else f"a {any_plan['minutes']}-minute safety cap")
    lines = [f"# Learning bench: {report['task']}", "",
             f"Per run: {any_plan['steps']:,} env steps ({cap}); base config {base}; shared "
             f"settings: {shared}."
             " Success: the episode reached the goal (the environment's end status). Final: the "
             "last episodes of each run (run.summary_window_episodes); ± is a 95% Student-t "
             "interval over seeds; IQM: the interquartile mean over seeds with a 95% bootstrap "
             "interval. Steps to X%: the mean over the seeds that got there (how many did). "
             "Peak success: each seed's highest success at any report, seed by seed; above the "
             "final value where a run learnt and then lost it. Collapsed: seeds whose success "
             f"reached {stats.COLLAPSE_LEARNT:.2f} and ended below {stats.COLLAPSE_SHARE:g} of "
             "their peak.", "",
             "| arm | seeds | final success (±95%) | IQM [95%] | final return (±95%) | "
             "steps to 10% | steps to 50% | peak success | collapsed | env steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, row in report["arms"].items():
        (s, sh), (r, rh), (st, _) = (row["final_success_rate"], row["final_mean_return"],
                                     row["env_steps"])
        n = row["seeds"]
        lines.append(f"| {arm} | {n} | {_plus_minus(s, sh, n, 3)} | "
                     f"{_interval(row.get('final_success_iqm'))} | {_plus_minus(r, rh, n, 2)} | "
                     f"{_fmt_steps(row['steps_to_0.1'], n)} | "
                     f"{_fmt_steps(row['steps_to_0.5'], n)} | "
                     f"{_per_seed(row.get('peak_success_per_seed'))} | "
                     f"{_collapsed_cell(row)} | {st:,.0f} |")
    if random:
        lines.append(f"| random agent | {random['episodes']} episodes | "
                     f"{random['success_rate']:.3f} ± {random['success_ci95']:.3f} | | "
                     f"{random['mean_return']:.2f} | | | | | {random['env_steps']:,} |")
    lines += _collapse_lines(report["arms"])
    if report.get("comparisons"):
        lines += ["", "## Judged arms against the controls", "",
                  "Intervals apart: whether the arm's 95% interval of final success lies "
                  "wholly above or below the control's. "
                  "Welch's t (arm minus control) with its two-sided p (n/a where no seed of "
                  "either arm differs from another: no spread, no test); P(improvement): the "
                  "probability that a run of the arm beats a run of the control (ties half), "
                  "with a 95% bootstrap interval. Steps to 50%: a seed that never got there "
                  "counts as its whole budget; fewer steps is the improvement.", "",
                  "| arm vs control | success difference | intervals apart | Welch t (success) "
                  "| P(improvement), success | Welch t (steps to 50%) | P(improvement), steps "
                  "to 50% |", "|---|---|---|---|---|---|---|"]
        for c in report["comparisons"]:
            lines.append(
                f"| {c['arm']} vs {c['control']} | {c['success_difference']:+.3f} | "
                f"{_apart(c['success_intervals_apart'])} | "
                f"{_welch(c['success_welch'])} | {_interval(c['success_improvement'])} | "
                f"{_welch(c['steps_to_0.5_welch'])} | "
                f"{_interval(c['steps_to_0.5_improvement'])} |")
    shares = report.get("judged_reward_shares") or {}
    if any(shares.values()):
        lines += ["", "## Where the intrinsic reward went", "",
                  "Per arm, the messages that took the largest share of a run's intrinsic "
                  "reward (the learner's credit by message), averaged over seeds.", ""]
        for arm, top in shares.items():
            if top:
                lines.append(f"- **{arm}**: " + "; ".join(
                    f"{share:.0%} \"{message}\"" for message, share in top))
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
            low, high = mean - half, mean + half
            if key == "success_rate":  # a t band over 3 seeds can leave [0, 1]; a rate cannot
                low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
            ax.fill_between(grid, low, high, alpha=0.2)
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
