"""Smoke tier: a training run whose LLM judge goes down, fails in every way, and comes back.

The real ``oniray train`` CLI with the annotator on and the openai judge pointed at a local
fault server (``bench/judge_server.py``, 127.0.0.1). The server answers well at first, then
returns garbage, answers 500s, hangs past the client's timeout, is down (connections refused),
and finally answers well again. Training must go on throughout, the circuit breaker must open
and close by itself (gauge and log line), garbage must be counted and never labelled, and
labelling must resume on its own.

NetHackScore, not the corridor: the corridor shows two distinct messages, both labelled in the
first second, so there would be nothing left to label after the outage. NetHack keeps showing
new messages. The corridor config's small network keeps it fast.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from bench.judge_server import JudgeServer
from cluster.run_dir import RunDir
from rewards.judges.guard import screen

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
PHASE_S = 2.5  # each fault lasts this long
# Garbage first: once the breaker is open, later faults see only its occasional probe.
OUTAGE = ("garbage", "500", "hang", "down")
_CIRCUIT = re.compile(r'^oniray_judge_circuit_state\{[^}]*role="annotator"[^}]*\} (\S+)', re.M)
_GARBAGE = re.compile(
    r'^oniray_judge_request_failures_total\{[^}]*kind="garbage"[^}]*\} (\S+)', re.M
)


def run_args(out_dir: Path, name: str, judge_url: str, *extra: str) -> list[str]:
    """A small NetHack run with the annotator on, judged over HTTP; shared with the soak."""
    return [
        "configs/corridor.yaml", "env.id=NetHackScore-v0", f"run.out_dir={out_dir}",
        f"run.name={name}", "run.total_env_steps=100000000", "run.random_baseline_episodes=0",
        "run.report_every_s=1", "rollout.num_actors=1", "rollout.envs_per_actor=4",
        "learner.batch_size=128", "ray.num_cpus=3", "ray.object_store_mb=128",
        "rewards.annotator.enabled=true", "rewards.model.kind=retrieval",
        "rewards.intrinsic_coef=0.4", "rewards.judge.backend=openai",
        f"rewards.judge.openai.base_url={judge_url}", "rewards.judge.openai.timeout_s=1",
        "rewards.judge.max_retries=1", "rewards.judge.backoff_s=0.1",
        "rewards.judge.openai.breaker_failures=3", "rewards.judge.openai.breaker_cooldown_s=2",
        "metrics.scrape_every_s=0.5", *extra,
    ]


class Output:
    """Collects a subprocess's merged output in a thread (a full pipe would block it)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"never printed {pattern!r}:\n{self.text[-3000:]}")


def rows(run: RunDir) -> list[dict]:
    try:
        return run.read_metrics()
    except Exception:  # renamed into place atomically, but it may not exist yet
        return []


@pytest.mark.slow
def test_training_rides_out_a_judge_outage_and_labelling_resumes(tmp_path: Path) -> None:
    server = JudgeServer(mode="ok")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "train",
         *run_args(tmp_path, "outage", server.url, "run.max_minutes=3")],
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    out = Output(proc)
    run = RunDir(tmp_path / "outage")
    circuit: list[tuple[float, float]] = []  # (monotonic time, state)
    try:
        metrics_url = out.wait_for(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", 120).group(1)
        deadline = time.monotonic() + 90
        while not (rows(run) and (rows(run)[-1].get("labels_total") or 0) > 0):
            assert time.monotonic() < deadline and proc.poll() is None, out.text[-3000:]
            time.sleep(0.3)
        before = rows(run)

        def scrape() -> str:
            text = requests.get(metrics_url, timeout=2).text
            found = _CIRCUIT.search(text)
            if found:
                circuit.append((time.monotonic(), float(found.group(1))))
            return text

        outage_start = time.time()
        for mode in OUTAGE:
            server.set_mode(mode)
            phase_end = time.monotonic() + PHASE_S
            while time.monotonic() < phase_end:
                scrape()
                time.sleep(0.25)
        outage_end, back = time.time(), time.monotonic()
        during = rows(run)[len(before):]
        server.set_mode("ok")
        labels_at_end_of_outage = rows(run)[-1]["labels_total"]
        deadline = time.monotonic() + 30
        while True:  # until labelling resumed and the breaker reads closed again
            text = scrape()
            resumed = rows(run)[-1]["labels_total"] > labels_at_end_of_outage
            if resumed and circuit and circuit[-1][1] == 0:
                break
            assert time.monotonic() < deadline, (circuit[-10:], rows(run)[-1], out.text[-3000:])
            time.sleep(0.25)
        garbage = _GARBAGE.search(text)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()
    assert proc.returncode == 0, out.text[-3000:]

    # Training went on: SPS during the outage stays near SPS before it.
    sps_before = sum(r["sps"] for r in before[-5:]) / len(before[-5:])
    sps_during = sum(r["sps"] for r in during) / len(during)
    assert len(during) >= 0.6 * len(OUTAGE) * PHASE_S  # a report every second, none stalled
    assert sps_during > 0.5 * sps_before, (sps_before, [r["sps"] for r in during])

    # The breaker opened during the outage and closed by itself after it.
    opened = [t for t, state in circuit if state == 2 and t < back]
    closed_after = [t for t, state in circuit if state == 0 and t > back]
    assert opened and closed_after, circuit
    assert "circuit open after" in out.text and "circuit closed, the server answers" in out.text

    # Garbage was counted, never labelled: no label in the store is from the outage.
    assert server.answers["garbage"] > 0
    assert garbage is not None and float(garbage.group(1)) > 0
    labels = pq.read_table(run.labels).to_pylist()
    grace = 1.5  # a batch answered just before the switch is stored a moment later
    # Captions the guard answers itself (an engraving read aloud, ...) never reach the judge,
    # so they are labelled through the outage too; every other label waits for the judge.
    asked = [r for r in labels if screen(r["caption"]).blocked is None]
    assert not [r for r in asked if outage_start + grace < r["time"] < outage_end]
    assert any(r["time"] > outage_end for r in labels)  # labelling resumed by itself

    summary = run.summary.read_text()
    assert '"failed": false' in summary
    print(f"breaker closed {closed_after[0] - back:.1f} s after the judge came back; labels "
          f"{labels_at_end_of_outage:.0f} at the end of the outage, "
          f"{rows(run)[-1]['labels_total']:.0f} at the end; SPS {sps_before:.0f} before, "
          f"{sps_during:.0f} during; answers by mode {dict(server.answers)}")
