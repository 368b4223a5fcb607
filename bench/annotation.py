"""What the reward-annotation service costs, and how fast each judge labels.

    python bench/annotation.py [--seconds 90] [--rounds 2] [--long-minutes 10] [--skip ...]
                               [--only PART ...] [--scoring-captions 16] [--free-tokens 64]

Four measurements, written to ``bench/results/annotation.json`` (+ ``annotation.png``):
  1. on/off     training SPS of the NetHackScore job with the service on (the default: embedding
                judge, retrieval reward model), off (extrinsic reward only), and on with the
                intrinsic reward weighted 0 (the service's cost alone, same agent as off),
                interleaved and repeated in one run, since this machine's speed drifts
                between runs. Goal: on >= 95% of off.
  1b. cpu       CPU seconds by process role (rollout, learner, annotator, driver, Ray) in
                the NetHackScore job: the annotator's share is the service's cost, free of the
                noise that different agents put into SPS.
  2. backends   labels per second of each judge that runs here, on the same distinct
                NetHack messages (collected from random play): embedding, rules,
                transformers (a tiny local model), vllm (the CPU build, tiny model; when
                .venv-vllm exists).
  3. cache      judge calls per 1,000 environment steps over a long NetHack run, per report
                interval: the label cache should drive it toward zero.
  4. scoring    labels per second of one LLM judge (transformers, vllm) on the real
                SmolLM2-135M-Instruct, by how it answers: logprob (one forward pass, no
                generation), constrained (guided choice after the forced tag) and free text
                (up to --free-tokens tokens, read by the strict parser), on the same captions
                and the same loaded model; with each mode's parse failures.
Parts skipped with --skip keep their previous figures; earlier on/off results are kept under
"history" with the commit they measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# vLLM's CPU engine reserves 4 GiB of KV cache by default; 1 GiB is plenty for a tiny model
# and leaves the training run's memory alone.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from bench.runs import git_commit, steady_sps, train  # noqa: E402
from cluster.config import load_config  # noqa: E402

RESULTS = REPO / "bench" / "results"
PARTS = ("on_off", "cpu", "backends", "scoring", "cache")
SERVICE_OFF = ["rewards.annotator.enabled=false", "rewards.model.kind=none",
               "rewards.intrinsic_coef=0"]


# The service at work (judge, label store, reward-model fits, learner-side scoring) with the
# intrinsic reward weighted 0: the agent learns from the same reward as with the service off,
# so its behaviour, and with it NetHack's cost per step, is alike in both runs.
SERVICE_COST_ONLY = ["rewards.intrinsic_coef=0"]
MODES = {"off": SERVICE_OFF, "on": [], "cost": SERVICE_COST_ONLY}


def timed_job(seconds: float) -> list[str]:
    """Overrides of the NetHackScore job for a measured run: a wall-clock budget, no baseline, no
    metrics server, a row every 5 s for the steady-state rate."""
    return [f"run.max_minutes={seconds / 60}", "run.random_baseline_episodes=0",
            "run.total_env_steps=1000000000", "run.report_every_s=5", "metrics.enabled=false"]


def on_off(seconds: float, rounds: int) -> dict:
    """Training SPS with the service off, on (ONI), and on with c_int = 0 ("cost"), interleaved.

    on/off compares two different agents: the intrinsic reward changes what the agent does,
    and NetHack's cost per step depends on it (resets, menus, deaths), by tens of percent.
    cost/off isolates what the service costs the training loop.
    """
    base = timed_job(seconds)
    runs: dict[str, list[float]] = {mode: [] for mode in MODES}
    from cluster.driver import init_ray

    # Ray's logical CPUs are fixed at start: size them for the service-on run (one more actor).
    init_ray(load_config(REPO / "configs" / "default.yaml", base))
    for i in range(rounds):
        for mode, overrides in MODES.items():
            cfg = load_config(REPO / "configs" / "default.yaml", base + overrides)
            _, rows = train(cfg, f"{mode}-{i}")
            runs[mode].append(steady_sps(rows))
            print(f"round {i}: service {mode}: {runs[mode][-1]:,.0f} steps/s", flush=True)
    on = [a / b for a, b in zip(runs["on"], runs["off"], strict=True)]
    cost = [a / b for a, b in zip(runs["cost"], runs["off"], strict=True)]
    return {"sps": runs, "ratio_on_over_off": on, "median_ratio": statistics.median(on),
            "ratio_cost_over_off": cost, "median_cost_ratio": statistics.median(cost),
            "goal": 0.95}


ROLES = {"ray::RolloutActor": "rollout", "ray::LearnerActor": "learner",
         "ray::AnnotatorActor": "annotator"}


def _cpu_by_role() -> dict[str, float]:
    """Cumulative CPU seconds (user + system, all threads) of this run's processes by role."""
    import psutil

    out = dict.fromkeys([*ROLES.values(), "driver", "ray system"], 0.0)
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times, cmd = proc.info["cpu_times"], " ".join(proc.info["cmdline"] or [])
        if times is None:
            continue
        role = "driver" if proc.info["pid"] == me else next(
            (r for prefix, r in ROLES.items() if cmd.startswith(prefix)),
            "ray system" if ("ray" in cmd and "python" in cmd) or "raylet" in cmd
            or "gcs_server" in cmd else None)
        if role is not None:
            out[role] += times.user + times.system
    return out


def cpu_share(seconds: float, warmup_s: float = 20.0) -> dict:
    """Where the CPU goes in the NetHackScore job (service on), by process role, after the warm-up.

    A noise-free view of what the service costs: on a machine whose cores training keeps busy,
    the annotator's share of the CPU is what it takes from training (the learner-side scoring
    of intrinsic rewards is inside the learner's share, and is small).
    """
    import threading

    cfg = load_config(REPO / "configs" / "default.yaml", timed_job(seconds))
    marks: dict[str, dict[str, float]] = {}
    finished = threading.Event()

    def sample() -> None:
        if finished.wait(warmup_s):
            return
        marks["start"] = _cpu_by_role() | {"wall": time.monotonic()}
        while not finished.wait(1.0):
            marks["end"] = _cpu_by_role() | {"wall": time.monotonic()}  # the last before stop

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        train(cfg, "cpu-share")
    finally:
        finished.set()
        sampler.join()
    used = {role: marks["end"][role] - marks["start"][role] for role in marks["start"]}
    wall = used.pop("wall")
    total = sum(used.values())
    share = {role: value / total for role, value in used.items()}
    print("CPU share: " + ", ".join(f"{r} {100 * v:.1f}%" for r, v in share.items()), flush=True)
    return {"seconds_measured": wall, "cores_busy": total / wall, "cpu_seconds": used,
            "share": share, "annotator_share": share["annotator"]}


def nethack_messages(limit: int = 300) -> list[str]:
    """Distinct non-empty messages a random agent sees on NetHackScore."""
    from actors.envs import decode_message, make_env

    env = make_env("NetHackScore-v0")
    env.reset(seed=0)
    seen: dict[str, None] = {}
    for _ in range(200_000):
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        text = decode_message(obs["message"])
        if text:
            seen.setdefault(text)
        if term or trunc:
            env.reset()
        if len(seen) >= limit:
            break
    env.close()
    return list(seen)


def scoring_rates(messages: list[str], skip: set[str], free_tokens: int) -> dict:
    """Labels/s of logprob vs constrained vs free answers, per LLM backend (one model load)."""
    import dataclasses

    from bench.tools import judge_model
    from rewards.config import JudgeConfig, TransformersJudgeConfig, VLLMJudgeConfig
    from rewards.judges import GuardedJudge, make_judge

    if not judge_model.is_ready():
        return {"error": f"no judge model at {judge_model.DEFAULT_DIR} (make judge-model)"}
    modes = {
        "logprob": {"scoring": "logprob"},
        "constrained": {"scoring": "generate", "constrained": True},
        "free": {"scoring": "generate", "constrained": False, "max_new_tokens": free_tokens},
    }
    model = str(judge_model.DEFAULT_DIR)
    backends = {
        "transformers": {"transformers": TransformersJudgeConfig(model=model)},
        "vllm": {"vllm": VLLMJudgeConfig(model=model, dtype="float32"), "api": "chat"},
    }
    if not (REPO / ".venv-vllm" / "bin" / "python").exists():
        backends.pop("vllm")
    out: dict[str, dict] = {}
    per_mode = len(messages) // len(modes)
    for name, extra in backends.items():
        if name in skip:
            continue
        cfg = JudgeConfig(backend=name, max_retries=0, batch_size=8, **extra)
        try:
            started = time.perf_counter()
            judge = make_judge(cfg, env_id="NetHackScore-v0")
            load_s = time.perf_counter() - started
            # The modes are switched on the backend behind the guard, whose config it reads.
            assert isinstance(judge, GuardedJudge)
            backend = judge.inner
            rates: dict[str, dict] = {"load_seconds": load_s}
            for k, (mode, overrides) in enumerate(modes.items()):
                # Warm-up: each mode's first call pays one-off costs (vLLM's first
                # logprob_token_ids batch takes seconds), which are no mode's throughput.
                backend.cfg = dataclasses.replace(cfg, **overrides)
                judge.label([f"You hear a door open. [{mode}]"])
                # Captions of its own per mode: vLLM's prefix cache would otherwise hand the
                # later modes the earlier ones' prompts for free (the shared instructions and
                # examples stay cached for all, as they are in a long run).
                sample = messages[k * per_mode : (k + 1) * per_mode]
                backend.counters = type(backend.counters)()
                started = time.perf_counter()
                verdicts = judge.label(sample)
                elapsed = time.perf_counter() - started
                stats = judge.stats()
                rates[mode] = {
                    "labels_per_s": len(sample) / elapsed, "seconds": elapsed,
                    "labelled": sum(v.label is not None for v in verdicts),
                    "parse_failures": stats["label_parse_failures"],
                }
                print(f"scoring {name} {mode}: {rates[mode]['labels_per_s']:.2f} labels/s, "
                      f"{rates[mode]['labelled']}/{len(sample)} labelled", flush=True)
            judge.close()
        except Exception as exc:  # one backend failing must not lose the others' numbers
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(f"scoring {name}: failed: {out[name]['error']}", flush=True)
            continue
        out[name] = {**rates, "captions_per_mode": per_mode, "free_max_new_tokens": free_tokens,
                     "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git_commit(),
                     "logprob_speedup_over_constrained":
                         rates["logprob"]["labels_per_s"] / rates["constrained"]["labels_per_s"],
                     "logprob_speedup_over_free":
                         rates["logprob"]["labels_per_s"] / rates["free"]["labels_per_s"]}
    return out


def backend_rates(messages: list[str], skip: set[str]) -> dict:
    from rewards.config import JudgeConfig, TransformersJudgeConfig, VLLMJudgeConfig
    from rewards.judges import make_judge

    rates: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {"embedding": JudgeConfig(backend="embedding"),
                   "rules": JudgeConfig(backend="rules")}
        if "transformers" not in skip or "vllm" not in skip:
            sys.path.insert(0, str(REPO / "tests"))
            from tests.helpers.tiny_lm import build_tiny_causal_lm

            model_dir = str(build_tiny_causal_lm(Path(tmp) / "tiny"))
            configs["transformers"] = JudgeConfig(
                backend="transformers", transformers=TransformersJudgeConfig(model=model_dir),
                max_new_tokens=16, max_retries=0)
            if (REPO / ".venv-vllm" / "bin" / "python").exists():
                configs["vllm"] = JudgeConfig(
                    backend="vllm", vllm=VLLMJudgeConfig(model=model_dir, dtype="float32"),
                    max_new_tokens=16, max_retries=0)
        for name, cfg in configs.items():
            if name in skip:
                continue
            sample = messages if name in ("embedding", "rules") else messages[:32]
            try:
                started = time.perf_counter()
                judge = make_judge(cfg, env_id="NetHackScore-v0")
                load_s = time.perf_counter() - started
                started = time.perf_counter()
                verdicts = judge.label(sample)
                elapsed = time.perf_counter() - started
                judge.close()
            except Exception as exc:  # one backend failing must not lose the others' numbers
                rates[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                print(f"{name}: failed: {rates[name]['error']}", flush=True)
                continue
            rates[name] = {
                "labels_per_s": len(sample) / elapsed,
                "captions": len(sample),
                "parsed": sum(v.label is not None for v in verdicts),
                "load_seconds": load_s,
                "note": "tiny untrained model: answers are unparseable by design; measures the "
                        "engine's throughput" if name in ("transformers", "vllm") else "",
            }
            print(f"{name}: {rates[name]['labels_per_s']:,.1f} labels/s", flush=True)
    return rates


def cache_effect(minutes: float) -> dict:
    # The NetHackScore job as `make train` used to run it (random baseline included), only longer.
    cfg = load_config(REPO / "configs" / "default.yaml", [
        f"run.max_minutes={minutes}", "run.total_env_steps=1000000000",
        "run.report_every_s=30", "metrics.enabled=false"])
    summary, rows = train(cfg, "cache")
    series = []
    for before, after in itertools.pairwise(rows):
        steps = after["env_steps"] - before["env_steps"]
        calls = (after.get("labels_total") or 0) - (before.get("labels_total") or 0)
        if steps > 0:
            series.append({"env_steps": after["env_steps"], "time_s": after["time_s"],
                           "judge_calls_per_1000_steps": 1000 * calls / steps,
                           "cache_hit_rate": after.get("judge_cache_hit_rate")})
    outcome = ("final_mean_return", "final_return_ci95", "random_mean_return",
               "random_return_ci95", "beats_random", "beats_random_z", "mean_sps")
    return {"minutes": minutes, "series": series, "env_steps": summary["env_steps"],
            "labels_total": rows[-1].get("labels_total") if rows else None,
            **{key: summary.get(key) for key in outcome}}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if "on_off" in result:
        sps = result["on_off"]["sps"]
        labels = {"off": "service off", "on": "service on", "cost": "on, c_int = 0"}
        modes = [mode for mode in labels if sps.get(mode)]
        for x, mode in enumerate(modes):  # each round a dot, the median a bar
            axes[0].bar(x, statistics.median(sps[mode]), color="tab:blue", alpha=0.5)
            axes[0].plot([x] * len(sps[mode]), sps[mode], "k.")
        axes[0].set_xticks(range(len(modes)), [labels[mode] for mode in modes])
        title = f"training SPS: on/off {result['on_off']['median_ratio']:.2f}"
        if "median_cost_ratio" in result["on_off"]:
            title += f", cost/off {result['on_off']['median_cost_ratio']:.2f}"
        axes[0].set_title(title)
    if "backends" in result:
        names = list(result["backends"])
        names = [n for n in names if "labels_per_s" in result["backends"][n]]
        axes[1].bar(names, [result["backends"][n]["labels_per_s"] for n in names])
        axes[1].set_yscale("log")
        axes[1].set_title("judge labels / s")
    if "cache" in result and result["cache"]["series"]:
        series = result["cache"]["series"]
        axes[2].plot([s["env_steps"] for s in series],
                     [s["judge_calls_per_1000_steps"] for s in series], marker="o")
        axes[2].set_xlabel("environment steps")
        axes[2].set_title("judge calls per 1,000 steps")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90.0, help="length of each on/off run")
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs")
    parser.add_argument("--long-minutes", type=float, default=10.0, help="the cache run")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="parts or backends to skip: on_off cpu backends scoring cache "
                             "embedding rules transformers vllm")
    parser.add_argument("--only", nargs="*", default=[], choices=PARTS,
                        help="run only these parts (the others keep their last figures)")
    parser.add_argument("--scoring-captions", type=int, default=16,
                        help="captions per answer mode in the scoring part")
    parser.add_argument("--free-tokens", type=int, default=64,
                        help="generation budget of free-text answers in the scoring part")
    args = parser.parse_args()
    skip = set(args.skip) | (set(PARTS) - set(args.only) if args.only else set())
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "annotation.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    result: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
                    "commit": git_commit()}
    if "on_off" not in skip:
        result["on_off"] = on_off(args.seconds, args.rounds)
    if "cpu" not in skip:
        result["cpu_share"] = cpu_share(args.seconds)
    messages = nethack_messages() if not {"backends", "scoring"} <= skip else []
    result["backends"] = {} if "backends" in skip else backend_rates(messages, skip)
    if "scoring" not in skip:
        result["scoring"] = scoring_rates(messages[: 3 * args.scoring_captions], skip,
                                          args.free_tokens)
    if "cache" not in skip:
        result["cache"] = cache_effect(args.long_minutes)
    # Parts skipped this time keep their last figures; replaced on/off figures move to the
    # history, so a change's before and after stay side by side.
    for key in ("on_off", "cpu_share", "scoring", "cache"):
        if key not in result and key in previous:
            result[key] = previous[key]
    for name, rates in previous.get("backends", {}).items():
        result["backends"].setdefault(name, rates)
    result["history"] = previous.get("history", [])
    if "on_off" in previous and "on_off" not in skip:
        result["history"].append({"when": previous.get("when"), "commit": previous.get("commit"),
                                  **previous["on_off"]})
    path.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "annotation.png")
    print(json.dumps({k: v for k, v in result.items() if k != "cache"}, indent=2))


if __name__ == "__main__":
    main()
