"""Does ONI's intrinsic reward help? Learning curves with and without it, several seeds.

    python bench/learning.py [--task staircase] [--minutes 4] [--seeds 3]
                             [--variants extrinsic retrieval classification ranking]
    python bench/learning.py --score-minutes 8      # NetHackScore against a random agent
    python bench/learning.py --penalty-step 0 --tag no-penalty   # Staircase without NLE's
                                                                 # frozen-step penalty
    python bench/learning.py --env MiniHack-MultiRoom-N4-v0 --steps 2000000   # the arms
        [--arms extrinsic retrieval count] [--seeds N] [--config configs/minihack/oni.yaml]
        [--set env.penalty_step=0 ...] [--out bench/results/learning-multiroom]
    python bench/learning.py --task keyroom-s15 --steps 4000000   # the same, by a short name
    python bench/learning.py --env ... --tune [--max-concurrent N]   # the same grid as Ray
                                             # Tune trials (bench/sweep.py), same results

The arms bench (``--env`` any environment id, or ``--task keyroom-s15`` / ``keyroom-s5``;
bench/learning_task.py) compares extrinsic-only, ONI's three reward models and the label-free
count arm at one step budget per run, resumably: a finished (arm, seed, settings) run is kept
in the results JSON and never run again.

Each variant trains ``--seeds`` times for ``--minutes`` of wall-clock on the sparse-reward
task, with the offline embedding judge for the intrinsic variants and ONI's settings
(``configs/nethack/<task>_<kind>.yaml``). Success is an episode that reached the task's goal
(NLE's end status; Staircase: standing on the stairs down), whatever its return. Runs are
interleaved (seed-major), since this machine's speed drifts. Writes
``bench/results/learning.{json,md,png}``: mean return, success rate and episode length against
environment steps with 95% bands over seeds, and a table with a random agent's row.

The machine's budget is small (2 cores): the default, 4 variants x 3 seeds x 4 minutes, is
~50 minutes, far from ONI's billions of steps. Read the table as what it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import learning_task, stats  # noqa: E402
from bench.runs import git_commit, train  # noqa: E402
from cluster.config import OniConfig, load_config  # noqa: E402

RESULTS = REPO / "bench" / "results"
TASKS = {"staircase": "NetHackStaircase-v0", "score": "NetHackScore-v0",
         "oracle": "NetHackOracle-v0"}


def config_for(task: str, variant: str, *, minutes: float, seed: int,
               extra: list[str] | None = None) -> OniConfig:
    kind = "retrieval" if variant == "extrinsic" else variant
    overrides = [f"run.max_minutes={minutes}", "run.total_env_steps=1000000000",
                 f"run.seed={seed}", "run.random_baseline_episodes=0", "run.report_every_s=10",
                 "metrics.enabled=false", *(extra or [])]
    if variant == "extrinsic":
        overrides += ["rewards.annotator.enabled=false", "rewards.model.kind=none",
                      "rewards.intrinsic_coef=0"]
    return load_config(REPO / "configs" / "nethack" / f"{task}_{kind}.yaml", overrides)


def one_run(cfg: OniConfig, name: str) -> dict:
    """Train; return the curve (per report row) and the per-episode outcomes."""
    summary, rows = train(cfg, name)
    curve = [{"env_steps": r["env_steps"], "mean_return": r.get("mean_return"),
              "success_rate": r.get("success_rate"), "mean_length": r.get("mean_length")}
             for r in rows]
    return {"summary": summary, "curve": curve}


# Intervals over seeds (and over episodes for the random agent): Student's t, shared with the
# arms bench (bench/stats.py); curve bands likewise (bench/learning_task.py).
band = stats.t_band
aggregate = learning_task.curve_band


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4))
    max_steps = max((c["env_steps"] for runs in results.values() for r in runs
                     for c in r["curve"]), default=1)
    grid = np.linspace(0, max_steps, 50)
    for variant, runs in results.items():
        for ax, key in zip(axes, ("mean_return", "success_rate", "mean_length"), strict=True):
            mean, half = aggregate(runs, key, grid)
            ax.plot(grid, mean, label=variant)
            ax.fill_between(grid, mean - half, mean + half, alpha=0.2)
    titles = ("mean episode return (extrinsic)", "success rate", "mean episode length")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_against_random(minutes: float) -> dict:
    cfg = load_config(REPO / "configs" / "default.yaml",
                      [f"run.max_minutes={minutes}", "run.total_env_steps=1000000000",
                       "metrics.enabled=false"])
    run = one_run(cfg, "score")
    keys = ("final_mean_return", "final_return_ci95", "random_mean_return", "random_return_ci95",
            "beats_random", "beats_random_z", "env_steps")
    return {k: run["summary"].get(k) for k in keys} | {"minutes": minutes}


def random_agent(task: str, episodes: int, *, penalty_step: float | None = None) -> dict:
    """A uniformly random policy on the task, in this process: the floor every variant must
    clear (return and success with 95% intervals over episodes)."""
    from actors.rollout_worker import RolloutWorker
    from cluster.config import EnvConfig, ModelConfig, RolloutConfig

    worker = RolloutWorker(env=EnvConfig(id=TASKS[task], penalty_step=penalty_step),
                           rollout=RolloutConfig(envs_per_actor=8, fragment_length=32),
                           model=ModelConfig(), actor_id=0, seed=1234)
    # Each env's first episodes (RolloutWorker.play_random): not whichever end first.
    stats = worker.play_random(episodes_per_env=-(-episodes // worker.num_envs))
    worker.close()
    returns, successes, lengths = (stats.episode_returns, stats.episode_successes,
                                   stats.episode_lengths)
    steps = stats.env_steps
    return {"final_mean_return": band(returns), "final_success_rate": band(
        [float(x) for x in successes]), "final_mean_length": band(lengths),
        "episodes": len(returns), "env_steps": steps}


def write_outputs(out: dict, stem: str) -> None:
    results = out["runs"]
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    plot(results, RESULTS / f"{stem}.png")
    lines = [f"# Learning evidence: {out['task']}, {out['seeds']} seeds x "
             f"{out['minutes_per_run']} min per run"
             + (f" ({', '.join(out['overrides'])})" if out.get("overrides") else ""), "",
             "Final window: the last episodes of each run (`run.summary_window_episodes`); "
             "± is a 95% interval over seeds (over episodes for the random agent). Success: "
             "the episode reached the task's goal (NLE's end status), whatever its return.", "",
             "| variant | final mean return (±95%) | success rate (±95%) | episode length "
             "(±95%) | env steps |",
             "|---|---|---|---|---|"]
    rows = dict(out["table"])
    if "random" in out:
        rows["random agent"] = {**out["random"], "env_steps": (out["random"]["env_steps"], 0)}
    for variant, row in rows.items():
        (r, rh), (sr, sh), (st, _) = (row["final_mean_return"], row["final_success_rate"],
                                      row["env_steps"])
        ln, lh = row.get("final_mean_length", (float("nan"), float("nan")))
        lines.append(f"| {variant} | {r:.3f} ± {rh:.3f} | {sr:.3f} ± {sh:.3f} | "
                     f"{ln:,.0f} ± {lh:,.0f} | {st:,.0f} |")
    if "score_vs_random" in out:
        s = out["score_vs_random"]
        lines += ["", f"NetHackScore after {s['minutes']} min: {s['final_mean_return']:.1f} ± "
                  f"{s['final_return_ci95']:.1f} vs random {s['random_mean_return']:.1f} ± "
                  f"{s['random_return_ci95']:.1f} (beats random: {s['beats_random']}, "
                  f"z = {s['beats_random_z']})"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def run_arms_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The arms bench on ``--env`` (or a key-room short name): one results file per task and
    settings, every run to ``--steps``."""
    if args.env and args.task:
        parser.error("--env and --task name the task twice: give one")
    task = args.env or args.task
    try:
        from actors.envs import UnknownEnvError, canonical_env_id

        if args.env:
            task = canonical_env_id(args.env)
    except UnknownEnvError as exc:
        parser.error(str(exc))
    if args.steps is None:
        if args.env:
            parser.error("--env needs --steps: every run ends at one step budget")
        args.steps = 1_000_000_000  # a key-room short name with --minutes, as first run
    seeds = ({a: args.seeds for a in args.arms} if args.seeds is not None
             else learning_task.DEFAULT_SEEDS)
    out = args.out
    if out is None:
        out = (RESULTS / "learning-minihack" if args.task else learning_task.default_stem(
            task, minutes=args.minutes, steps=args.steps, shared=args.set, config=args.config))
    print(f"results: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}"
          ".{json,md,png}", flush=True)
    if args.tune and not (args.report_only or args.random_only):  # as Tune trials (bench/sweep.py)
        from bench.sweep import SweepOptions, run_sweep

        options = SweepOptions(max_concurrent=args.max_concurrent,
                               max_failures=args.max_failures, storage=args.storage,
                               ray_address=args.ray_address)
        sys.exit(run_sweep(task, arms=args.arms, seeds=seeds, minutes=args.minutes,
                           steps=args.steps, shared=args.set, out=out,
                           random_episodes=args.random_episodes, config=args.config,
                           options=options))
    learning_task.run_bench(
        task, arms=args.arms, seeds=seeds, minutes=args.minutes, steps=args.steps,
        shared=args.set, out=out, random_episodes=args.random_episodes,
        report_only=args.report_only, random_only=args.random_only, config=args.config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS) + sorted(learning_task.TASKS),
                        default=None, help="a NetHack bench task, or a key-room short name for "
                        "the arms bench (default: staircase)")
    parser.add_argument("--env", default=None, metavar="ENV_ID",
                        help="arms bench: any environment id (MiniHack-..., NetHack...)")
    parser.add_argument("--config", type=Path, default=None,
                        help="arms bench: the base config of every arm (default: "
                             "configs/minihack/oni.yaml for MiniHack, else configs/default.yaml)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="per run: NetHack benches' wall-clock budget (default 4); arms "
                             "bench: only a safety cap (default none: runs end at --steps)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="per variant (default 3; arms bench: 5 for extrinsic, retrieval "
                             "and count, 3 for classification and ranking)")
    parser.add_argument("--arms", nargs="+", default=list(learning_task.ARMS),
                        choices=list(learning_task.ARMS), help="arms bench: the arms")
    parser.add_argument("--steps", type=int, default=None,
                        help="arms bench: env steps per run (required with --env)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="arms bench: config overrides shared by every arm alike")
    parser.add_argument("--out", type=Path, default=None,
                        help="arms bench: results stem (.json, .md, .png); default "
                             "bench/results/learning-<task>-<settings hash> (key-room short "
                             "names: bench/results/learning-minihack)")
    parser.add_argument("--report-only", action="store_true",
                        help="arms bench: write the table and plot of the runs stored so "
                             "far (no run; the JSON is left as it is)")
    sweep = parser.add_argument_group("arms bench as Ray Tune trials (bench/sweep.py)")
    sweep.add_argument("--tune", action="store_true",
                       help="run the grid's runs as Ray Tune trials, side by side where the "
                            "cluster has room; the same results files")
    sweep.add_argument("--max-concurrent", type=int, default=None,
                       help="--tune: at most this many trials at once (default: as many as "
                            "the cluster's resources hold; a local Ray is sized for one)")
    sweep.add_argument("--max-failures", type=int, default=3,
                       help="--tune: retries of a failed trial, each from its newest "
                            "checkpoint")
    sweep.add_argument("--storage", default=str(REPO / "runs" / "sweeps"),
                       help="--tune: Tune's experiment folders and the trials' run folders: "
                            "on a cluster, a path every node shares or a URI (s3://...)")
    sweep.add_argument("--ray-address", default=None,
                       help="--tune: the Ray cluster to join (auto inside a Ray job); "
                            "default: start a local Ray")
    parser.add_argument("--variants", nargs="+",
                        default=["extrinsic", "retrieval", "classification", "ranking"])
    parser.add_argument("--score-minutes", type=float, default=0.0,
                        help="also train NetHackScore this long and compare with random")
    parser.add_argument("--random-episodes", type=int, default=200,
                        help="episodes of a random agent on the task, for the table")
    parser.add_argument("--random-only", action="store_true",
                        help="only (re)measure the random agent (with the saved runs' "
                             "env.penalty_step) and add it to the saved results; arms "
                             "bench: measure its row for the task and settings, run no arm")
    parser.add_argument("--penalty-step", type=float, default=None,
                        help="NLE's frozen-step penalty (env.penalty_step) for every run")
    parser.add_argument("--tag", default="",
                        help="results go to bench/results/learning-TAG.* instead of learning.*")
    args = parser.parse_args()
    if args.env or args.task in learning_task.TASKS:
        run_arms_bench(args, parser)
        return
    args.task = args.task or "staircase"
    args.minutes = 4.0 if args.minutes is None else args.minutes
    if args.seeds is None:
        args.seeds = 3
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"learning-{args.tag}" if args.tag else "learning"
    extra = [] if args.penalty_step is None else [f"env.penalty_step={args.penalty_step}"]
    if args.random_only:
        out = json.loads((RESULTS / f"{stem}.json").read_text())
        task = next(k for k, v in TASKS.items() if v == out["task"])
        # The random agent plays what the saved runs played, whatever this command line says.
        saved = dict(o.split("=", 1) for o in out.get("overrides", []))
        penalty = saved.get("env.penalty_step")
        out["random"] = random_agent(task, args.random_episodes,
                                     penalty_step=None if penalty is None else float(penalty))
        write_outputs(out, stem)
        return
    from cluster.driver import init_ray

    init_ray(config_for(args.task, "retrieval", minutes=args.minutes, seed=0, extra=extra))
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    for seed in range(args.seeds):
        for variant in args.variants:
            cfg = config_for(args.task, variant, minutes=args.minutes, seed=seed, extra=extra)
            run = one_run(cfg, f"{variant}-{seed}")
            results[variant].append(run)
            s = run["summary"]
            print(f"seed {seed} {variant}: return {s.get('final_mean_return')}, "
                  f"success {s.get('final_success_rate')}, steps {s['env_steps']:,}", flush=True)
    table = {}
    for variant, runs in results.items():
        table[variant] = {
            "final_mean_return": band([r["summary"].get("final_mean_return") for r in runs]),
            "final_success_rate": band([r["summary"].get("final_success_rate") for r in runs]),
            "env_steps": band([r["summary"]["env_steps"] for r in runs]),
            "final_mean_length": band([r["curve"][-1]["mean_length"] if r["curve"] else None
                                       for r in runs]),
            "seeds": len(runs),
        }
    out = {"task": TASKS[args.task], "minutes_per_run": args.minutes, "seeds": args.seeds,
           "overrides": extra, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "commit": git_commit(), "table": table, "runs": results}
    if args.random_episodes:
        out["random"] = random_agent(args.task, args.random_episodes,
                                     penalty_step=args.penalty_step)
    if args.score_minutes:
        out["score_vs_random"] = score_against_random(args.score_minutes)
    write_outputs(out, stem)


if __name__ == "__main__":
    main()
