"""A circuit breaker for a remote judge: stop calling a server that keeps failing.

Consumes: ``record_success()`` / ``record_failure()`` after each request, ``allow()`` before.
Emits: whether a request may go out now, and the circuit (closed, open, half_open) for
metrics.

Why: when the judge server is down, every caption would otherwise wait
``(max_retries + 1) * timeout_s`` before failing, and the annotator's queue would fill with
work that cannot succeed. Open, the breaker answers "no" at once; after a cool-down it lets
exactly one probe through (half-open) and closes again as soon as the server answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
# Numeric codes for a Prometheus gauge (the metric cannot hold a string).
CIRCUIT_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitBreaker:
    """Thread-safe: the judge's request threads share one breaker."""

    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown_s: float,
        name: str = "judge",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._circuit = CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.opens = 0  # times it opened, for metrics
        self.rejected = 0  # requests refused while open

    @property
    def circuit(self) -> str:
        """closed, open or half_open (named apart from the components' ``state()``, their
        checkpoint: a breaker is never checkpointed, a restarted judge starts closed)."""
        with self._lock:
            return self._circuit

    def allow(self) -> bool:
        """Whether a request may go out now; refusals are counted in ``rejected``."""
        with self._lock:
            if self._circuit == CLOSED:
                return True
            if self._circuit == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                self._circuit = HALF_OPEN
                self._probe_in_flight = False
            # Half-open lets one probe through; the others wait for its outcome by failing
            # fast, so a dead server sees one request per cool-down, not max_concurrency.
            if self._circuit == HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            self.rejected += 1
            return False

    def record_success(self) -> None:
        with self._lock:
            was = self._circuit
            self._circuit = CLOSED
            self._consecutive_failures = 0
            self._probe_in_flight = False
        if was != CLOSED:
            log.warning("judge %s: circuit closed, the server answers again", self.name)

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive_failures += 1
            probe_failed = self._circuit == HALF_OPEN
            tripped = self._circuit == CLOSED and (
                self._consecutive_failures >= self.failure_threshold
            )
            if probe_failed or tripped:
                self._circuit = OPEN
                self._opened_at = self._clock()
                self._probe_in_flight = False
            if tripped:
                self.opens += 1
            failures = self._consecutive_failures
        # One line per outage, not per failed probe: a long outage would otherwise log
        # once per cool-down forever.
        if tripped:
            log.warning(
                "judge %s: circuit open after %d consecutive failures; answering None for "
                "%.1f s before probing",
                self.name, failures, self.cooldown_s,
            )
