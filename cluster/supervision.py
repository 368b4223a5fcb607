"""Restart policy: which dead actors come back, as what, and how many times.

Consumes: the config, the run's labels folder, and the driver's word that an actor died (its
ObjectRef raised ``RayActorError``). Emits: replacement actor handles, the restart counts and
``oniray_actor_restarts_total``; :class:`RestartBudgetExceeded` when a role has used up its
``max_restarts`` for this session, which the driver turns into a stop with a checkpoint.

The rollout actors and the annotator are restarted as they were: they hold no state the run
cannot lose (a rollout actor's environments and recurrent state; the annotator's labels and
reward-model version are on disk). A learner holds the policy and optimiser between
checkpoints: the driver rebuilds the whole group from the newest checkpoint instead
(``cluster.driver``), within ``learner.max_restarts``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from actors import metrics as m
from actors.rollout_actor import RolloutActor
from cluster.config import OniConfig
from cluster.scheduler import rollout_seed
from rewards.annotator_actor import create_annotator_actor

log = logging.getLogger("oniray")


class RestartBudgetExceeded(RuntimeError):
    """A role died once more than its ``max_restarts`` allow."""


def _restarted(role: str) -> None:
    # actor_id="driver": the driver counts restarts (telemetry creates these series at zero).
    m.ACTOR_RESTARTS.labels(role=role, actor_id="driver").inc()


class RolloutSupervisor:
    """The rollout actors, their incarnations, and the restart budget they share."""

    def __init__(self, cfg: OniConfig) -> None:
        self.cfg = cfg
        n = cfg.rollout.num_actors
        self.incarnations = [0] * n
        self.restarts = 0  # this session
        self.actors: list[Any] = [self._create(i) for i in range(n)]
        self.died_at: dict[int, float] = {}  # actor index -> when its death was noticed

    def _create(self, actor_id: int) -> Any:
        rc = self.cfg.rollout
        options = {"num_cpus": rc.num_cpus, "resources": rc.resources or None}
        seed = rollout_seed(self.cfg.run.seed, actor_id, self.incarnations[actor_id])
        return RolloutActor.options(**options).remote(self.cfg, actor_id=actor_id, seed=seed)

    def replace(self, index: int, error: Exception) -> Any:
        """A fresh actor in place of the dead ``index``; raises past ``rollout.max_restarts``."""
        limit = self.cfg.rollout.max_restarts
        if self.restarts >= limit:
            raise RestartBudgetExceeded(
                f"rollout actor {index} died and the {limit} restarts of rollout.max_restarts "
                f"are used up ({type(error).__name__})"
            )
        ray.kill(self.actors[index])  # an actor that is only unreachable must not come back
        self.restarts += 1
        self.incarnations[index] += 1
        self.actors[index] = self._create(index)
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

    def __init__(self, cfg: OniConfig, *, labels_dir: str) -> None:
        self.cfg, self.labels_dir = cfg, labels_dir
        self.restarts = 0
        self.handle = self._create()
        self._ready: ray.ObjectRef | None = self.handle.ready.remote()
        self.died_at: float | None = None

    def _create(self) -> Any:
        return create_annotator_actor(
            self.cfg.rewards, store_dir=self.labels_dir, env_id=self.cfg.env.id
        )

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
        limit = self.cfg.rewards.annotator.max_restarts
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
