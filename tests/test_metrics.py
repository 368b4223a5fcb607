"""cluster.metrics: naming rules, hub merging, the HTTP endpoint, and a real Prometheus scrape."""

from __future__ import annotations

import re
import socket
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actors import metrics
from actors.metrics import component_labels, metrics_snapshot
from cluster.metrics import MetricsHub, serve_metrics
from learner.appo import UPDATE_STATS
from tests.helpers.dashboard_queries import dashboard_paths, panel_queries, prometheus_expr
from tests.helpers.prometheus_fixture import query, wait_for_result

LABELS = ["role", "actor_id"]


def _component_exposition(actor_id: str, steps: float, returns: list[float]) -> bytes:
    """What one component process would send: its own registry, same metric names."""
    registry = CollectorRegistry()
    steps_counter = Counter("oniray_env_steps_total", "steps", LABELS, registry=registry)
    episode_return = Histogram("oniray_episode_return", "ret", LABELS, registry=registry,
                               buckets=(0, 100, 1000))
    Gauge("process_fake_bytes", "per-process gauge without oniray labels", registry=registry).set(1)
    labels = component_labels(role="rollout", actor_id=actor_id)
    steps_counter.labels(**labels).inc(steps)
    for value in returns:
        episode_return.labels(**labels).observe(value)
    return generate_latest(registry)


def _hub_families(hub: MetricsHub) -> dict[str, object]:
    registry = CollectorRegistry()
    registry.register(hub)
    text = generate_latest(registry).decode()
    type_lines = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(type_lines) == len(set(type_lines)), "a family was emitted twice"
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(family, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def test_declared_metrics_follow_naming_rules() -> None:
    declared = [v for v in vars(metrics).values() if isinstance(v, (Counter, Gauge, Histogram))]
    assert len(declared) >= 28
    for metric in declared:
        assert metric._name.startswith("oniray_"), metric._name
        assert metric._labelnames[:2] == ("role", "actor_id"), metric._name
        if isinstance(metric, Counter):
            # prometheus_client strips `_total` from the family name and re-adds it per sample
            assert not metric._name.endswith("_total")
    assert metrics.FRAGMENTS_DROPPED._labelnames[2] == "reason"
    assert metrics.LEARNER_LOSS._labelnames[2] == "loss"
    assert metrics.QUEUE_DEPTH._labelnames[2] == "queue"
    for histogram in declared:
        if isinstance(histogram, Histogram):  # a negative bound makes prometheus_client drop _sum
            assert histogram._upper_bounds[0] >= 0, histogram._name


def test_docstring_table_lists_every_metric() -> None:
    for name, value in vars(metrics).items():
        if isinstance(value, (Counter, Gauge, Histogram)):
            suffix = "_total" if isinstance(value, Counter) else ""
            assert f"| {name} " in metrics.__doc__, name
            assert f" {value._name}{suffix} " in metrics.__doc__, value._name


def test_component_labels_rejects_unknown_role() -> None:
    assert component_labels(role="learner", actor_id=2) == {"role": "learner", "actor_id": "2"}
    with pytest.raises(ValueError, match="unknown metrics role"):
        component_labels(role="rollouts", actor_id="0")


def test_hub_merges_two_sources_into_one_family() -> None:
    hub = MetricsHub(own_registry=CollectorRegistry())
    hub.update("rollout-0", _component_exposition("0", steps=5, returns=[50.0]))
    hub.update("rollout-1", _component_exposition("1", steps=7, returns=[500.0, 5.0]))

    families = _hub_families(hub)
    steps = _samples(families["oniray_env_steps"], "oniray_env_steps_total")
    assert steps == {
        (("actor_id", "0"), ("role", "rollout")): 5.0,
        (("actor_id", "1"), ("role", "rollout")): 7.0,
    }
    # Histogram survives the round trip with buckets, count and sum per source.
    returns = families["oniray_episode_return"]
    assert returns.type == "histogram"
    counts = _samples(returns, "oniray_episode_return_count")
    assert sorted(counts.values()) == [1.0, 2.0]
    buckets = _samples(returns, "oniray_episode_return_bucket")
    assert buckets[(("actor_id", "1"), ("le", "100.0"), ("role", "rollout"))] == 1.0
    # Foreign per-process samples are kept apart by a `source` label.
    fake = _samples(families["process_fake_bytes"], "process_fake_bytes")
    assert set(fake) == {(("source", "rollout-0"),), (("source", "rollout-1"),)}


def test_hub_forget_and_replace() -> None:
    hub = MetricsHub(own_registry=CollectorRegistry())
    hub.update("rollout-0", _component_exposition("0", steps=5, returns=[]))
    hub.update("rollout-1", _component_exposition("1", steps=7, returns=[]))
    hub.update("rollout-1", _component_exposition("1", steps=9, returns=[]))  # newer snapshot
    hub.forget("rollout-0")
    hub.forget("never-seen")  # harmless

    assert hub.sources() == ["rollout-1"]
    steps = _samples(_hub_families(hub)["oniray_env_steps"], "oniray_env_steps_total")
    assert steps == {(("actor_id", "1"), ("role", "rollout")): 9.0}


def test_hub_hides_sources_that_stopped_reporting() -> None:
    hub = MetricsHub(own_registry=CollectorRegistry(), stale_after_s=0.2)
    hub.update("rollout-0", _component_exposition("0", steps=5, returns=[]))
    assert "oniray_env_steps" in _hub_families(hub)
    time.sleep(0.3)
    assert "oniray_env_steps" not in _hub_families(hub)
    hub.update("rollout-0", _component_exposition("0", steps=6, returns=[]))  # back again
    assert "oniray_env_steps" in _hub_families(hub)


def test_hub_includes_driver_metrics_and_drops_duplicate_series() -> None:
    # Local mode: a component shares the driver's registry, so its snapshot repeats the
    # driver's own series; serving both would be a duplicate series.
    metrics.ENV_STEPS.labels(**component_labels(role="driver", actor_id="hub-test-dup")).inc(3)
    hub = MetricsHub()
    hub.update("local-rollout", metrics_snapshot())
    families = _hub_families(hub)
    steps = [s for s in families["oniray_env_steps"].samples
             if s.labels.get("actor_id") == "hub-test-dup"]
    assert len(steps) == 1 and steps[0].value >= 3
    assert "process_cpu_seconds" in families or "python_info" in families


def test_hub_rejects_garbage_at_update() -> None:
    hub = MetricsHub(own_registry=CollectorRegistry())
    with pytest.raises(ValueError):
        hub.update("bad", b"oniray_x{role=\"a\" 1\n")
    assert hub.sources() == []


def test_serve_metrics_binds_loopback_and_serves_merged_view() -> None:
    hub = MetricsHub(own_registry=CollectorRegistry())
    hub.update("rollout-0", _component_exposition("0", steps=11, returns=[]))
    server, port = serve_metrics(hub)
    try:
        assert port > 0
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert 'oniray_env_steps_total{actor_id="0",role="rollout"} 11.0' in body
        # Not reachable through a non-loopback address of this host, if it has one.
        other = _non_loopback_address()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=1).close()
    finally:
        server.shutdown()
        server.server_close()


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET; no packet is sent for UDP connect
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") else address


def test_real_prometheus_scrapes_hub(prometheus_factory) -> None:
    hub = MetricsHub(own_registry=CollectorRegistry())
    hub.update("rollout-0", _component_exposition("0", steps=5, returns=[50.0]))
    hub.update("rollout-1", _component_exposition("1", steps=7, returns=[500.0]))
    server, port = serve_metrics(hub)
    try:
        prometheus = prometheus_factory([f"127.0.0.1:{port}"])
        up = wait_for_result(prometheus.base_url, "up",
                             accept=lambda r: any(x["value"][1] == "1" for x in r))
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}"

        steps = wait_for_result(prometheus.base_url, "sum(oniray_env_steps_total)",
                                accept=lambda r: bool(r) and float(r[0]["value"][1]) == 12.0)
        assert float(steps[0]["value"][1]) == 12.0

        # A later snapshot of one source is what the next scrape sees.
        hub.update("rollout-1", _component_exposition("1", steps=17, returns=[500.0]))
        wait_for_result(prometheus.base_url, 'oniray_env_steps_total{actor_id="1"}',
                        accept=lambda r: bool(r) and float(r[0]["value"][1]) == 17.0)
        count = wait_for_result(prometheus.base_url, "sum(oniray_episode_return_count)")
        assert float(count[0]["value"][1]) == 2.0
    finally:
        server.shutdown()
        server.server_close()


def _every_metric_exposition(step: int) -> bytes:
    """Every declared metric, cloned into a private registry (the process-global one belongs
    to whatever else runs in this process), with samples for each role the dashboards read."""
    registry = CollectorRegistry()
    extra_values = {"reason": metrics.DROP_REASONS, "loss": metrics.LOSS_TERMS,
                    "queue": ("fragments", "messages"), "kind": ("http_5xx", "garbage"),
                    "stat": UPDATE_STATS}
    for value in vars(metrics).values():
        if not isinstance(value, (Counter, Gauge, Histogram)):
            continue
        kwargs = {"buckets": value._upper_bounds} if isinstance(value, Histogram) else {}
        clone = type(value)(value._name, value._documentation, value._labelnames,
                            registry=registry, **kwargs)
        extra = value._labelnames[2:]
        for role in ("driver", "rollout", "learner", "annotator"):
            for option in (extra_values[extra[0]] if extra else (None,)):
                labels = component_labels(role=role, actor_id="0")
                if option is not None:
                    labels[extra[0]] = option
                child = clone.labels(**labels)
                if isinstance(clone, Counter):
                    child.inc(10 * step)
                elif isinstance(clone, Gauge):
                    child.set(0.5 + step)
                else:
                    for _ in range(step):
                        child.observe(value._upper_bounds[len(value._upper_bounds) // 2])
    return generate_latest(registry)


def test_every_dashboard_query_evaluates_on_real_prometheus(prometheus_factory) -> None:
    hub = MetricsHub(own_registry=CollectorRegistry())
    hub.update("synthetic", _every_metric_exposition(1))
    server, port = serve_metrics(hub)
    try:
        prometheus = prometheus_factory([f"127.0.0.1:{port}"])
        probe = 'oniray_env_steps_total{role="rollout"}'
        # Counters must move between scrapes for rate() and histogram_quantile() to have data.
        for step in (1, 2, 3):
            hub.update("synthetic", _every_metric_exposition(step))
            wait_for_result(prometheus.base_url, probe,
                            accept=lambda r, s=step: bool(r) and float(r[0]["value"][1]) == 10 * s)
        failures = []
        for path in dashboard_paths():
            for title, expr in panel_queries(path):
                result = query(prometheus.base_url, prometheus_expr(expr))
                if not result:
                    failures.append((path.name, title, expr))
        assert failures == []
    finally:
        server.shutdown()
        server.server_close()
