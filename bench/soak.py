"""Fault-injection soak: a training run whose parts are killed at random, then an audit.

    python bench/soak.py [--minutes 15] [--seed 0] [--faults-per-kind N] [--out PATH]
                                                                            (or: make soak)

Runs ``oniray train`` (NetHackScore with the corridor config's small network, one rollout
actor, the annotator on, the openai judge against ``bench/judge_server.py`` in a subprocess on
127.0.0.1) and, at random times, kills with SIGKILL: a rollout actor's process, the
annotator's process (the driver restarts both), and the judge server (restarted here on the
same port after a few seconds). At the end it checks:

* accounting: env steps produced = trained + dropped (summary.json);
* labels: the store reopened from disk holds every label the run reported (labels_total of
  the last metrics row), each caption once;
* recovery: SPS in the window after each fault is at least half of SPS before it;
* resume: ``oniray train --resume`` continues from the newest checkpoint and finishes.

Writes ``bench/results/soak.json`` (``ok`` is true when every check passed); exit code 0 iff ok.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.run_dir import RunDir  # noqa: E402
from rewards.label_store import LabelStore  # noqa: E402

RESULTS = REPO / "bench" / "results"
KINDS = ("rollout", "annotator", "judge")
ACTOR_NAMES = {"rollout": "ray::RolloutActor", "annotator": "ray::AnnotatorActor"}
STARTUP_S = 15.0  # no fault before training has settled
WINDOW_S = 12.0  # SPS is compared over this long before and after a fault
RECOVERY_GRACE_S = 8.0  # ... after the fault, skipping the restart itself
JUDGE_DOWN_S = 5.0


def train_args(out_dir: Path, name: str, judge_url: str, minutes: float) -> list[str]:
    return [
        "configs/corridor.yaml", "env.id=NetHackScore-v0", f"run.out_dir={out_dir}",
        f"run.name={name}", "run.total_env_steps=1000000000", f"run.max_minutes={minutes}",
        "run.random_baseline_episodes=0", "run.report_every_s=1",
        "run.checkpoint_every_updates=50", "rollout.num_actors=1", "rollout.envs_per_actor=4",
        "learner.batch_size=128", "ray.num_cpus=3", "ray.object_store_mb=128",
        "rewards.annotator.enabled=true", "rewards.model.kind=retrieval",
        "rewards.intrinsic_coef=0.4", "rewards.judge.backend=openai",
        f"rewards.judge.openai.base_url={judge_url}", "rewards.judge.openai.timeout_s=2",
        "rewards.judge.max_retries=1", "rewards.judge.backoff_s=0.1",
        "rewards.judge.openai.breaker_failures=3", "rewards.judge.openai.breaker_cooldown_s=2",
    ]


class JudgeProcess:
    """bench/judge_server.py in a subprocess, so that it can be killed like a real server."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port, self.proc = workdir, 0, None
        self.start()

    def start(self) -> None:
        port_file = self.workdir / "judge.port"
        port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "judge_server.py"), "--port", str(self.port),
             "--port-file", str(port_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError("the judge server did not start")
            time.sleep(0.1)
        self.port = int(port_file.read_text())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


class Run:
    """The training subprocess, its output, and its metrics rows stamped with wall time."""

    def __init__(self, args: list[str], run_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "train", *args], cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.run = RunDir(run_dir)
        self.lines: list[str] = []
        self.rows: list[tuple[float, dict[str, Any]]] = []  # (wall time first seen, row)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def poll_rows(self) -> None:
        try:
            rows = self.run.read_metrics()
        except Exception:  # not written yet
            return
        now = time.time()
        self.rows += [(now, row) for row in rows[len(self.rows):]]

    def actor_pid(self, kind: str) -> int | None:
        name = ACTOR_NAMES[kind]
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        for proc in tree:
            try:
                if " ".join(proc.cmdline()).startswith(name):
                    return proc.pid
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return None


def sps_around(rows: list[tuple[float, dict]], at: float) -> tuple[float | None, float | None]:
    before = [r["sps"] for t, r in rows if at - WINDOW_S <= t < at]
    after = [r["sps"] for t, r in rows
             if at + RECOVERY_GRACE_S <= t < at + RECOVERY_GRACE_S + WINDOW_S]
    return _mean(before), _mean(after)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def soak(minutes: float, *, seed: int, faults_per_kind: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    judge = JudgeProcess(workdir)
    run_dir = workdir / "runs" / "soak"
    run = Run(train_args(workdir / "runs", "soak", judge.url, minutes), run_dir)
    span = minutes * 60 - STARTUP_S - WINDOW_S - RECOVERY_GRACE_S
    schedule = sorted(
        (STARTUP_S + rng.uniform(0, span), kind) for kind in KINDS for _ in range(faults_per_kind)
    )
    faults: list[dict[str, Any]] = []
    started = None
    try:
        while run.proc.poll() is None:
            run.poll_rows()
            if started is None and run.rows:
                started = time.time()  # fault times count from the first metrics row
            if started is not None and schedule and time.time() - started >= schedule[0][0]:
                _, kind = schedule.pop(0)
                faults.append(inject(kind, run, judge))
            time.sleep(0.5)
        run.proc.wait()
        run.poll_rows()
    finally:
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGTERM)
            run.proc.wait(timeout=120)
        judge_url = judge.url
    summary = json.loads(run.run.summary.read_text()) if run.run.summary.exists() else {}
    rows = [r for _, r in run.rows]

    for fault in faults:
        fault["sps_before"], fault["sps_after"] = sps_around(run.rows, fault["time"])
        fault["recovered"] = bool(
            fault["sps_before"] and fault["sps_after"]
            and fault["sps_after"] >= 0.5 * fault["sps_before"]
        )
    store = LabelStore(run_dir / "labels")
    captions = store.labels().column("caption").to_pylist()
    labels_reported = rows[-1].get("labels_total") if rows else None
    checks = {
        "run_exit_code_0": run.proc.returncode == 0,
        "every_fault_injected": not schedule and all(f["injected"] for f in faults),
        "accounting": bool(summary) and summary["env_steps"]
        == summary["env_steps_trained"] + summary["env_steps_dropped"],
        "labels_in_store": labels_reported is not None and len(store) >= labels_reported,
        "labels_unique": len(captions) == len(set(captions)),
        "sps_recovered": all(f["recovered"] for f in faults),
    }
    resume = resume_run(run_dir, summary, judge_url) if summary else {"ok": False}
    judge.stop()
    checks["resume"] = resume["ok"]
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "minutes": minutes,
        "seed": seed,
        "faults": faults,
        "summary": summary,
        "labels_total_reported": labels_reported,
        "labels_in_store": len(store),
        "resume": resume,
        "output_tail": "".join(run.lines[-40:]),
    }


def inject(kind: str, run: Run, judge: JudgeProcess) -> dict[str, Any]:
    fault: dict[str, Any] = {"kind": kind, "time": time.time(), "injected": False}
    if kind == "judge":
        judge.kill()
        fault.update(injected=True, down_s=JUDGE_DOWN_S)
        # Back on the same port a little later, from a thread: the loop keeps stamping rows.
        threading.Timer(JUDGE_DOWN_S, judge.start).start()
        return fault
    pid = run.actor_pid(kind)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        fault.update(injected=True, pid=pid)
    return fault


def resume_run(run_dir: Path, summary: dict[str, Any], judge_url: str) -> dict[str, Any]:
    """``oniray train --resume`` for a little more: it must continue from the checkpoint."""
    target = summary["env_steps"] + 3000
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "train", "--resume", str(run_dir),
         f"run.total_env_steps={target}", "run.max_minutes=3",
         f"rewards.judge.openai.base_url={judge_url}"],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )
    after = json.loads((run_dir / "summary.json").read_text())
    found = re.search(r"resumed at ([\d,]+) env steps", done.stdout)
    return {
        "ok": done.returncode == 0 and found is not None and after["env_steps"] >= target,
        "exit_code": done.returncode,
        "resumed_at": int(found.group(1).replace(",", "")) if found else None,
        "env_steps_after": after["env_steps"],
        "accounting_after": after["env_steps"]
        == after["env_steps_trained"] + after["env_steps_dropped"],
        "output_tail": (done.stdout + done.stderr)[-2000:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults-per-kind", type=int, default=None,
                        help="default: one per kind per 5 minutes, at least one")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the run folder goes; default a fresh temporary folder")
    args = parser.parse_args(argv)
    per_kind = args.faults_per_kind or max(1, int(args.minutes // 5))
    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="oniray-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = soak(args.minutes, seed=args.seed, faults_per_kind=per_kind, workdir=workdir)
    result["workdir"] = str(workdir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps({"ok": result["ok"], "checks": result["checks"]}, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
