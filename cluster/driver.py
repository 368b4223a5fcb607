"""The driver: the Ray runtime of the run loop, from ``oniray train``.

Consumes: a validated :class:`OniConfig`. Emits: the run folder (``cluster.run_dir``), a live
progress line, and a final summary. The driver moves ObjectRefs between components and never
fetches a fragment: it only reads the small stats objects that come with each one.

The loop keeps ``fragments_in_flight`` sample calls outstanding per rollout actor, groups
finished fragments into batches of ``batch_size`` steps, and hands a batch to the learner group
while at most ``max_queued_batches`` updates are outstanding. When that bound is reached the
driver stops issuing sample calls: rollouts wait rather than fill the object store.

This module is the Ray runtime alone: every decision (when to sample, batching, the lag
bound, backpressure, the stop, the accounting) is ``cluster.scheduler``'s; the session, the
command dispatch and the run folder's rows, checkpoints and summary are ``cluster.loop``'s,
and the components and their wiring ``cluster.components``', all shared with the in-process
runtime (``cluster.local_runtime``). Here, commands become remote calls and ``ray.wait``
results become events.

Failures (``cluster.supervision``): a dead rollout actor or annotator is restarted, within
``max_restarts``; a dead learner rank takes its group down, which is rebuilt from the newest
checkpoint within ``learner.max_restarts`` (the updates since then are counted as lost).
A dead node is all of these at once, plus the fragments in its object store: a batch the
learner cannot fetch comes back ``LOST`` and is dropped (reason ``object_lost``), the
learner living on. What a checkpoint holds and what a resume restores exactly:
``cluster.checkpointing``.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

import ray

from actors.rollout_worker import EpisodeStats
from actors.versioned import VersionedRef
from cluster.components import OnRay, RayComponents, connect_components, learner_group
from cluster.config import OniConfig, to_yaml
from cluster.loop import RunLoop
from cluster.ray_setup import init_ray
from cluster.run_dir import RunDir, atomic_write_text
from cluster.scheduler import Command, Sample, Train
from cluster.supervision import RestartBudgetExceeded
from cluster.telemetry import Telemetry, object_store_used_bytes
from learner.learner_group import LOST, SKIPPED, WEIGHTS

log = logging.getLogger("oniray")

# How often the driver asks the annotator for its newest model: one small actor call that
# returns a reference. Also how soon a dead annotator is noticed. Half a second keeps a new
# model's first use close to its publication even in runs of a few seconds.
REWARD_MODEL_POLL_S = 0.5
# A run that has taken no sample and no update for this long says what it waits
# on (once per period): a stall otherwise shows only as 0 steps/s, with no error anywhere.
STALL_WARN_S = 30.0


@dataclass
class _Sample:
    """A sample call in flight: whose it is and the refs it returns besides its stats."""

    actor_index: int
    incarnation: int  # of that actor when the call was issued
    fragment: ray.ObjectRef
    captions: ray.ObjectRef


def telemetry_sources(parts: RayComponents) -> list[tuple[str, Any]]:
    """Every live component's metrics, by name (called again after each restart)."""
    return (
        [(f"rollout-{i}", a.metrics.remote) for i, a in enumerate(parts.rollouts.actors)]
        + [(f"learner-{r}", a.metrics.remote) for r, a in enumerate(parts.learners.actors)]
        + ([("annotator", parts.annotator.handle.metrics.remote)] if parts.annotator else [])
    )


class RayRunLoop(RunLoop):
    """The Ray runtime: scheduler commands become remote calls, ``ray.wait`` results events."""

    parts: RayComponents

    def __init__(self, cfg: OniConfig, run_dir: RunDir, parts: RayComponents, *,
                 telemetry: Telemetry | None = None) -> None:
        super().__init__(cfg, run_dir, parts)
        self.telemetry = telemetry
        self.inflight: dict[ray.ObjectRef, _Sample] = {}  # by stats ref
        self.updates: collections.deque[ray.ObjectRef] = collections.deque()  # = sched.updates
        self.annotations: collections.deque[ray.ObjectRef] = collections.deque()
        self._model_poll: ray.ObjectRef | None = None
        self._deaths: dict[int, Exception] = {}  # rollout actor -> how it died, for the log
        self._last_model_poll = 0.0
        self._last_event = self._last_stall_warning = time.monotonic()

    # ---- where events come from --------------------------------------------------------------
    def step(self) -> bool:
        done, _ = ray.wait([*self.inflight, *self.updates], num_returns=1, timeout=0.5)
        handled = False
        for ref in done:
            if ref in self.inflight:
                self._on_sample(ref, self.inflight.pop(ref))
                handled = True
        # Updates finish in order, but the one ref ray.wait returns may be any finished one (it
        # picks among them in hash order, not the list's): an update behind a finished head
        # would come back at every turn while the head waited for ever. So each turn takes
        # every finished update from the head.
        while self.updates and _is_done(self.updates[0]):
            self._on_update()
            handled = True
        self._watch_for_stall(handled)
        if self.updates and not self.sched.learner_down:
            try:  # a dead rank > 0 leaves rank 0 waiting in an all-reduce: never done
                self.parts.learners.raise_peer_errors()
            except ray.exceptions.RayError as exc:  # dead, or failed when a peer died
                self._on_learner_lost(exc)
        if self.parts.annotator is not None:
            self._poll_reward_model(time.perf_counter())
        return True

    def _watch_for_stall(self, handled: bool) -> None:
        """``handled``: this turn took a sample or an update (a ref merely ready is not
        progress: the stall this watch was written for had one ready at every turn)."""
        now = time.monotonic()
        if handled:
            self._last_event = now
            return
        if (now - self._last_event < STALL_WARN_S
                or now - self._last_stall_warning < STALL_WARN_S):
            return
        self._last_stall_warning = now
        sched = self.sched
        log.warning(
            "no sample or update taken for %.0f s: %d sample calls in flight (actors %s), "
            "%d updates outstanding (the scheduler counts %d), %d fragments ready, %d idle "
            "sample slots, learner %s", now - self._last_event, len(self.inflight),
            sorted({s.actor_index for s in self.inflight.values()}), len(self.updates),
            len(sched.updates), len(sched.ready), len(sched.idle),
            "down" if sched.learner_down else "up")

    def _on_sample(self, stats_ref: ray.ObjectRef, sample: _Sample) -> None:
        rollouts, i = self.parts.rollouts, sample.actor_index
        try:
            stats: EpisodeStats = ray.get(stats_ref)
        except ray.exceptions.RayActorError as exc:  # its process, or its node, died
            self._deaths[i] = exc
            self.carry_out(self.sched.actor_lost(i, sample.incarnation))
            return
        except ray.exceptions.RayTaskError as exc:  # weights owned by a learner that died
            if not isinstance(exc.cause, ray.exceptions.ObjectLostError):
                raise
            log.warning("rollout actor %d could not fetch its weights (%s): fragment lost",
                        i, type(exc.cause).__name__)
            self.carry_out(self.sched.sample_failed(i, sample.incarnation))
            return
        back = rollouts.back(i)
        if back is not None:
            info = ray.get(rollouts.actors[i].info.remote())
            log.warning("rollout actor %d back after %.1f s (pid %d) on node %s", i, back,
                        info["pid"], info["node_id"])
        self.carry_out(self.fragment_arrived(i, sample.incarnation, sample.fragment,
                                             stats=stats, captions=sample.captions))

    def _on_update(self) -> None:
        try:
            result = ray.get(self.updates[0])
        except ray.exceptions.RayActorError as exc:
            self._on_learner_lost(exc)
            return
        self.updates.popleft()
        self.carry_out(self._apply_update(result))

    def _apply_update(self, result: dict[str, Any], *, pump: bool = True) -> list[Command]:
        if result.get(SKIPPED):  # skipped at a stop: never trained on
            return self.sched.update_done(None, skipped=True)
        if result.get(LOST):  # a fragment went down with its node: the learner lives on
            log.warning("a batch could not be fetched (an object lost with its node): "
                        "dropped untrained")
            return self.sched.update_lost(pump=pump)
        return self.update_arrived(result, result[WEIGHTS], pump=pump)

    # ---- how commands run: as remote calls ---------------------------------------------------
    def carry_out(self, cmds: list[Command]) -> None:
        """At once, with the commands their outcomes bring."""
        queue = collections.deque(cmds)
        while queue:
            queue.extend(self.execute(queue.popleft()))

    def weights(self) -> VersionedRef:
        return self.parts.learners.weights()

    def sample(self, cmd: Sample) -> list[Command]:
        actor = self.parts.rollouts.actors[cmd.actor]
        frag_ref, stats_ref, captions_ref = actor.sample.remote(cmd.weights)
        self.inflight[stats_ref] = _Sample(cmd.actor, cmd.incarnation, frag_ref, captions_ref)
        return []

    def update(self, cmd: Train) -> list[Command]:
        try:
            ref = self.parts.learners.update(cmd.fragments, reward_model=cmd.reward_model)
        except ray.exceptions.RayError as exc:  # a rank > 0 died (or failed with it)
            return self._on_learner_lost(exc, run=False)
        self.updates.append(ref)
        return []

    def checkpoint(self) -> list[Command]:
        """Wait for the outstanding updates, so the learner state holds every update counted.
        What batching resumes with runs at once, ahead of the commands queued behind."""
        try:
            self._drain()
            learner_state = self.parts.learners.state()
        except ray.exceptions.RayActorError as exc:  # died during the wait: no checkpoint
            self._on_learner_lost(exc)
            return []
        self.carry_out(self.write_checkpoint(learner_state))
        return []

    def _drain(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.updates:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            result = ray.get(self.updates[0], timeout=remaining)
            self.updates.popleft()
            self._apply_update(result, pump=False)

    def play_random(self, *, episodes_per_env: int, min_steps: int) -> list[EpisodeStats]:
        return ray.get(
            [a.random_baseline.remote(episodes_per_env=episodes_per_env, min_steps=min_steps)
             for a in self.parts.rollouts.actors]
        )

    def object_store_mb(self) -> float | None:
        return _mib(object_store_used_bytes())

    # ---- failures ---------------------------------------------------------------------------
    def restart_actor(self, actor: int) -> list[Command]:
        try:
            self.parts.rollouts.replace(
                actor, self._deaths.pop(actor, RuntimeError("sample call failed")))
        except RestartBudgetExceeded as exc:
            self.request_stop(str(exc), failed=True)
            return []
        self._sync_telemetry()
        return self.sched.actor_restarted(actor)

    def _on_learner_lost(self, error: Exception, *, run: bool = True) -> list[Command]:
        """A rank died: its group is rebuilt from the newest checkpoint (the scheduler counts
        what is lost), or the run stops when learner.max_restarts is used up."""
        log.warning("a learner died (%s); the updates since the newest checkpoint are lost",
                    type(error).__name__)
        self.updates.clear()
        if self.sched.learner_restarts >= self.cfg.learner.max_restarts:
            self.request_stop(f"a learner died ({type(error).__name__}) and the "
                              f"{self.cfg.learner.max_restarts} restarts of learner.max_restarts "
                              f"are used up; its updates since the newest checkpoint are lost. "
                              f"Resume with: oniray train --resume {self.run_dir.root}",
                              failed=True)
        cmds = self.sched.learner_lost()
        if run:
            self.carry_out(cmds)
            return []
        return cmds

    def rebuild_learners(self) -> list[Command]:
        """A new group with the newest checkpoint's learner state (a fresh one if none)."""
        started = time.perf_counter()
        self.parts.learners.shutdown()
        # Placed like the first group: on a node offering learner.resources, or, if none is
        # live (its node died), once one joins; the driver waits here meanwhile.
        log.warning("rebuilding the learner group (learner.resources %s)",
                    dict(self.cfg.learner.resources) or "none")
        self.parts.learners = learner_group(self.cfg, num_actions=self.parts.num_actions)
        loaded = self.run_dir.load_latest_checkpoint()
        if loaded is not None:
            self.parts.learners.load_state(loaded[0]["learner"])
        weights = self.parts.learners.weights()
        infos = self.parts.learners.infos()
        log.warning("learner group rebuilt in %.1f s from %s (policy version %d); pids %s "
                    "on nodes %s", time.perf_counter() - started,
                    loaded[1].name if loaded else "scratch", weights.version,
                    [i["pid"] for i in infos], [i["node_id"] for i in infos])
        self._sync_telemetry()
        return self.sched.learner_restored(weights)

    # ---- the reward service -------------------------------------------------------------
    def annotate(self, captions: ray.ObjectRef) -> None:
        """By reference, nested in a list so that no process but the annotator fetches it;
        skipped (and counted) while ``max_pending_submissions`` calls are outstanding."""
        sup = self.parts.annotator
        if sup is None:
            return
        while self.annotations and _is_done(self.annotations[0]):
            self.annotations.popleft()  # errors of a dead annotator's calls: nothing to do
        limit = self.cfg.rewards.annotator.max_pending_submissions
        if len(self.annotations) < limit and sup.ready_now():
            self.annotations.append(sup.handle.submit_captions.remote([captions]))
        else:
            self.counters.annotations_skipped += 1

    def _poll_reward_model(self, now: float) -> None:
        """The newest reward model, polled without waiting (the judge is never waited on).
        The poll doubles as the annotator's health check."""
        sup = self.parts.annotator
        assert sup is not None
        try:
            if not sup.available():
                return
            if self._model_poll is not None and _is_done(self._model_poll):
                published = ray.get(self._model_poll)
                self._model_poll = None
                if published is not None:
                    self.sched.reward_model_published(published)
            if self._model_poll is None and now - self._last_model_poll >= REWARD_MODEL_POLL_S:
                self._model_poll = sup.handle.reward_model_ref.remote()
                self._last_model_poll = now
        except ray.exceptions.RayActorError as exc:
            self._model_poll = None
            # The dead annotator owned the model's object: a learner still to fetch it would
            # fail. None keeps every learner on the model it already has.
            self.sched.reward_model_published(None)
            try:
                sup.replace(exc)
            except RestartBudgetExceeded as budget:
                self.request_stop(str(budget), failed=True)
                return
            self.counters.annotator_restarts += 1
            self._sync_telemetry()

    def _sync_telemetry(self) -> None:
        if self.telemetry is not None:
            self.telemetry.set_sources(telemetry_sources(self.parts))

    # ---- stopping -----------------------------------------------------------------------
    def wind_down(self) -> None:
        """Finish the update in progress, skip those queued behind it, checkpoint: within
        ``run.stop_timeout_s`` even when updates are slow."""
        cfg = self.cfg
        if self.sched.learner_down:
            self.carry_out(self.sched.drop_pending())
            self.say_newest_checkpoint()
            return
        if self.sched.skip_queued():
            self.parts.learners.skip_after(self.updates[0])
        try:
            self._drain(timeout=cfg.run.stop_timeout_s)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
            log.error("the learner did not finish its update within run.stop_timeout_s = %s s "
                      "(%s): no final checkpoint", cfg.run.stop_timeout_s, type(exc).__name__)
            self.sched.failed = True
            self._on_learner_lost(exc)  # its updates since the newest checkpoint are lost
            self.carry_out(self.sched.drop_pending())
            self.say_newest_checkpoint()
            return
        self.checkpoint()
        # Fragments that reached the driver but will never be trained on count as dropped, so
        # produced == trained + dropped holds in the summary as in the checkpoint.
        self.carry_out(self.sched.drop_pending())
        if self.sched.learner_down:
            self.say_newest_checkpoint()

    def annotator_stats(self) -> dict[str, float] | None:
        assert self.parts.annotator is not None
        try:
            return ray.get(self.parts.annotator.handle.stats.remote(), timeout=5)
        except (ray.exceptions.RayError, TimeoutError):
            return None  # a busy or restarting annotator must not stall training


def _where(parts: RayComponents, key: str) -> str:
    """Each component's ``key`` (``pid``: for operators and fault tests that signal one;
    ``node_id``: which node to drain or lose), as ``name=value ...``."""
    handles = [(f"rollout-{i}", a) for i, a in enumerate(parts.rollouts.actors)]
    handles += [(f"learner-{r}", a) for r, a in enumerate(parts.learners.actors)]
    if parts.annotator is not None:
        handles.append(("annotator", parts.annotator.handle))
    infos = ray.get([a.info.remote() for _, a in handles])
    return " ".join(f"{name}={info[key]}" for (name, _), info in zip(handles, infos,
                                                                      strict=True))


def _mib(num_bytes: float | None) -> float | None:
    return None if num_bytes is None else num_bytes / 2**20


def _is_done(ref: ray.ObjectRef) -> bool:
    return bool(ray.wait([ref], timeout=0)[0])


def train_on_ray(cfg: OniConfig, run_dir: RunDir, *, resume_state: dict | None = None) -> dict:
    """Build, (restore,) train, checkpoint, summarise. SIGINT/SIGTERM stop with a checkpoint.

    The summary's ``failed`` is true when a failure, not the budget or a signal, stopped it.
    """
    atomic_write_text(run_dir.config, to_yaml(cfg))
    init_ray(cfg)
    telemetry = Telemetry(cfg.metrics)
    telemetry.start()
    makers = OnRay()
    parts = connect_components(cfg, makers, labels_dir=str(run_dir.labels))
    telemetry.set_sources(telemetry_sources(parts))
    log.info("processes: %s", _where(parts, "pid"))
    log.info("nodes: %s", _where(parts, "node_id"))
    try:
        return RayRunLoop(cfg, run_dir, parts, telemetry=telemetry).run(resume_state)
    finally:
        telemetry.refresh()  # the final numbers, for a scrape that comes right after the end
        telemetry.stop()
        makers.close(parts)
