"""The annotator's Ray shell: captions by reference in, reward-model states by reference out.

Consumes ``submit_captions([captions_ref])``: the distinct messages a rollout actor extracted
from a fragment (``actors.fragment.step_captions``), by reference, nested in a list so the
driver that forwards it never fetches it. Emits ``reward_model_ref() -> VersionedRef | None``
for the learners, and ``stats()``.

Lifecycle only; the work is :class:`rewards.annotator.Annotator`. The actor is threaded
(``max_concurrency`` >= 2); one background thread ticks the service (``Annotator.tick``, as
the local runtime does: the judge's batches, its backoff, the reward model's rounds, the
flushes) and another fits the reward model, so no call waits on the judge and labelling goes
on during a fit. It gets a builder of the annotator from the run's wiring
(``cluster.components``, which also sets its Ray options), whose label store reloads its
directory: an actor restarted after a crash asks nothing twice.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import ray
import torch

from actors import metrics as m
from actors.versioned import VersionedRef
from rewards.annotator import Annotator, run_trainer, serve_until_stopped
from rewards.canary import CANARY_KIND_NAMES
from rewards.config import RewardsConfig

logger = logging.getLogger(__name__)

# submit_captions, reward_model_ref, stats and flush each get a thread while the loop and
# trainer threads run the judge and the fits; 4 lets a burst of rollout submits queue behind
# each other, not behind stats.
MAX_CONCURRENCY = 4


@ray.remote
class AnnotatorActor:
    """See the module docstring. ``cluster.components.annotator_actor`` creates it."""

    def __init__(self, cfg: RewardsConfig, *, build: Callable[[], Annotator]) -> None:
        """``build``: the annotator (its judge and label store), made after the actor has
        taken its CPU share and niceness, so the judge loads under them."""
        # The fits of the reward model share this actor's CPUs with the judge; more intra-op
        # threads than reserved CPUs only thrash.
        torch.set_num_threads(max(1, int(cfg.annotator.num_cpus)))
        # The judge is never on training's critical path: on shared cores it yields to them.
        os.nice(cfg.annotator.nice)
        self._annotator = build()
        self._published: VersionedRef | None = None
        self._labels = m.component_labels(role="annotator", actor_id=0)
        self._exported: dict[str, float] = {}  # counter totals already exported
        self._publish_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=serve_until_stopped,
            args=(self._annotator, self._stop),
            name="annotator-tick",
            daemon=True,
        )
        self._trainer = threading.Thread(
            target=run_trainer,
            args=(self._annotator, self._stop),
            name="annotator-fit",
            daemon=True,
        )
        self._thread.start()
        self._trainer.start()

    def submit_captions(self, refs: list[ray.ObjectRef]) -> None:
        """Queue captions a rollout actor extracted from a fragment's message column (a small
        Arrow string array, so only messages travel to the judge's node, not fragments)."""
        for captions in ray.get(refs):
            self._annotator.submit(captions)

    def metrics(self) -> bytes:
        """The service's counters as Prometheus exposition text, for the driver's hub."""
        record_stats(self._annotator.stats(), labels=self._labels, exported=self._exported)
        for seconds in self._annotator.drain_latencies():
            m.JUDGE_LATENCY_SECONDS.labels(**self._labels).observe(seconds)
        return m.metrics_snapshot()

    def submit(self, captions: list[str]) -> int:
        """Queue captions directly (tools and tests); returns how many were new."""
        return self._annotator.submit(captions)

    def reward_model_ref(self) -> VersionedRef | None:
        """The newest model's state by reference (put once per version); None before the
        first fit. The version is the annotator's own, continued across restarts."""
        version, state = self._annotator.reward_model()
        with self._publish_lock:
            if state is not None and (self._published is None
                                       or version != self._published.version):
                # Holding the ref here keeps the object alive for learners that fetch it later.
                self._published = VersionedRef(version, ray.put(state))
            return self._published

    def stats(self) -> dict[str, float]:
        return self._annotator.stats()

    def drain_latencies(self) -> list[float]:
        return self._annotator.drain_latencies()

    def flush(self) -> int:
        return self._annotator.flush()

    def stop(self) -> None:
        """Finish the batch in flight, flush the store, release the judge."""
        self._stop.set()
        self._annotator.wake.set()
        self._thread.join()
        self._trainer.join()
        self._annotator.judge.close()

    def ready(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        """This actor's process id (fault tests kill it), its node (which node to drain or
        lose) and the labels it reloaded."""
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "store_labels": len(self._annotator.store)}


def record_stats(
    stats: dict[str, float], *, labels: dict[str, str], exported: dict[str, float]
) -> None:
    """Set the annotator's Prometheus metrics from its stats dict. Counters grow by what the
    stats' totals gained since ``exported`` (updated here), so each process counts once."""
    for counter, key in ((m.JUDGE_LABELS, "labels_total"),
                         (m.JUDGE_PARSE_FAILURES, "parse_failures_total"),
                         (m.JUDGE_UNANSWERED, "unanswered_total")):
        total = stats.get(key, 0.0)
        counter.labels(**labels).inc(max(0.0, total - exported.get(key, 0.0)))
        exported[key] = total
    # Per-kind counts, by their stats prefix: the openai judge's transport failures and
    # the judge guard's blocked and redacted captions.
    by_kind = (("judge_http_failures_", m.JUDGE_REQUEST_FAILURES),
               ("judge_guard_blocked_", m.JUDGE_GUARD_BLOCKED),
               ("judge_guard_redacted_", m.JUDGE_GUARD_REDACTED))
    for key, total in stats.items():
        for prefix, counter in by_kind:
            if key.startswith(prefix):
                counter.labels(**labels, kind=key.removeprefix(prefix)).inc(
                    max(0.0, total - exported.get(key, 0.0))
                )
                exported[key] = total
    # Judges without a breaker (embedding, rules, local models) are always "closed".
    m.JUDGE_CIRCUIT_STATE.labels(**labels).set(stats.get("judge_circuit_state", 0.0))
    for kind in ("timeout", "connection", "http_5xx", "garbage"):
        m.JUDGE_REQUEST_FAILURES.labels(**labels, kind=kind)  # zero until one happens
    m.JUDGE_LABELS_PER_SECOND.labels(**labels).set(stats.get("labels_per_s", 0.0))
    m.QUEUE_DEPTH.labels(**labels, queue="captions").set(stats.get("queue_depth", 0.0))
    m.JUDGE_CACHE_HIT_RATIO.labels(**labels).set(stats.get("cache_hit_rate", 0.0))
    m.CANARY_FALSE_POSITIVES.labels(**labels, kind="all").set(stats.get("canary_fpr", 0.0))
    for kind in CANARY_KIND_NAMES:
        m.CANARY_FALSE_POSITIVES.labels(**labels, kind=kind).set(
            stats.get(f"canary_fpr_{kind}", 0.0)
        )
    m.REWARD_MODEL_VERSION.labels(**labels).set(stats.get("reward_model_version", 0.0))
    accuracy = stats.get("reward_model_accuracy", float("nan"))
    if accuracy == accuracy:  # NaN until the first fit with a held-out slice
        m.REWARD_MODEL_ACCURACY.labels(**labels).set(accuracy)
