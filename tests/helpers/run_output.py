"""A running `oniray` CLI's output, read in the background so a test can wait for lines.

``Output(oniray(...))`` collects the lines; ``wait_for(pattern)`` returns the first match,
``wait_updates(n)`` waits for the progress line to reach ``n`` updates, ``finish(timeout)``
waits for the exit. ``pids(out)``: the components' process ids from the driver's
``processes:`` line, for tests that signal one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


class Output:
    """The lines of a running oniray, read in the background so waits can match them."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 90, after: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None and not self._thread.is_alive():
                break
            time.sleep(0.2)
        stacks = where_stalled(self.proc.pid)
        self.proc.kill()
        # The log lines (not the progress lines nor Ray's own, which start with "["), then
        # where the progress stood.
        logged = "".join(line for line in self.lines if not line.startswith(("[", "\x1b")))
        pytest.fail(f"no line matching {pattern!r}:\n{logged[-4000:]}\n"
                    f"{''.join(self.lines[-3:])}\n{stacks}")

    def updates(self) -> int:
        found = [re.search(r"updates ([\d,]+)", line) for line in self.lines]
        return max([int(f.group(1).replace(",", "")) for f in found if f] or [0])

    def wait_updates(self, at_least: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.updates() < at_least:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                stacks = where_stalled(self.proc.pid)
                self.proc.kill()
                pytest.fail(f"never reached {at_least} updates:\n{''.join(self.lines)[-3000:]}"
                            f"\n{stacks}")
            time.sleep(0.2)

    def finish(self, timeout: float) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        self._thread.join(timeout=10)
        return self.proc.returncode, "".join(self.lines)


def pids(out: Output) -> dict[str, int]:
    line = out.wait_for(r"processes: (.*)").group(1)
    return {name: int(pid) for name, pid in (item.split("=") for item in line.split())}


def where_stalled(driver_pid: int, *, lines_per_process: int = 60) -> str:
    """Every Python thread's stack in the driver and in each Ray worker (``ray::`` processes),
    by ``py-spy dump`` (installed with ``ray[default]``): what a stalled run was waiting on,
    for the failure message, since a stall leaves no error in any log."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "(no py-spy: no stacks)"
    token = _auth_token(driver_pid)  # a NodeCluster's own: only that cluster's workers
    pids = [driver_pid]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if (cmdline.startswith(b"ray::") and not cmdline.startswith(_RAY_OWN)
                and _auth_token(int(proc.name)) == token):
            pids.append(int(proc.name))
    dumps = []
    for pid in pids:
        try:
            out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True,
                                 text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            out = f"({type(exc).__name__})"
        dumps.append("\n".join(out.splitlines()[:lines_per_process]))
    return "stacks when it stalled:\n" + "\n".join(dumps) + _unfinished_tasks(driver_pid)


def _unfinished_tasks(driver_pid: int) -> str:
    """Ray's own list of the tasks not finished, where the cluster serves its state API (a
    NodeCluster started with ONIRAY_TEST_DASHBOARD=1): which calls the driver waits on and
    where each stands."""
    try:
        argv = Path(f"/proc/{driver_pid}/cmdline").read_bytes().decode().split("\0")
        env = dict(v.split("=", 1) for v in
                   Path(f"/proc/{driver_pid}/environ").read_bytes().decode().split("\0") if v)
    except OSError:
        return ""
    address = next((a.split("=", 1)[1] for a in argv if a.startswith("ray.address=")), None)
    if address is None:
        return ""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    try:
        listed = subprocess.run(
            [ray_cli, "list", "tasks", "--address", address, "--filter", "state!=FINISHED",
             "--limit", "100"], capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"\n(ray list tasks: {type(exc).__name__})"
    return f"\nray list tasks (not finished):\n{listed.stdout[-6000:]}{listed.stderr[-500:]}"


_RAY_OWN = (b"ray::IDLE", b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")  # not oniray's


def _auth_token(pid: int) -> bytes | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((v for v in env if v.startswith(b"RAY_AUTH_TOKEN=")), None)
