"""The driver's Prometheus endpoint and the thread that gathers every component's metrics.

Consumes: handles of components that expose ``metrics() -> bytes`` (exposition text of their
process). Emits: one merged endpoint (``cluster.metrics.MetricsHub``) bound to
``metrics.host:metrics.port`` (127.0.0.1 unless configured), refreshed every
``metrics.scrape_every_s`` by a daemon thread, so the training loop never waits on it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

import ray

from actors import metrics as m
from cluster.config import MetricsConfig
from cluster.metrics import MetricsHub, serve_metrics

log = logging.getLogger(__name__)

# A source is a name and a function returning a ref to that component's exposition text.
Source = tuple[str, Callable[[], ray.ObjectRef]]


def object_store_used_bytes() -> float | None:
    """Bytes in the cluster's object stores (Ray's memory summary), or None if unavailable."""
    try:
        from ray._private.internal_api import memory_summary

        text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    except Exception:  # an internal API: losing one gauge must not stop training
        return None
    found = re.search(r"Plasma memory usage ([\d.]+) MiB", text)
    return None if found is None else float(found.group(1)) * 1024 * 1024


class Telemetry:
    """Serves the hub and refreshes it from the components in a background thread."""

    def __init__(self, cfg: MetricsConfig) -> None:
        self.cfg = cfg
        self.hub = MetricsHub()
        self.server = None
        self.port: int | None = None
        self._sources: list[Source] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.driver_labels = m.component_labels(role="driver", actor_id=0)

    def start(self) -> None:
        if not self.cfg.enabled:
            return
        # A labelled counter exists only once used: create the drop reasons at zero, so a
        # dashboard shows "0 dropped" rather than "no data" in a healthy run.
        for reason in m.DROP_REASONS:
            m.FRAGMENTS_DROPPED.labels(**self.driver_labels, reason=reason)
        for role in ("rollout", "learner", "annotator"):
            m.ACTOR_RESTARTS.labels(role=role, actor_id="driver")
        self.server, self.port = serve_metrics(self.hub, self.cfg.host, self.cfg.port)
        print(f"metrics: http://{self.cfg.host}:{self.port}/metrics", flush=True)
        self._thread = threading.Thread(target=self._run, name="oniray-telemetry", daemon=True)
        self._thread.start()

    def set_sources(self, sources: list[Source]) -> None:
        with self._lock:
            gone = {name for name, _ in self._sources} - {name for name, _ in sources}
            self._sources = list(sources)
        for name in gone:
            self.hub.forget(name)

    def refresh(self) -> None:
        """Pull every component's metrics once (also called by the thread)."""
        with self._lock:
            sources = list(self._sources)
        refs = []
        for name, fetch in sources:
            try:
                refs.append((name, fetch()))
            except ray.exceptions.RayError:
                continue
        for name, ref in refs:
            try:
                self.hub.update(name, ray.get(ref, timeout=self.cfg.scrape_every_s))
            except (ray.exceptions.RayError, TimeoutError) as exc:
                log.debug("metrics of %s unavailable: %s", name, exc)
        used = object_store_used_bytes()
        if used is not None:
            m.OBJECT_STORE_USED_BYTES.labels(**self.driver_labels).set(used)

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.scrape_every_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
