"""A running `oniray` CLI's output, read in the background so a test can wait for lines.

``Output(oniray(...))`` collects the lines; ``wait_for(pattern)`` returns the first match,
``wait_updates(n)`` waits for the progress line to reach ``n`` updates, ``finish(timeout)``
waits for the exit. ``pids(out)``: the components' process ids from the driver's
``processes:`` line, for tests that signal one.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time

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
        self.proc.kill()
        # The log lines (not the progress lines nor Ray's own, which start with "["), then
        # where the progress stood.
        logged = "".join(line for line in self.lines if not line.startswith(("[", "\x1b")))
        pytest.fail(f"no line matching {pattern!r}:\n{logged[-4000:]}\n"
                    f"{''.join(self.lines[-3:])}")

    def updates(self) -> int:
        found = [re.search(r"updates ([\d,]+)", line) for line in self.lines]
        return max([int(f.group(1).replace(",", "")) for f in found if f] or [0])

    def wait_updates(self, at_least: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.updates() < at_least:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                pytest.fail(f"never reached {at_least} updates:\n{''.join(self.lines)[-3000:]}")
            time.sleep(0.2)

    def finish(self, timeout: float) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        self._thread.join(timeout=10)
        return self.proc.returncode, "".join(self.lines)


def pids(out: Output) -> dict[str, int]:
    line = out.wait_for(r"processes: (.*)").group(1)
    return {name: int(pid) for name, pid in (item.split("=") for item in line.split())}
