"""Restart policy: which dead actors come back, as what, and how many times.

Consumes: a way to create each actor (``cluster.components``: its options, seed and core are
the wiring's), the restart budgets, and the driver's word that an actor died (its ObjectRef
raised ``RayActorError``). Emits: replacement actor handles, the restart counts and
``oniray_actor_restarts_total``; :class:`RestartBudgetExceeded` when a role has used up its
``max_restarts`` for this session, which the driver turns into a stop with a checkpoint.

The rollout actors and the annotator are restarted as they were: they hold no state the run
cannot lose (a rollout actor's environments and recurrent state; the annotator's labels and
reward-model version are on disk). A learner holds the policy and optimiser between
checkpoints: the driver rebuilds the whole group from the newest checkpoint instead
(``cluster.driver``), within ``learner.max_restarts``.

A replacement is placed by its role's resources like the original, so when its node died it
lands on another node with room, or waits, pending, until one joins (docs/operations.md,
"A worker node dies").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import ray

from actors import metrics as m

log = logging.getLogger("oniray")


class RestartBudgetExceeded(RuntimeError):
    """A role died once more than its ``max_restarts`` allow."""


def _restarted(role: str) -> None:
    # actor_id="driver": the driver counts restarts (telemetry creates these series at zero).
    m.ACTOR_RESTARTS.labels(role=role, actor_id="driver").inc()


class RolloutSupervisor:
    """The rollout actors, their incarnations, and the restart budget they share."""

    def __init__(self, create: Callable[..., Any], *, num_actors: int, max_restarts: int) -> None:
        """``create(actor_id=, incarnation=)``: a new rollout actor; ``max_restarts``: of all
        of them together, this session (``rollout.max_restarts``)."""
        self._create, self.max_restarts = create, max_restarts
        self.incarnations = [0] * num_actors
        self.restarts = 0  # this session
        self.actors: list[Any] = [create(actor_id=i, incarnation=0) for i in range(num_actors)]
        self.died_at: dict[int, float] = {}  # actor index -> when its death was noticed

    def replace(self, index: int, error: Exception) -> Any:
        """A fresh actor in place of the dead ``index``; raises past ``rollout.max_restarts``."""
        limit = self.max_restarts
        if self.restarts >= limit:
            raise RestartBudgetExceeded(
                f"rollout actor {index} died and the {limit} restarts of rollout.max_restarts "
                f"are used up ({type(error).__name__})"
            )
        ray.kill(self.actors[index])  # an actor that is only unreachable must not come back
        self.restarts += 1
        self.incarnations[index] += 1
        self.actors[index] = self._create(actor_id=index, incarnation=self.incarnations[index])
        self.died_at[index] = time.perf_counter()
        _restarted("rollout")
        log.warning("rollout actor %d died (%s); restarting it as incarnation %d (%d/%d)",
                    index, type(error).__name__, self.incarnations[index], self.restarts, limit)
        return self.actors[index]

    def back(self, index: int) -> float | None:
        """Seconds from the death of ``index`` to its replacement's first fragment (once)."""
        died = self.died_at.pop(index, None)
        return None if died is None else time.perf_counter() - died


class AnnotatorSupervisor:
    """The annotator actor: restarted when it dies, until it is ready it gets no work.

    The annotator owns the reward-model version and persists it with the labels, so a
    restarted one continues the count: nothing here needs to know versions.
    """

    def __init__(self, create: Callable[[], Any], *, max_restarts: int) -> None:
        """``create()``: a new annotator actor, reloading the labels its predecessors stored;
        ``max_restarts``: this session's (``rewards.annotator.max_restarts``)."""
        self._create, self.max_restarts = create, max_restarts
        self.restarts = 0
        self.handle = create()
        self._ready: ray.ObjectRef | None = self.handle.ready.remote()
        self.died_at: float | None = None

    def wait_ready(self) -> None:
        """Block until the first annotator is up: a judge that cannot load fails here."""
        if self._ready is not None:
            ray.get(self._ready)
            self._ready = None

    def ready_now(self) -> bool:
        """Whether the annotator was up at the last look (no waiting, never raises)."""
        return self._ready is None

    def available(self) -> bool:
        """Whether the annotator takes work; raises ``RayActorError`` if it died starting."""
        if self._ready is None:
            return True
        if not ray.wait([self._ready], timeout=0)[0]:
            return False
        ray.get(self._ready)
        self._ready = None
        if self.died_at is not None:
            info = ray.get(self.handle.info.remote())
            log.warning("annotator back after %.1f s (pid %d, %d labels reloaded)",
                        time.perf_counter() - self.died_at, info["pid"], info["store_labels"])
            self.died_at = None
        return True

    def replace(self, error: Exception) -> Any:
        limit = self.max_restarts
        if self.restarts >= limit:
            raise RestartBudgetExceeded(
                f"the annotator died and the {limit} restarts of "
                f"rewards.annotator.max_restarts are used up ({type(error).__name__})"
            )
        ray.kill(self.handle)
        self.restarts += 1
        self.handle = self._create()
        self._ready = self.handle.ready.remote()
        self.died_at = time.perf_counter()
        _restarted("annotator")
        log.warning("annotator died (%s); restarting it (%d/%d); the learners keep their "
                    "reward model meanwhile", type(error).__name__, self.restarts, limit)
        return self.handle

    def stop(self) -> None:
        """Flush the label store and release the judge; a dead annotator has nothing to do."""
        try:
            ray.get(self.handle.stop.remote(), timeout=60)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            log.warning("annotator did not stop cleanly (%s)", type(exc).__name__)
        ray.kill(self.handle)
