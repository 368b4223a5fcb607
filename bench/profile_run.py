"""Where the time goes: a sampling profile of every process of a training run, by component.

    python bench/profile_run.py [--jobs keyroom-s5 nethack-score] [--warmup 30] [--seconds 60]
                            [--rate 25] [--native learner] [--out bench/results/profile.json]

Consumes: the two jobs' configs (``configs/minihack/keyroom_s5.yaml``, the default job, and
``configs/default.yaml``, NetHackScore) and ``py-spy`` (PyPI; ``pip install py-spy``), which
must be able to read other processes' memory (root, or ptrace allowed). For each job, one
after the other, it starts ``oniray train`` in a subprocess (a throwaway run folder, no random
baseline, no metrics endpoint), finds the run's processes by their titles (``ray::RolloutActor``,
``ray::LearnerActor``, ``ray::AnnotatorActor``, and the driver, the ``oniray train`` process
itself), waits ``--warmup`` seconds, then records each of them with ``py-spy record --format raw``
for ``--seconds`` seconds, all at once (``--nonblocking``; the roles in ``--native`` with native
frames, which py-spy can only sample by pausing the process), and stops the run. Before each
job it waits (``--quiet-wait``) for other processes on the machine to go quiet, and redoes a
job whose window they disturbed (``--attempts``).

Emits ``bench/results/profile.json`` (one entry per job, merged into the file, so ``--jobs`` can
redo one) and ``profile.png``. Per process: its CPU share over the window (all its threads, from
``/proc``: psutil's CPU times, plus the run-queue wait from ``schedstat``), and the py-spy samples
of its Python threads grouped into components (env step, observation encoding, Arrow fragment
building, policy inference, learner forward/backward/optimizer, V-trace, reward-model scoring,
weight publishing, object store get/put, ...). py-spy samples only threads that are running or
runnable, and stacks blocked in a wait are counted apart (``waiting_samples``), so idle time is
not in the components: it is what the CPU share leaves. Also per job: the
machine's CPU split between the run's processes, Ray's own daemons, the profilers and anything
else on the machine, and the run's SPS during the window and before it.

Then, in this process on one torch thread (``microbench``; ``--micro skip`` leaves it out): the
inputs of two candidate changes, policy inference per env step at E = 8 to 64 envs per call,
and fp32 against bf16 autocast for inference and for one learner update.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder is sys.path[0], and the file's name would shadow the
# standard library's `profile` (which cProfile, imported by torch, needs).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from bench.runs import git_commit  # noqa: E402
from cluster.config import load_config  # noqa: E402

RESULTS = REPO / "bench" / "results"
JOBS = {
    "keyroom-s5": "configs/minihack/keyroom_s5.yaml",  # the default job (`make train`)
    "nethack-score": "configs/default.yaml",
}
ROLE_TITLES = {  # process title prefix -> role
    "ray::RolloutActor": "rollout",
    "ray::LearnerActor": "learner",
    "ray::AnnotatorActor": "annotator",
}
PROGRESS = re.compile(r"^\[(\d+):(\d+):(\d+)\] steps\s+([\d,]+) \| sps\s+([\d,]+)")
PIDS_LINE = re.compile(r"processes: (.*)$")


# ---- component groups ----------------------------------------------------------------------
# A rule: (component, conditions); a stack belongs to the first rule (in order) whose every
# condition (file substring, function regex) matches some frame of it. Specific rules first.
Cond = tuple[str, str]
Rule = tuple[str, tuple[Cond, ...]]

ENV_STEP = "env step (NLE)"
ENV_RESET = "env reset (NLE)"
ENCODE = "observation encoding"
ARROW = "Arrow fragment building"
INFERENCE = "policy inference (torch)"
WEIGHT_LOAD = "weight fetch + load"
PUBLISH = "weight publishing"
OBJECT_STORE = "object store get/put"
RAY = "Ray runtime (task loop, RPC)"
METRICS = "metrics (Prometheus, TensorBoard)"

_RAY_GET = ("ray/_private/worker.py", r"^(get|get_objects|wait)$")
_RAY_PUT = ("ray/_private/worker.py", r"^(put|put_object)$")
_COMMON: tuple[Rule, ...] = (
    (METRICS, (("prometheus_client/", r""),)),
    (METRICS, (("/metrics.py", r""),)),
    (METRICS, (("tensorboard", r""),)),
    (OBJECT_STORE, (_RAY_GET,)),
    (OBJECT_STORE, (_RAY_PUT,)),
    (OBJECT_STORE, (("ray/_private/serialization.py", r""),)),
    (RAY, (("ray/", r""),)),
    ("garbage collection / interpreter", (("<", r""),)),
)
RULES: dict[str, tuple[Rule, ...]] = {
    "rollout": (
        (WEIGHT_LOAD, (("actors/rollout_worker.py", r"^set_weights$"),)),
        (WEIGHT_LOAD, (("actors/rollout_actor.py", r"^sample$"), _RAY_GET)),
        ("caption extraction (Arrow)", (("actors/fragment.py", r"^step_captions$"),)),
        (ENCODE, (("actors/envs.py", r"^(encode|decode_message)$"),)),
        (ENCODE, (("actors/rollout_worker.py", r"^_count_message$"),)),
        (INFERENCE, (("actors/rollout_worker.py", r"^(_act|_cut_off_values)$"),)),
        (ENV_RESET, (("actors/rollout_worker.py", r"^(_finish_episode|_start_episode)$"),)),
        (ENV_STEP, (("actors/rollout_worker.py", r"^_step_env$"),)),
        (ARROW, (("actors/fragment.py", r""),)),
        (ARROW, (("actors/rollout_worker.py", r"^_put_obs$"),)),
        *_COMMON,
        ("rollout loop (Python, numpy)", (("actors/rollout_worker.py", r"^sample$"),)),
    ),
    "learner": (
        (PUBLISH, (("learner/learner_group.py", r"^_publish$"),)),
        ("reward-model fetch + load", (("learner/intrinsic.py", r"^set_model$"),)),
        (OBJECT_STORE + " (fragments, reward model)",
         (("learner/learner_group.py", r"^update$"), _RAY_GET)),
        ("RND", (("rewards/rnd.py", r""),)),
        ("reward-model scoring", (("rewards/scoring.py", r""),)),
        ("reward-model scoring", (("rewards/models/", r""),)),
        ("reward-model scoring", (("learner/intrinsic.py", r""),)),
        ("batch assembly (Arrow -> tensors)", (("learner/batch.py", r""),)),
        ("V-trace", (("learner/vtrace.py", r""),)),
        ("learner optimizer (clip + Adam)", (("torch/optim/", r""),)),
        ("learner optimizer (clip + Adam)", (("torch/nn/utils/clip_grad", r""),)),
        ("learner backward", (("torch/_tensor.py", r"^backward$"),)),
        ("learner backward", (("torch/autograd/", r""),)),
        ("learner forward", (("actors/model.py", r""),)),
        ("losses + reward mixing", (("learner/losses.py", r""),)),
        ("losses + reward mixing", (("rewards/combine.py", r""),)),
        *_COMMON,
        ("learner step (other)", (("learner/appo.py", r""),)),
        ("learner step (other)", (("learner/", r""),)),
    ),
    "annotator": (
        ("reward-model publishing", (("rewards/annotator_actor.py", r"^reward_model_ref$"),)),
        ("reward-model fit", (("rewards/annotator.py", r"^(run_trainer|retrain)$"),)),
        ("reward-model fit", (("rewards/models/", r""),)),
        ("judge (embedding model)", (("rewards/judges/", r""),)),
        ("judge (embedding model)", (("sentence_transformers/", r""),)),
        ("label store", (("rewards/label_store.py", r""),)),
        ("caption intake", (("rewards/annotator_actor.py", r"^submit_captions$"),)),
        ("caption intake", (("rewards/annotator.py", r"^(submit|_enqueue|_note_queue)$"),)),
        *_COMMON,
        ("annotator loop (other)", (("rewards/", r""),)),
    ),
    "driver": (
        ("checkpointing", (("cluster/checkpointing.py", r""),)),
        ("checkpointing", (("cluster/run_dir.py", r"^(save_checkpoint|atomic_write_bytes)$"),)),
        (METRICS, (("cluster/run_dir.py", r"^write_metrics$"),)),
        ("checkpointing", (("torch/serialization.py", r""),)),
        ("progress, report", (("cluster/progress.py", r""),)),
        ("progress, report", (("cluster/report.py", r""),)),
        ("progress, report", (("cluster/summary.py", r""),)),
        (METRICS, (("cluster/telemetry.py", r""),)),
        ("remote calls (task submission)", (("ray/actor.py", r""),)),
        ("remote calls (task submission)", (("ray/remote_function.py", r""),)),
        (OBJECT_STORE + " / wait", (_RAY_GET,)),
        *_COMMON,
        ("run loop (scheduling, bookkeeping)", (("cluster/", r""),)),
    ),
}


@dataclass(frozen=True)
class Frame:
    func: str
    file: str
    native: bool


def parse_frame(text: str) -> Frame:
    """``func (file:line)`` (Python) or ``func (lib.so)`` / ``func (file.cc:line)`` (native)."""
    cut = text.rfind(" (")
    if cut < 0 or not text.endswith(")"):
        return Frame(text, "", True)
    func, where = text[:cut], text[cut + 2 : -1]
    head, _, tail = where.rpartition(":")
    file = head if tail.isdigit() else where
    return Frame(func, file, not file.endswith(".py") and not file.startswith("<"))


def read_raw(path: Path) -> list[tuple[str, list[Frame], int]]:
    """py-spy's raw (collapsed) format: ``thread (tid);outer;...;inner count`` per line."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        parts = body.split(";")
        thread = parts[0] if parts[0].startswith("thread ") else ""
        frames = [parse_frame(p) for p in (parts[1:] if thread else parts)]
        stacks.append((thread, frames, int(count)))
    return stacks


# A thread blocked here is waiting, not working, whatever py-spy reports: in --native mode
# (which pauses the process) py-spy counts such threads as active.
WAITING = "waiting (blocked)"
_WAIT_PY = re.compile(r"(^|\.)(wait|main_loop|select|poll|sleep|join|_wait_for_tstate_lock|"
                      r"acquire|get|_recv|recv|epoll)$")
_WAIT_PY_FILES = ("threading.py", "selectors.py", "queue.py", "ray/_private/worker.py",
                  "multiprocessing/", "socket.py", "ssl.py")
_WAIT_NATIVE = re.compile(r"epoll_wait|poll|select|pthread_cond_.*wait|futex|nanosleep|"
                          r"sem_.*wait|__lll_lock_wait|do_futex|clock_nanosleep|"
                          r"PyThread_acquire_lock|take_gil")


def waiting(frames: list[Frame]) -> bool:
    """Whether the thread is blocked: the innermost native frames (unnamed ones skipped) are a
    blocking call (a lock, a condition, the GIL, epoll), or, with no native frames below it,
    the innermost Python frame is a wait (``ray.get`` and Ray's task loop included)."""
    named = [f for f in frames if not f.func.startswith("0x")]
    py = [f for f in named if not f.native]
    below = named[named.index(py[-1]) + 1:] if py else named
    if below:
        return any(_WAIT_NATIVE.search(f.func) for f in below[-3:])
    if not py:
        return False
    inner = py[-1]
    return bool(_WAIT_PY.search(inner.func)) and any(t in inner.file for t in _WAIT_PY_FILES)


def classify(role: str, frames: list[Frame], compiled: dict[str, list]) -> str:
    if not frames:  # a thread Python knows of, running native code only (Ray's own)
        return "no Python frame (native thread)"
    if waiting(frames):
        return WAITING
    for label, conds in compiled[role]:
        if all(any(f.file.find(sub) >= 0 and rx.search(f.func) for f in frames)
               for sub, rx in conds):
            return label
    return "other"


def _compiled() -> dict[str, list]:
    """The rules' regexes; ``^name$`` also matches a method ``Class.name``."""
    def rx(pattern: str) -> re.Pattern[str]:
        return re.compile(r"(^|\.)" + pattern[1:] if pattern.startswith("^") else pattern)

    return {role: [(label, [(sub, rx(pat)) for sub, pat in conds]) for label, conds in rules]
            for role, rules in RULES.items()}


def _leaf(frames: list[Frame], *, native: bool) -> str:
    """The innermost frame (Python only, or any), shortened to function + file's tail."""
    for f in reversed(frames):
        if native or not f.native:
            func = re.sub(r"<[^<>]*>", "<>", f.func) if f.native else f.func  # templates
            return f"{func[:100]} ({'/'.join(f.file.split('/')[-2:])})"
    return "?"


def breakdown(role: str, raw: Path, *, rate: float, seconds: float, main_tid: int,
              native: bool) -> dict:
    """Samples of one process by component, by thread, and its top innermost functions."""
    compiled = _compiled()
    groups: Counter[str] = Counter()
    threads: Counter[str] = Counter()  # working samples by thread
    thread_waits: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    native_leaves: Counter[str] = Counter()
    for thread, frames, count in read_raw(raw):
        group = classify(role, frames, compiled)
        m = re.match(r"thread \((\d+)\)(?::\s*(.*))?", thread)
        tid, tname = (int(m.group(1)), m.group(2) or "") if m else (-1, thread)
        thread = "main" if tid == main_tid else (tname or str(tid))
        if group == WAITING:
            thread_waits[thread] += count
            continue
        groups[group] += count
        threads[thread] += count
        leaves[_leaf(frames, native=False)] += count
        if native:
            native_leaves[_leaf(frames, native=True)] += count
    total = sum(groups.values())

    def pct(counter: Counter[str], top: int | None = None) -> dict[str, float]:
        return {k: round(100 * v / max(total, 1), 1) for k, v in counter.most_common(top)}

    ticks = rate * seconds
    return {
        "samples": total,
        "waiting_samples": sum(thread_waits.values()),
        "components_pct": pct(groups),
        # Share of the window each Python thread was running or runnable (py-spy's view),
        # its waits left out.
        "thread_working_pct_of_window": {k: round(100 * v / ticks, 1)
                                         for k, v in threads.most_common(6)},
        "top_functions_pct": pct(leaves, 12),
        **({"top_native_functions_pct": pct(native_leaves, 12)} if native_leaves else {}),
    }


# ---- processes and their CPU ---------------------------------------------------------------
def role_of(proc: psutil.Process, driver_pid: int) -> str:
    if proc.pid == driver_pid:
        return "driver"
    try:
        title = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    for prefix, role in ROLE_TITLES.items():
        if title.startswith(prefix):
            return role
    return "ray-idle-worker" if title.startswith("ray::IDLE") else "ray-system"


def tree(driver: psutil.Process) -> list[psutil.Process]:
    try:
        return [driver, *driver.children(recursive=True)]
    except psutil.Error:
        return [driver]


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds on a CPU and waiting in a run queue, summed over the process's threads."""
    run = wait = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return run, wait
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        run += int(fields[0]) / 1e9
        wait += int(fields[1]) / 1e9
    return run, wait


def cpu_seconds(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


def all_cpu() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds."""
    out = {}
    for p in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is None:
            continue
        cmd = p.info["cmdline"] or [p.info["name"] or "?"]
        name = " ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd[:4]))
        out[p.pid] = (name[:80], t.user + t.system)
    return out


def foreign_cpu_pct(exclude: set[int], seconds: float = 5.0) -> tuple[float, dict[str, float]]:
    """CPU (% of one core) of processes not in ``exclude`` (nor this one) over ``seconds``."""
    before = all_cpu()
    time.sleep(seconds)
    after = all_cpu()
    mine = {os.getpid(), *exclude}
    per: dict[str, float] = defaultdict(float)
    for pid, (name, t) in after.items():
        if pid in mine or pid not in before:
            continue
        per[name] += 100 * (t - before[pid][1]) / seconds
    total = sum(per.values())
    return total, {k: round(v, 1) for k, v in sorted(per.items(), key=lambda kv: -kv[1])
                   if v >= 5}


def wait_for_quiet(limit_s: float, threshold: float) -> dict[str, Any]:
    """Waits (at most ``limit_s``) until other processes use under ``threshold`` % of a core."""
    started = time.monotonic()
    while True:
        load, top = foreign_cpu_pct(set())
        if load < threshold or time.monotonic() - started > limit_s:
            return {"foreign_cpu_pct": round(load, 1), "waited_s": round(time.monotonic()
                                                                         - started),
                    "top": top}
        print(f"  machine busy ({load:.0f}% of a core elsewhere: {top}); waiting", flush=True)
        time.sleep(10)


# ---- one job ------------------------------------------------------------------------------
@dataclass
class Progress:
    """The run's progress lines, with the wall time each arrived."""

    lines: list[tuple[float, int]] = field(default_factory=list)  # (time, env steps)
    pids: dict[int, str] = field(default_factory=dict)  # pid -> component name from the log
    tail: list[str] = field(default_factory=list)

    def follow(self, stream: Any) -> None:
        for line in stream:
            self.tail = [*self.tail[-40:], line.rstrip()]
            if m := PROGRESS.match(line):
                self.lines.append((time.time(), int(m.group(4).replace(",", ""))))
            elif m := PIDS_LINE.search(line):
                for item in m.group(1).split():
                    name, _, pid = item.partition("=")
                    if pid.isdigit():
                        self.pids[int(pid)] = name

    def sps(self, start: float, end: float) -> float | None:
        inside = [(t, s) for t, s in self.lines if start <= t <= end]
        if len(inside) < 2:
            return None
        (t0, s0), (t1, s1) = inside[0], inside[-1]
        return round((s1 - s0) / (t1 - t0))


def find_processes(driver: psutil.Process, expected: dict[str, int],
                   timeout: float) -> dict[str, list[psutil.Process]]:
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, list[psutil.Process]] = defaultdict(list)
        for p in tree(driver):
            found[role_of(p, driver.pid)].append(p)
        if all(len(found[r]) >= n for r, n in expected.items()):
            return found
        if time.monotonic() > deadline or not driver.is_running():
            raise RuntimeError(f"run's processes not found: expected {expected}, found "
                               f"{ {r: len(ps) for r, ps in found.items()} }")
        time.sleep(1)


def native_ok(pyspy: str, pid: int) -> bool:
    """Whether py-spy can unwind native frames of this process here."""
    try:
        r = subprocess.run([pyspy, "dump", "--native", "--pid", str(pid)], capture_output=True,
                           text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and "Thread" in r.stdout


def profile_job(job: str, args: argparse.Namespace, pyspy: str, folder: Path) -> dict[str, Any]:
    config = JOBS[job]
    budget_min = (args.warmup + args.seconds) / 60 + 2.0  # stopped early, once measured
    overrides = [f"run.max_minutes={budget_min:.2f}", "run.random_baseline_episodes=0",
                 "metrics.enabled=false", f"run.out_dir={folder}", f"run.name=profile-{job}"]
    cfg = load_config(REPO / config, overrides)
    expected = {"driver": 1, "rollout": cfg.rollout.num_actors, "learner": cfg.learner.num_learners,
                **({"annotator": 1} if cfg.rewards.annotator.enabled else {})}
    quiet = wait_for_quiet(args.quiet_wait, args.quiet_threshold)
    print(f"{job}: oniray train {config} {' '.join(overrides)}", flush=True)
    oniray = shutil.which("oniray") or str(Path(sys.executable).with_name("oniray"))
    proc = subprocess.Popen(
        [oniray, "train", config, *overrides], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=True,
    )
    progress = Progress()
    reader = threading.Thread(target=progress.follow, args=(proc.stdout,), daemon=True)
    reader.start()
    try:
        driver = psutil.Process(proc.pid)
        found = find_processes(driver, expected, timeout=args.start_timeout)
        found_at = time.time()
        while not progress.pids and time.time() < found_at + 30:  # the driver's pid line
            time.sleep(0.5)
        targets: list[tuple[str, str, psutil.Process]] = []
        counters: Counter[str] = Counter()
        for role in ("rollout", "learner", "annotator", "driver"):
            for p in sorted(found.get(role, []), key=lambda p: p.pid):
                name = progress.pids.get(p.pid) or (
                    role if role in ("driver", "annotator") else f"{role}-{counters[role]}")
                counters[role] += 1
                targets.append((name, role, p))
        native_roles = {r for r in args.native if r in expected}
        native = {name: role in native_roles and native_ok(pyspy, p.pid)
                  for name, role, p in targets}
        time.sleep(max(0.0, found_at + args.warmup - time.time()))

        # The window: every process recorded at once; CPU times at both ends.
        run_pids = {p.pid for p in tree(driver)}
        before_all = all_cpu()
        before = {name: (cpu_seconds(p), schedstat(p.pid)) for name, _, p in targets}
        machine_before = psutil.cpu_times()
        children_before = os.times()
        start = time.time()
        spies = {}
        for name, _, p in targets:
            rate = args.native_rate if native[name] else args.rate
            cmd = [pyspy, "record", "--pid", str(p.pid), "--duration", str(args.seconds),
                   "--rate", str(rate), "--format", "raw", "--threads", "--full-filenames",
                   "--output", str(folder / f"{job}-{name}.txt")]
            cmd += ["--native"] if native[name] else ["--nonblocking"]
            spies[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, text=True), rate)
        errors = {}
        for name, (spy, _) in spies.items():
            _, err = spy.communicate(timeout=args.seconds + 120)
            if spy.returncode != 0:
                errors[name] = err.strip()[-300:]
        end = time.time()
        wall = end - start
        children_after = os.times()
        machine_after = psutil.cpu_times()
        after = {name: (cpu_seconds(p), schedstat(p.pid)) for name, _, p in targets}
        after_all = all_cpu()
        sps_window = progress.sps(start, end)
        sps_before = progress.sps(found_at + 10, start)
    finally:
        stop(proc)
    reader.join(timeout=10)

    processes = {}
    for name, role, p in targets:
        (c0, (r0, w0)), (c1, (r1, w1)) = before[name], after[name]
        entry: dict[str, Any] = {
            "role": role, "pid": p.pid, "native": native[name],
            "cpu_pct_of_core": None if c0 is None or c1 is None else round(100 * (c1 - c0) / wall,
                                                                           1),
            "runqueue_wait_pct": round(100 * (w1 - w0) / wall, 1),
            "on_cpu_pct_schedstat": round(100 * (r1 - r0) / wall, 1),
        }
        raw = folder / f"{job}-{name}.txt"
        if raw.exists():
            entry.update(breakdown(role, raw, rate=spies[name][1], seconds=args.seconds,
                                   main_tid=p.pid, native=native[name]))
            if args.keep_raw:
                args.keep_raw.mkdir(parents=True, exist_ok=True)
                shutil.copy(raw, args.keep_raw / raw.name)
        if name in errors:
            entry["py_spy_error"] = errors[name]
        processes[name] = entry

    # The machine's two cores over the window: the run's roles, Ray's daemons, the profilers,
    # everything else.
    def delta(pid: int) -> float:
        if pid not in before_all or pid not in after_all:
            return 0.0
        return after_all[pid][1] - before_all[pid][1]

    split: Counter[str] = Counter()
    names = {p.pid: name for name, _, p in targets}
    for pid in after_all:
        if pid in names:
            split[next(r for n, r, _ in targets if n == names[pid])] += delta(pid)
        elif pid in run_pids:
            split["ray daemons and idle workers"] += delta(pid)
        elif pid != os.getpid():
            split["other processes on the machine"] += delta(pid)
    split["py-spy (the profilers)"] += ((children_after.children_user
                                         + children_after.children_system)
                                        - (children_before.children_user
                                           + children_before.children_system))
    busy = sum(getattr(machine_after, f) - getattr(machine_before, f)
               for f in ("user", "system", "nice", "irq", "softirq", "steal"))
    # Processes that started or ended inside the window, and the kernel's own work.
    split["unattributed (short-lived processes, kernel)"] = max(0.0, busy - sum(split.values()))
    cores = psutil.cpu_count() or 1
    return {
        "config": config,
        "overrides": overrides,
        "window_s": round(wall, 1),
        "warmup_s": args.warmup,
        "sps_in_window": sps_window,
        "sps_before_window": sps_before,
        "quiet_check_before_start": quiet,
        "cpu_pct_of_one_core": {k: round(100 * v / wall, 1) for k, v in split.most_common()},
        "machine_busy_pct": round(100 * busy / (wall * cores), 1),
        "cores": cores,
        "processes": processes,
    }


def stop(proc: subprocess.Popen) -> None:
    """SIGINT (the run's own graceful stop), then SIGTERM, then SIGKILL of its session."""
    for sig, wait in ((signal.SIGINT, 90), (signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)  # the run's session: the driver and its Ray daemons
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


# ---- the candidate changes' inputs, measured in this process ---------------------------------
def _median_interleaved(calls: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds per call of each callable, the callables taking turns (machine drift
    hits all alike)."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def microbench(config: str, *, batches: list[int], repeats: int) -> dict[str, Any]:
    """On one torch thread (as the actors and the learner run): policy inference per env step
    at several batch sizes E, and fp32 against bf16 autocast for inference (E = 8) and for one
    learner update (the config's batch). A bf16 run that fails records its error."""
    import numpy as np
    import torch

    from actors.envs import ObsEncoder, make_env
    from actors.model import PolicyNet
    from learner.appo import Learner
    from learner.batch import make_batch
    from tests.helpers.fragments import make_fragment

    torch.set_num_threads(1)
    before, started = all_cpu(), time.monotonic()
    cfg = load_config(REPO / config, [])
    env = make_env(cfg.env.id)
    obs, _ = env.reset(seed=0)
    num_actions = int(env.action_space.n)
    env.close()
    net = PolicyNet(cfg.model, crop_size=cfg.env.crop_size, num_actions=num_actions)

    def act(e: int, bf16: bool = False) -> Any:
        inputs = ObsEncoder(cfg.env.crop_size).encode([obs] * e).policy_inputs()
        first, state = np.zeros(e, bool), net.initial_state(e)

        def call() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                net.act(inputs, first, state)
        call()  # warm-up
        return call

    per_call = _median_interleaved({str(e): act(e) for e in batches}, repeats)
    out: dict[str, Any] = {
        "cpu_flags_bf16": sorted({f for f in Path("/proc/cpuinfo").read_text().split()
                                  if "bf16" in f or f.startswith("amx")}),
        "inference_us_per_step_fp32": {e: round(1e6 * t / int(e), 1) for e, t in per_call.items()},
    }
    try:
        pair = _median_interleaved({"fp32": act(8), "bf16": act(8, bf16=True)}, repeats)
        out["inference_e8_ms_per_call"] = {k: round(1e3 * v, 3) for k, v in pair.items()}
    except Exception as exc:  # the error is the result
        out["inference_e8_ms_per_call"] = {"bf16_error": f"{type(exc).__name__}: {exc}"[:300]}

    learner = Learner(cfg, num_actions=num_actions)
    e = cfg.rollout.envs_per_actor
    batch = make_batch([make_fragment(T=cfg.rollout.fragment_length, E=e, seed=i,
                                      num_actions=num_actions, core_hidden=cfg.model.core_hidden,
                                      crop_size=cfg.env.crop_size)
                        for i in range(cfg.fragments_per_batch)])

    def update(bf16: bool) -> Any:
        def call() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                learner.update(batch)
        call()  # warm-up
        return call

    updates = max(3, repeats // 20)
    steps = cfg.learner.batch_size
    fp32 = _median_interleaved({"fp32": update(False)}, updates)["fp32"]
    out["learner_update_us_per_step"] = {"fp32": round(1e6 * fp32 / steps, 1)}
    try:
        pair = _median_interleaved({"fp32": update(False), "bf16": update(True)}, updates)
        out["learner_update_us_per_step"] = {k: round(1e6 * v / steps, 1)
                                             for k, v in pair.items()}
    except Exception as exc:  # the error is the result
        out["learner_update_us_per_step"]["bf16_error"] = f"{type(exc).__name__}: {exc}"[:300]
    after = all_cpu()
    other = sum(t - before[pid][1] for pid, (_, t) in after.items()
                if pid in before and pid != os.getpid())
    out["other_processes_cpu_pct_of_one_core"] = round(100 * other / (time.monotonic()
                                                                        - started), 1)
    return out


# ---- output -------------------------------------------------------------------------------
def plot(result: dict, path: Path) -> None:
    """Per job, a bar per process: its CPU (cores), split by component in sample proportion
    (components under 3% of every process's samples lumped together)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = [j for j in JOBS if j in result["jobs"]]
    shown = sorted({c for j in jobs for p in result["jobs"][j]["processes"].values()
                    for c, pct in p.get("components_pct", {}).items() if pct >= 3})
    rest = "the rest (< 3% each)"
    cmap = plt.get_cmap("tab20")
    colours = {c: cmap(i % 20) for i, c in enumerate([*shown, rest])}
    fig, axes = plt.subplots(len(jobs), 1, figsize=(12, 2.6 * len(jobs) + 0.6), squeeze=False)
    for ax, job in zip(axes[:, 0], jobs, strict=True):
        procs = result["jobs"][job]["processes"]
        names = list(procs)
        for y, name in enumerate(names):
            p, left = procs[name], 0.0
            cores = (p.get("cpu_pct_of_core") or 0) / 100
            parts: Counter[str] = Counter()
            for c, pct in p.get("components_pct", {}).items():
                parts[c if c in shown else rest] += pct
            for comp in [*shown, rest]:
                width = cores * parts.get(comp, 0.0) / 100
                if width > 0:
                    ax.barh(y, width, left=left, color=colours[comp])
                    left += width
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("CPU (cores) over the window, split by py-spy samples")
        ax.set_title(f"{job}: {result['jobs'][job]['sps_in_window']} SPS while profiled",
                     fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in [*shown, rest]]
    fig.legend(handles, [*shown, rest], loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", nargs="+", choices=list(JOBS), default=list(JOBS))
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds after the processes "
                    "appear before recording")
    ap.add_argument("--seconds", type=int, default=60, help="recording window")
    ap.add_argument("--rate", type=int, default=25, help="py-spy samples per second")
    ap.add_argument("--native", nargs="*", default=["learner"],
                    help="roles recorded with native frames (py-spy then pauses them)")
    ap.add_argument("--native-rate", type=int, default=20)
    ap.add_argument("--quiet-wait", type=float, default=300.0, help="wait at most this long "
                    "for other processes to go quiet before each job")
    ap.add_argument("--quiet-threshold", type=float, default=25.0,
                    help="%% of a core other processes may use and the machine count as quiet")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--attempts", type=int, default=2, help="redo a job whose window other "
                    "processes took more than --quiet-threshold of a core in (keep the "
                    "quietest)")
    ap.add_argument("--keep-raw", type=Path, metavar="DIR",
                    help="also keep the raw py-spy stacks (<job>-<process>.txt) in DIR")
    ap.add_argument("--micro", choices=["run", "skip", "only"], default="run",
                    help="the microbenchmark of inference by batch size and of bf16 autocast "
                    "(after the jobs; 'only': it alone)")
    ap.add_argument("--micro-batches", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--micro-repeats", type=int, default=100)
    ap.add_argument("--out", type=Path, default=RESULTS / "profile.json")
    args = ap.parse_args()

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    result: dict[str, Any] = {"jobs": {}}
    if args.out.exists():
        result = json.loads(args.out.read_text())
    with tempfile.TemporaryDirectory(prefix="oniray-profile-") as tmp:
        for job in args.jobs if args.micro != "only" else []:
            tries = []
            for attempt in range(args.attempts):
                tries.append(profile_job(job, args, pyspy, Path(tmp)))
                tries[-1]["attempt"] = attempt + 1
                foreign = tries[-1]["cpu_pct_of_one_core"].get("other processes on the machine",
                                                              0.0)
                if foreign < args.quiet_threshold:
                    break
                print(f"  {job}: other processes took {foreign:.0f}% of a core in the window",
                      flush=True)
            result["jobs"][job] = min(tries, key=lambda r: r["cpu_pct_of_one_core"].get(
                "other processes on the machine", 0.0))
            print(json.dumps({k: v for k, v in result["jobs"][job].items()
                              if k != "processes"}, indent=1), flush=True)
    write(result, args)
    if args.micro != "skip":
        result["microbench"] = microbench(JOBS["nethack-score"], batches=args.micro_batches,
                                          repeats=args.micro_repeats)
        print(json.dumps(result["microbench"], indent=1), flush=True)
    write(result, args)
    return 0


def write(result: dict[str, Any], args: argparse.Namespace) -> None:
    result.update({
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cores": psutil.cpu_count(),
                    "memory_gib": round(psutil.virtual_memory().total / 2**30)},
        "settings": {"warmup_s": args.warmup, "window_s": args.seconds, "rate_hz": args.rate,
                     "native_roles": args.native, "native_rate_hz": args.native_rate},
        "note": "components_pct: share of the process's py-spy samples (its Python threads "
                "while running or runnable); cpu_pct_of_core: all its threads, from /proc.",
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if result["jobs"]:
        plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
