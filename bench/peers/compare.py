"""oniray against Sample Factory 2 and RLlib's APPO on the same job, measured in one run.

    python bench/peers/compare.py [--rounds 3] [--seconds 75] [--warmup 15]
                                  [--nets reference tiny] [--systems oniray sample_factory rllib]
    [--envs 8]    (or: make bench-peers)

The job, for every system: NetHackScore-v0, oniray's policy network (``actors/model.py``,
re-implemented for each peer in ``bench/peers/``; parameter counts are checked to match),
2 workers x 8 envs, T = 32, batch 1024, one epoch, APPO with V-trace, on this machine's cores.
oniray runs ``configs/default.yaml`` with the reward service off (``rewards.annotator.enabled
=false rewards.intrinsic_coef=0 rewards.model.kind=none``): APPO against APPO. Each network
size runs twice over: the reference network (~1M parameters) and a tiny one, whose model
compute is negligible, so what remains of the gap is framework overhead.

This machine's speed drifts by tens of percent between runs, so systems are interleaved and
repeated: round 1 = oniray, SF, RLlib on each network, round 2 the same, ... Every run is its
own subprocess with its own virtualenv's python (peers: ``bench/peers/setup.sh`` makes
``.venv-sf`` and ``.venv-rllib``), and every rate is steady state from the framework's own
counter of environment steps handed to (or trained by) its learner, skipping ``--warmup`` s.
Ratios are per round (ours over theirs in the same round) and their median.

Writes ``bench/results/peers.json`` and ``bench/results/peers.png``; run logs go to a temp dir
whose path is printed. The previous run's medians and ratios move to the file's "history"
(with their commit), so repeated runs on a drifting machine stay side by side.

Internally, ``compare.py --oniray-run`` is the oniray worker (in-process training, as
``bench/throughput.py`` does it), run by the orchestrator in a subprocess like the peers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(HERE))

from common import NET_SIZES, RESULT_PREFIX  # noqa: E402

sys.path.insert(0, str(REPO))
from bench.runs import git_commit  # noqa: E402

SYSTEMS = ("oniray", "sample_factory", "rllib")
VENVS = {"sample_factory": HERE / ".venv-sf", "rllib": HERE / ".venv-rllib"}
SCRIPTS = {"sample_factory": HERE / "sample_factory_nethack.py",
           "rllib": HERE / "rllib_nethack.py"}
# oniray with the reward service off, reporting often enough for a steady window, and no
# checkpoints inside the window (the peers write none either).
ONIRAY_OVERRIDES = [
    "rewards.annotator.enabled=false", "rewards.intrinsic_coef=0", "rewards.model.kind=none",
    "run.random_baseline_episodes=0", "run.total_env_steps=1000000000",
    "metrics.enabled=false", "run.report_every_s=2", "run.checkpoint_every_updates=1000000",
]
PARAM_TOLERANCE = 0.03  # "the three match within a few %"


# ---- the oniray worker (runs in a subprocess, main venv) -----------------------------------

def oniray_run(net: str, seconds: float, warmup: float, out: str | None, envs: int) -> None:
    sys.path.insert(0, str(REPO))
    from actors.model import PolicyNet
    from cluster.config import load_config
    from cluster.driver import train_on_ray
    from cluster.run_dir import RunDir

    cfg = load_config(str(REPO / "configs" / "default.yaml"), [
        *ONIRAY_OVERRIDES, f"run.max_minutes={seconds / 60}", f"rollout.envs_per_actor={envs}",
        *NET_SIZES[net].oniray_overrides(),
    ])
    import gymnasium as gym
    import nle  # noqa: F401 - registers the tasks

    num_actions = int(gym.make(cfg.env.id).action_space.n)
    params = sum(p.numel() for p in PolicyNet(cfg.model, crop_size=cfg.env.crop_size,
                                              num_actions=num_actions).parameters())
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="oniray-peer-") as tmp:
        run_dir = RunDir.create(tmp, "bench")
        summary = train_on_ray(cfg, run_dir)
        rows = run_dir.read_metrics()
    # Rows are stamped with seconds since the training loop began (actors already up).
    steady = [r for r in rows if r["time_s"] >= warmup]
    sps = float("nan")
    if len(steady) >= 2 and steady[-1]["time_s"] > steady[0]["time_s"]:
        span = steady[-1]["time_s"] - steady[0]["time_s"]
        sps = (steady[-1]["env_steps_trained"] - steady[0]["env_steps_trained"]) / span
        produced = (steady[-1]["env_steps"] - steady[0]["env_steps"]) / span
    else:
        produced = float("nan")
    from importlib.metadata import version

    line = json.dumps({
        "system": "oniray", "net": net, "sps": sps, "sps_produced": produced,
        "window_s": [steady[0]["time_s"], steady[-1]["time_s"]] if steady else [],
        "env_steps": summary["env_steps_trained"], "mean_sps_whole_run": summary["mean_sps"],
        "env_steps_dropped": summary["env_steps_dropped"],
        "wall_s": round(time.time() - started, 1), "params": params,
        "num_actions": num_actions, "version": version("oniray"),
    })
    if out:
        Path(out).write_text(line + "\n")
    print(RESULT_PREFIX + line, flush=True)


# ---- the orchestrator ----------------------------------------------------------------------

def command(system: str, net: str, seconds: float, warmup: float, out: Path, envs: int
            ) -> list[str]:
    common = ["--net", net, "--seconds", str(seconds), "--warmup", str(warmup), "--out", str(out)]
    if system != "rllib":  # the RLlib script keeps its 2 x 8
        common += ["--envs", str(envs)]
    if system == "oniray":
        return [sys.executable, str(Path(__file__).resolve()), "--oniray-run", *common]
    return [str(VENVS[system] / "bin" / "python"), str(SCRIPTS[system]), *common]


def run_one(system: str, net: str, args: argparse.Namespace, log_dir: Path, tag: str
            ) -> dict[str, Any]:
    out, log = log_dir / f"{tag}.json", log_dir / f"{tag}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # each venv sees only its own packages (and bench/peers)
    started, load_before = time.time(), os.getloadavg()[0]
    with log.open("w") as fh:
        try:
            proc = subprocess.run(command(system, net, args.seconds, args.warmup, out, args.envs),
                                  stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                  timeout=args.seconds + 300, check=False)
            code: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    result: dict[str, Any] = {"system": system, "net": net, "sps": None}
    if out.exists():
        result = json.loads(out.read_text())
    result.update(returncode=code, log=str(log), started=time.strftime(
        "%H:%M:%S", time.localtime(started)), load_avg_before=load_before,
                  load_avg_after=os.getloadavg()[0])
    if code != 0 or result.get("sps") is None:
        result["error_tail"] = log.read_text(errors="replace").splitlines()[-15:]
    return result


def summarise(runs: list[dict], nets: list[str], systems: list[str]) -> dict[str, Any]:
    def sps_of(system: str, net: str) -> dict[int, float]:
        return {r["round"]: r["sps"] for r in runs if r["system"] == system and r["net"] == net
                and isinstance(r.get("sps"), float) and r["sps"] == r["sps"]}

    summary: dict[str, Any] = {}
    for net in nets:
        per: dict[str, Any] = {}
        for system in systems:
            values = list(sps_of(system, net).values())
            params = {r.get("params") for r in runs if r["system"] == system and r["net"] == net
                      and r.get("params")}
            per[system] = {
                "sps_by_round": sps_of(system, net),
                "median": statistics.median(values) if values else None,
                "min": min(values) if values else None, "max": max(values) if values else None,
                "params": sorted(params),
            }
        ours = sps_of("oniray", net)
        for peer in [s for s in systems if s != "oniray"]:
            theirs = sps_of(peer, net)
            paired = {k: ours[k] / theirs[k] for k in ours if k in theirs and theirs[k] > 0}
            key = {"sample_factory": "ours_over_sf", "rllib": "ours_over_rllib"}[peer]
            per[key] = {
                "by_round": paired,
                "median_of_rounds": statistics.median(paired.values()) if paired else None,
                "ratio_of_medians": (per["oniray"]["median"] / per[peer]["median"]
                                     if per.get("oniray", {}).get("median") and per[peer]["median"]
                                     else None),
            }
        counts = [c for s in systems for c in per[s]["params"]]
        per["params_match"] = bool(counts) and (max(counts) - min(counts)) <= (
            PARAM_TOLERANCE * max(counts))
        summary[net] = per
    return summary


def machine_info() -> dict[str, Any]:
    import psutil

    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def install_seconds() -> dict[str, int | None]:
    found = {}
    for system, venv in VENVS.items():
        stamp = venv / ".install-seconds"
        found[system] = int(stamp.read_text()) if stamp.exists() else None
    return found


def previous_runs(path: Path) -> list[dict[str, Any]]:
    """The history kept in ``path``, plus that file's own run as its newest entry (summary only:
    the per-run rows stay in the run's log dir)."""
    if not path.exists():
        return []
    previous = json.loads(path.read_text())
    history = previous.get("history", [])
    history.append({key: previous.get(key) for key in
                    ("when", "commit", "rounds", "seconds", "nets", "systems", "summary")})
    return history


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets, systems = result["nets"], result["systems"]
    colors = {"oniray": "tab:blue", "sample_factory": "tab:orange", "rllib": "tab:green"}
    fig, axes = plt.subplots(1, len(nets), figsize=(5.5 * len(nets), 4.5), squeeze=False)
    for ax, net in zip(axes[0], nets, strict=True):
        per = result["summary"][net]
        for i, system in enumerate(systems):
            s = per[system]
            if s["median"] is None:
                ax.text(i, 0, "no result", ha="center", va="bottom", rotation=90)
                continue
            err = [[s["median"] - s["min"]], [s["max"] - s["median"]]]
            ax.bar(i, s["median"], yerr=err, capsize=6, color=colors.get(system, "gray"))
            values = list(s["sps_by_round"].values())
            ax.scatter([i] * len(values), values, color="black", s=12, zorder=3)
            ax.annotate(f"{s['median']:,.0f}", (i, s["median"]), ha="center", va="bottom",
                        xytext=(14, 2), textcoords="offset points")
        ax.set_xticks(range(len(systems)), [s.replace("_", " ") for s in systems])
        ratios = [f"ours/{label} {per[key]['median_of_rounds']:.2f}x" for key, label in
                  (("ours_over_sf", "SF"), ("ours_over_rllib", "RLlib"))
                  if per.get(key, {}).get("median_of_rounds")]
        ax.set_title(f"{net} network ({per[systems[0]]['params'][0]:,} params)\n"
                     + ", ".join(ratios) if per[systems[0]]["params"] else net, fontsize=10)
        ax.set_ylabel("env steps/s (steady state; median, min-max, rounds)")
    fig.suptitle(f"NetHackScore, 2 workers x {result['envs_per_worker']} envs, T=32, batch 1024; "
                 f"{result['rounds']} rounds x {result['seconds']:.0f} s, "
                 f"{result['machine']['cpus']} CPUs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=75.0, help="training time per run")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds not measured")
    parser.add_argument("--nets", nargs="+", default=list(NET_SIZES), choices=list(NET_SIZES))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--no-setup", action="store_true",
                        help="do not run bench/peers/setup.sh first")
    parser.add_argument("--envs", type=int, default=8,
                        help="envs per worker, for oniray and Sample Factory alike (results "
                             "go to peers.json at 8, else peers-e<envs>.json)")
    parser.add_argument("--oniray-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--net", default="reference", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.oniray_run:
        oniray_run(args.net, args.seconds, args.warmup, args.out, args.envs)
        return
    if args.envs != 8 and "rllib" in args.systems:
        parser.error("--envs other than 8 is for oniray and sample_factory (--systems)")
    stem = "peers" if args.envs == 8 else f"peers-e{args.envs}"

    peers = [s for s in args.systems if s != "oniray"]
    if peers and not args.no_setup:
        subprocess.run(["bash", str(HERE / "setup.sh")], check=True)
    log_dir = Path(tempfile.mkdtemp(prefix="oniray-peers-"))
    print(f"run logs: {log_dir}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    started = time.time()
    for rnd in range(1, args.rounds + 1):
        for net in args.nets:
            for system in args.systems:
                tag = f"r{rnd}-{net}-{system}"
                result = run_one(system, net, args, log_dir, tag)
                result["round"] = rnd
                runs.append(result)
                sps = result.get("sps")
                shown = f"{sps:,.0f}" if isinstance(sps, float) else "FAILED"
                print(f"[{time.time() - started:6.0f} s] round {rnd} {net:9s} {system:15s} "
                      f"{shown:>8} steps/s (params {result.get('params')}, "
                      f"load {result['load_avg_after']:.1f})", flush=True)
                if result.get("error_tail"):
                    print("    " + "\n    ".join(result["error_tail"]), flush=True)
    summary = summarise(runs, args.nets, args.systems)
    result = {
        "what": "steady-state env steps/s, same job and network per size; ratios are ours/theirs",
        "env": "NetHackScore-v0", "num_workers": 2, "envs_per_worker": args.envs,
        "fragment_length": 32, "batch_size": 1024, "epochs": 1,
        "rounds": args.rounds, "seconds": args.seconds, "warmup_s": args.warmup,
        "nets": args.nets, "systems": args.systems,
        "net_sizes": {n: vars(NET_SIZES[n]) for n in args.nets},
        "oniray_overrides": ONIRAY_OVERRIDES, "summary": summary, "runs": runs,
        "peer_install_seconds": install_seconds(), "machine": machine_info(),
        "total_wall_s": round(time.time() - started, 1), "log_dir": str(log_dir),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git_commit(),
    }
    result["history"] = previous_runs(RESULTS / f"{stem}.json")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / f"{stem}.png")
    for net in args.nets:
        per = summary[net]
        parts = [f"{s} {per[s]['median']:,.0f}" for s in args.systems if per[s]["median"]]
        ratios = [f"{k} {per[k]['median_of_rounds']:.2f}" for k in ("ours_over_sf",
                  "ours_over_rllib") if per.get(k, {}).get("median_of_rounds")]
        print(f"{net}: median steps/s {', '.join(parts)}; {', '.join(ratios)}; "
              f"params match: {per['params_match']}", flush=True)
    print(f"wrote {RESULTS / stem}.json and .png", flush=True)


if __name__ == "__main__":
    main()
