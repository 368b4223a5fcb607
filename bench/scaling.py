"""How training SPS scales with rollout actors and learners on this machine, and what each
component costs (the inputs of docs/scaling.md's projection).

    python bench/scaling.py [--seconds 75] [--actors 1 2 4] [--learners 1 2]

Runs the NetHackScore job (service off: APPO alone, so the scaling of sampling and learning is
what is measured) with each actor count at one learner, then each learner count at two
actors, one after the other in one process. Also measures, in this process, the per-step
costs the projection needs: an NLE step, one batched policy inference (E envs), one learner
update of a batch, and publishing plus fetching one set of weights.
Writes ``bench/results/scaling.json`` and ``scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.runs import steady_sps, train  # noqa: E402
from cluster.config import OniConfig, load_config  # noqa: E402

RESULTS = REPO / "bench" / "results"
SERVICE_OFF = ["rewards.annotator.enabled=false", "rewards.model.kind=none",
               "rewards.intrinsic_coef=0"]


def train_sps(cfg: OniConfig) -> dict:
    summary, rows = train(cfg, "scaling")
    return {"sps": steady_sps(rows), "policy_lag": rows[-1].get("policy_lag") if rows else None,
            "updates": summary["updates"], "env_steps": summary["env_steps"]}


def component_costs(cfg: OniConfig) -> dict:
    """Seconds per unit of each component, measured alone on one thread."""
    import numpy as np
    import ray
    import torch

    from actors.envs import ObsEncoder, make_env
    from actors.model import PolicyNet
    from learner.appo import Learner
    from learner.batch import make_batch
    from tests.helpers.fragments import make_fragment

    torch.set_num_threads(1)
    env = make_env(cfg.env.id)
    env.reset(seed=0)
    n, started = 5000, time.perf_counter()
    for _ in range(n):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    env_step_s = (time.perf_counter() - started) / n
    obs, _ = env.reset(seed=1)
    e = cfg.rollout.envs_per_actor
    batch = ObsEncoder(cfg.env.crop_size).encode([obs] * e)
    num_actions = int(env.action_space.n)
    net = PolicyNet(cfg.model, crop_size=cfg.env.crop_size, num_actions=num_actions)
    state, first = net.initial_state(e), np.zeros(e, bool)
    calls, started = 200, time.perf_counter()
    for _ in range(calls):
        with torch.no_grad():
            _, _, state = net.act(batch.policy_inputs(), first, state)
    inference_s = (time.perf_counter() - started) / calls
    learner = Learner(cfg, num_actions=num_actions)
    fragments = [make_fragment(T=cfg.rollout.fragment_length, E=e, seed=i,
                               num_actions=num_actions, core_hidden=cfg.model.core_hidden)
                 for i in range(cfg.fragments_per_batch)]
    batch = make_batch(fragments)
    learner.update(batch)  # warm-up
    updates, started = 5, time.perf_counter()
    for _ in range(updates):
        learner.update(batch)
    update_s = (time.perf_counter() - started) / updates
    weights = learner.get_weights()
    nbytes = sum(w.nbytes for w in weights.values())
    started = time.perf_counter()
    for _ in range(5):
        ray.get(ray.put(weights))
    sync_s = (time.perf_counter() - started) / 5
    env.close()
    return {"env_step_s": env_step_s, "inference_per_call_s": inference_s,
            "envs_per_call": e, "learner_update_s": update_s,
            "batch_steps": cfg.learner.batch_size, "weights_bytes": nbytes,
            "weight_put_get_s": sync_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=75.0)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--learners", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = [f"run.max_minutes={args.seconds / 60}", "run.random_baseline_episodes=0",
            "run.total_env_steps=1000000000", "metrics.enabled=false", *SERVICE_OFF]
    from cluster.driver import init_ray

    most = max(args.actors)
    init_ray(load_config(REPO / "configs" / "default.yaml",
                         [*base, f"rollout.num_actors={most}",
                          f"learner.num_learners={max(args.learners)}"]))
    result: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
                    "seconds_per_run": args.seconds, "actors": {}, "learners": {}}
    for actors in args.actors:
        cfg = load_config(REPO / "configs" / "default.yaml",
                          [*base, f"rollout.num_actors={actors}"])
        result["actors"][actors] = train_sps(cfg)
        print(f"{actors} actors, 1 learner: {result['actors'][actors]['sps']:,.0f} SPS", flush=True)
    for learners in args.learners:
        cfg = load_config(REPO / "configs" / "default.yaml",
                          [*base, "rollout.num_actors=2", f"learner.num_learners={learners}"])
        result["learners"][learners] = train_sps(cfg)
        print(f"2 actors, {learners} learners: {result['learners'][learners]['sps']:,.0f} SPS",
              flush=True)
    result["components"] = component_costs(load_config(REPO / "configs" / "default.yaml", base))
    (RESULTS / "scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "scaling.png")
    print(json.dumps(result, indent=2))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "actors", "rollout actors (1 learner)"),
                           (axes[1], "learners", "learners (2 actors)")):
        xs = list(result[key])
        ax.bar([str(x) for x in xs], [result[key][x]["sps"] for x in xs])
        ax.set_xlabel(label)
        ax.set_ylabel("training SPS")
    fig.suptitle(f"scaling on {result['cpus']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
