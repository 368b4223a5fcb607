"""Training SPS of this checkout against an older commit, interleaved and repeated in one run.

    python bench/speedup.py [--base 28e86dd] [--rounds 3] [--seconds 75]
                            [--configs configs/minihack/keyroom_s5.yaml configs/default.yaml]
                            [--set KEY=VALUE ...]        (overrides for this checkout only)
                            [--name speedup]             (the results files' stem)

Issue 18's yardstick: the same jobs, on the same network and cores, trained by the code before
the throughput work (``--base``, checked out once as a git worktree under the system temp
dir) and by this checkout, each with its own defaults and its own copy of each config (the
annotator on, as each config has it). Every measurement is its own process tree: a worker
subprocess whose ``PYTHONPATH`` is the tree under test, so it and its Ray workers import that
tree's code. Runs alternate base/new within a round and the order flips every round, so the
machine's drift lands on both; the ratio new/base is taken within each round. SPS is steady
state: environment steps produced per second after ``--warmup`` s of the training loop.

Writes ``bench/results/<name>.{json,png}`` (``speedup`` unless ``--name``); the worker logs go to
a temp dir it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DEFAULT_CONFIGS = ["configs/minihack/keyroom_s5.yaml", "configs/default.yaml"]
DEFAULT_BASE = "28e86dd"  # main before issue 18's changes (2026-12-05)
# Keys both versions know: a long budget that the time cap ends, no baseline, frequent rows.
COMMON_OVERRIDES = ["run.total_env_steps=1000000000", "run.random_baseline_episodes=0",
                    "run.report_every_s=5", "metrics.enabled=false",
                    "run.checkpoint_every_updates=1000000"]


# ---- the worker: one training run of one tree (imports only that tree) --------------------

def worker(tree: Path, config: str, seconds: float, warmup: float, overrides: list[str],
           out: Path) -> None:
    sys.path.insert(0, str(tree))
    from cluster.config import load_config
    from cluster.driver import train_on_ray
    from cluster.run_dir import RunDir

    cfg = load_config(str(tree / config), [*COMMON_OVERRIDES, f"run.max_minutes={seconds / 60}",
                                           *overrides])
    import cluster

    with tempfile.TemporaryDirectory(prefix="oniray-speedup-") as tmp:
        run_dir = RunDir.create(tmp, "speedup")
        summary = train_on_ray(cfg, run_dir)
        rows = run_dir.read_metrics()
    steady = [r for r in rows if r["time_s"] >= warmup]
    sps = trained = float("nan")
    if len(steady) >= 2 and steady[-1]["time_s"] > steady[0]["time_s"]:
        span = steady[-1]["time_s"] - steady[0]["time_s"]
        sps = (steady[-1]["env_steps"] - steady[0]["env_steps"]) / span
        trained = (steady[-1]["env_steps_trained"] - steady[0]["env_steps_trained"]) / span
    out.write_text(json.dumps({
        "sps": sps, "sps_trained": trained, "env_steps": summary["env_steps"],
        "envs_per_actor": cfg.rollout.envs_per_actor, "num_actors": cfg.rollout.num_actors,
        "code": str(Path(cluster.__file__).resolve().parent.parent),
    }) + "\n")


# ---- the orchestrator -------------------------------------------------------------------

def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, text=True, capture_output=True,
                          check=True).stdout.strip()


def base_tree(commit: str) -> Path:
    """A worktree of ``commit`` (made once; reused while it exists)."""
    full = git("rev-parse", commit)
    tree = Path(tempfile.gettempdir()) / f"oniray-base-{full[:12]}"
    if not (tree / "cluster").is_dir():
        git("worktree", "add", "--detach", str(tree), full)
    return tree


def measure(tree: Path, config: str, args: argparse.Namespace, overrides: list[str],
            log_dir: Path, tag: str) -> dict:
    out, log = log_dir / f"{tag}.json", log_dir / f"{tag}.log"
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--tree", str(tree),
               "--config", config, "--seconds", str(args.seconds), "--warmup",
               str(args.warmup), "--out", str(out), "--set", *overrides]
    with log.open("w") as fh:
        code = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tree,
                              timeout=args.seconds + 300, check=False).returncode
    if code != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{tag} failed (exit {code}); log {log}:\n{tail}")
    return json.loads(out.read_text())


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = result["configs"]
    fig, axes = plt.subplots(1, len(configs), figsize=(5.5 * len(configs), 4), squeeze=False)
    for ax, config in zip(axes[0], configs, strict=True):
        for i, version in enumerate(("base", "new")):
            values = [rnd[config][version]["sps"] for rnd in result["rounds"]]
            ax.bar(i, statistics.median(values), color=("tab:gray", "tab:blue")[i], alpha=0.7)
            ax.scatter([i] * len(values), values, color="black", s=14, zorder=3)
        ratio = result["median_ratio"][config]
        ax.set_xticks([0, 1], [f"base {result['base']}", f"new {result['commit']}"])
        ax.set_title(f"{config}\nnew / base, median of rounds: {ratio:.2f}x", fontsize=10)
        ax.set_ylabel("env steps/s (steady state)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{result['rounds_n']} interleaved rounds x {result['seconds']:.0f} s, "
                 f"{os.cpu_count()} CPUs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=DEFAULT_BASE, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=75.0, help="training time per run")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds not measured")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for this checkout's runs (the base runs its defaults)")
    parser.add_argument("--name", default="speedup",
                        help="stem of the results files in bench/results/")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.tree, args.config, args.seconds, args.warmup, args.set, args.out)
        return
    sys.path.insert(0, str(REPO))
    from bench.runs import git_commit
    from cluster.run_dir import atomic_write_text

    trees = {"base": base_tree(args.base), "new": REPO}
    log_dir = Path(tempfile.mkdtemp(prefix="oniray-speedup-logs-"))
    print(f"base tree {trees['base']}; logs in {log_dir}", flush=True)
    rounds: list[dict] = []
    for r in range(args.rounds):
        order = ("base", "new") if r % 2 == 0 else ("new", "base")
        result: dict = {config: {} for config in args.configs}
        for config in args.configs:
            for version in order:
                overrides = args.set if version == "new" else []
                tag = f"r{r + 1}-{Path(config).stem}-{version}"
                result[config][version] = measure(trees[version], config, args, overrides,
                                                  log_dir, tag)
                print(f"round {r + 1} {config} {version}: "
                      f"{result[config][version]['sps']:,.0f} SPS", flush=True)
        rounds.append(result)
    ratios = {c: [rnd[c]["new"]["sps"] / rnd[c]["base"]["sps"] for rnd in rounds]
              for c in args.configs}
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git_commit(),
           "base": args.base, "new_overrides": args.set, "seconds": args.seconds,
           "warmup": args.warmup, "configs": args.configs, "rounds_n": args.rounds,
           "rounds": rounds, "ratio_by_round": ratios,
           "median_ratio": {c: statistics.median(v) for c, v in ratios.items()},
           "min_ratio": {c: min(v) for c, v in ratios.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(out, indent=1) + "\n")
    plot(out, RESULTS / f"{args.name}.png")
    print(json.dumps({"median_ratio": out["median_ratio"], "by_round": ratios}, indent=1))


if __name__ == "__main__":
    main()
