"""Training SPS by environments per rollout actor, interleaved and repeated (issue 18's first
lever: batched inference over more envs amortises the per-call cost of the policy).

    python bench/envs_per_actor.py [--envs 8 16 32] [--rounds 2] [--seconds 75]
                                   [--configs configs/minihack/keyroom_s5.yaml configs/default.yaml]

Each round trains every (config, E) pair for ``--seconds`` of wall-clock (the annotator on, as
each config has it; the batch stays the config's, so a bigger E means fewer, larger fragments
per update) and records the SPS after a 15 s warm-up (``bench.runs.steady_sps``). Pairs run
one after another in an order that rotates every round, so the machine's drift spreads over
every setting; the ratio to E = the first ``--envs`` value is taken within each round.
Writes ``bench/results/envs-per-actor.{json,png}``. Throughput only: what more envs per actor
do to learning per step is the learning bench's question.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.runs import git_commit, steady_sps, train  # noqa: E402
from cluster.config import load_config  # noqa: E402

RESULTS = REPO / "bench" / "results"
DEFAULT_CONFIGS = ["configs/minihack/keyroom_s5.yaml", "configs/default.yaml"]


def measure(config: str, envs: int, seconds: float) -> dict:
    cfg = load_config(REPO / config, [
        f"rollout.envs_per_actor={envs}", f"run.max_minutes={seconds / 60}",
        "run.total_env_steps=1000000000", "run.random_baseline_episodes=0",
        "run.report_every_s=5", "metrics.enabled=false",
    ])
    summary, rows = train(cfg, f"envs-{envs}")
    return {"sps": steady_sps(rows), "env_steps": summary["env_steps"],
            "updates": summary["updates"],
            "policy_lag": rows[-1].get("policy_lag") if rows else None}


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(out["configs"]), figsize=(6 * len(out["configs"]), 4))
    axes = [axes] if len(out["configs"]) == 1 else axes
    for ax, config in zip(axes, out["configs"], strict=True):
        for r, rnd in enumerate(out["rounds"]):
            ax.plot(out["envs"], [rnd[config][str(e)]["sps"] for e in out["envs"]], "o-",
                    alpha=0.6, label=f"round {r + 1}")
        ax.set_title(config)
        ax.set_xlabel("envs per rollout actor (2 actors)")
        ax.set_ylabel("training SPS")
        ax.set_xticks(out["envs"])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=75.0)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    args = parser.parse_args()
    from cluster.ray_setup import init_ray

    init_ray(load_config(REPO / args.configs[0], []))
    pairs = [(c, e) for c in args.configs for e in args.envs]
    rounds: list[dict] = []
    for r in range(args.rounds):
        shift = r % len(pairs)
        result: dict = {c: {} for c in args.configs}
        for config, envs in pairs[shift:] + pairs[:shift]:
            result[config][str(envs)] = measure(config, envs, args.seconds)
            print(f"round {r + 1} {config} E={envs}: {result[config][str(envs)]['sps']:,.0f} SPS",
                  flush=True)
        rounds.append(result)
    base = str(args.envs[0])
    ratios = {c: {str(e): [rnd[c][str(e)]["sps"] / rnd[c][base]["sps"] for rnd in rounds]
                  for e in args.envs} for c in args.configs}
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git_commit(),
           "seconds": args.seconds, "envs": args.envs, "configs": args.configs,
           "rounds": rounds, "ratio_to_first_envs": ratios,
           "median_ratio": {c: {e: statistics.median(v) for e, v in by_e.items()}
                            for c, by_e in ratios.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "envs-per-actor.json").write_text(json.dumps(out, indent=1) + "\n")
    plot(out, RESULTS / "envs-per-actor.png")
    print(json.dumps(out["median_ratio"], indent=1))


if __name__ == "__main__":
    main()
