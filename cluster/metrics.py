"""The driver-side hub that serves every component's metrics as one Prometheus endpoint.

Consumes: each component's exposition text (`actors.metrics.metrics_snapshot()`, the catalog of
every metric oniray records). Emits: one merged HTTP endpoint in the driver via `MetricsHub` +
`serve_metrics()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class MetricsHub(Collector):
    """The driver's merged view: its own metrics plus the latest snapshot of every component.

    Families with the same name from different sources become one family (a second TYPE line
    would make Prometheus reject the whole scrape). oniray samples already differ by
    `role`/`actor_id`; other samples (process_*, python_*) get a `source` label so that two
    components' process metrics stay distinct series.
    """

    def __init__(self, *, own_registry: CollectorRegistry = REGISTRY,
                 stale_after_s: float | None = None) -> None:
        self._own = own_registry
        self._stale_after_s = stale_after_s
        self._lock = threading.Lock()  # update() runs on the driver loop, collect() on HTTP
        self._sources: dict[str, tuple[float, list[Metric]]] = {}

    def update(self, source: str, exposition: bytes) -> None:
        """Replace `source`'s snapshot; parsing here makes a bad payload fail at its sender."""
        families = list(text_string_to_metric_families(exposition.decode("utf-8")))
        with self._lock:
            self._sources[source] = (time.monotonic(), families)

    def forget(self, source: str) -> None:
        """Drop a dead component's series now instead of serving its last values forever."""
        with self._lock:
            self._sources.pop(source, None)

    def sources(self) -> list[str]:
        with self._lock:
            return sorted(self._sources)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            snapshot = [
                (source, families)
                for source, (at, families) in sorted(self._sources.items())
                if self._stale_after_s is None or now - at <= self._stale_after_s
            ]
        merged: dict[str, Metric] = {}
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        _merge_into(merged, seen, self._own.collect(), source=None)
        for source, families in snapshot:
            _merge_into(merged, seen, families, source=source)
        yield from merged.values()


def _merge_into(
    merged: dict[str, Metric],
    seen: set[tuple[str, tuple[tuple[str, str], ...]]],
    families: Iterable[Metric],
    *,
    source: str | None,
) -> None:
    for family in families:
        target = merged.get(family.name)
        if target is None:
            target = merged[family.name] = Metric(family.name, family.documentation, family.type)
        elif target.type != family.type:
            # Two builds disagreeing on a type; mixing them would corrupt the family.
            log.warning("metric %s is %s in %s but %s elsewhere; skipped",
                        family.name, family.type, source, target.type)
            continue
        for sample in family.samples:
            labels = dict(sample.labels)
            if source is not None and "actor_id" not in labels:
                labels["source"] = source
            key = (sample.name, tuple(sorted(labels.items())))
            # In local mode every component shares the driver's registry, so each source
            # repeats the driver's own samples; a duplicate series would fail the scrape.
            if key in seen:
                continue
            seen.add(key)
            target.samples.append(sample._replace(labels=labels))


def serve_metrics(
    hub: MetricsHub, host: str = "127.0.0.1", port: int = 0
) -> tuple[WSGIServer, int]:
    """Serve `hub` at http://host:port/metrics in a daemon thread; port 0 picks a free port.

    Loopback by default: exposing it to a pod network is a deployment decision (k8s passes
    0.0.0.0). Stop with `server.shutdown(); server.server_close()`.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(hub)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_address[1]
