"""Throughput of oniray against the raw environment ceiling, measured in one run.

    python bench/throughput.py [CONFIG] [--seconds 60] [key=value ...]     (or: make bench)

Phases, on the same local Ray and the same rollout actors' code, one after the other:
  1. raw ceiling   the rollout actors stepping uniformly random actions, no policy, no learner
  2. inference     the policy's ``act`` on one actor's batch of E observations, alone
  3. training      the real training loop (``cluster.driver``), end to end
While all of it runs, a sampler adds up the proportional set size (PSS) of this process and
every descendant (Ray's GCS, raylet, workers), and records the peak.

Writes ``bench/results/throughput.json`` and ``bench/results/throughput.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.config import load_config  # noqa: E402

RESULTS = REPO / "bench" / "results"


class PeakPss:
    """Samples the PSS of this process tree every ``period`` seconds; keeps the peak."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.peak, self._stop = period, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        root = psutil.Process()
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def raw_ceiling(cfg, seconds: float) -> float:
    """Steps/s of the rollout actors with random actions (no inference, no learning)."""
    import ray

    from cluster.components import rollout_actor

    actors = [rollout_actor(cfg, actor_id=i, extract_captions=cfg.rewards.annotator.enabled)
              for i in range(cfg.rollout.num_actors)]
    ray.get([a.info.remote() for a in actors])

    @ray.remote
    def drive(actor, until: float) -> int:
        steps = 0
        while time.time() < until:
            steps += ray.get(actor.random_steps.remote(8))
        return steps

    started = time.time()
    steps = sum(ray.get([drive.remote(a, started + seconds) for a in actors]))
    elapsed = time.time() - started
    for actor in actors:
        ray.kill(actor)
    return steps / elapsed


def inference_rate(cfg, seconds: float) -> float:
    """Environment steps/s one process can decide with the policy alone (batch of E)."""
    import numpy as np
    import torch

    from actors.envs import ObsEncoder, make_env
    from actors.model import PolicyNet

    torch.set_num_threads(cfg.rollout.torch_threads)
    env = make_env(cfg.env.id)
    obs, _ = env.reset(seed=0)
    batch = ObsEncoder(cfg.env.crop_size).encode([obs] * cfg.rollout.envs_per_actor)
    net = PolicyNet(cfg.model, crop_size=cfg.env.crop_size, num_actions=int(env.action_space.n))
    state = net.initial_state(cfg.rollout.envs_per_actor)
    first = np.zeros(cfg.rollout.envs_per_actor, bool)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        with torch.no_grad():
            _, _, state = net.act(batch.policy_inputs(), first, state)
        calls += 1
    env.close()
    return calls * cfg.rollout.envs_per_actor / (time.perf_counter() - started)


def training_rate(cfg) -> dict:
    from cluster.driver import train_on_ray
    from cluster.run_dir import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir.create(tmp, "bench")
        summary = train_on_ray(cfg, run_dir)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    args = parser.parse_args()
    cfg = load_config(args.config, [
        f"run.max_minutes={args.seconds / 60}", "run.random_baseline_episodes=0",
        "run.total_env_steps=1000000000", "metrics.enabled=false", *args.overrides,
    ])
    RESULTS.mkdir(parents=True, exist_ok=True)

    from cluster.driver import init_ray

    with PeakPss() as memory:
        init_ray(cfg)
        raw = raw_ceiling(cfg, args.seconds)
        print(f"raw environment ceiling: {raw:,.0f} steps/s", flush=True)
        infer = inference_rate(cfg, min(args.seconds, 20))
        print(f"policy inference only:   {infer:,.0f} steps/s (one process)", flush=True)
        summary = training_rate(cfg)
        train = summary["mean_sps"]
        print(f"training end to end:     {train:,.0f} steps/s", flush=True)
    result = {
        "config": str(Path(args.config).relative_to(REPO)) if Path(args.config).is_absolute()
        else args.config,
        "overrides": args.overrides,
        "seconds_per_phase": args.seconds,
        "env": cfg.env.id,
        "num_actors": cfg.rollout.num_actors,
        "envs_per_actor": cfg.rollout.envs_per_actor,
        "fragment_length": cfg.rollout.fragment_length,
        "batch_size": cfg.learner.batch_size,
        "raw_env_sps": round(raw, 1),
        "inference_sps_one_process": round(infer, 1),
        "training_sps": train,
        "training_over_raw": round(train / raw, 3),
        "peak_pss_bytes": memory.peak,
        "peak_pss_gib": round(memory.peak / 2**30, 3),
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = RESULTS / "throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "throughput.png")
    print(json.dumps(result, indent=2))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["raw env\n(random actions)", "policy inference\n(one process)", "training\nend to end"]
    values = [result["raw_env_sps"], result["inference_sps_one_process"], result["training_sps"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(names, values, color=["tab:gray", "tab:orange", "tab:blue"])
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values])
    ax.set_ylabel("environment steps per second")
    ax.set_title(f"{result['env']}, {result['num_actors']} actors × {result['envs_per_actor']} "
                 f"envs; peak PSS {result['peak_pss_gib']:.2f} GiB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
