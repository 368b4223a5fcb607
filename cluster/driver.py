"""The driver: wires every component, runs the training loop, checkpoints, reports.

Consumes: a validated :class:`OniConfig`. Emits: the run folder (``cluster.run_dir``), a live
progress line, and a final summary. The driver moves ObjectRefs between components and never
fetches a fragment: it only reads the small stats objects that come with each one.

The loop keeps ``fragments_in_flight`` sample calls outstanding per rollout actor, groups
finished fragments into batches of ``batch_size`` steps, and hands a batch to the learner group
while at most ``max_queued_batches`` updates are outstanding. When that bound is reached the
driver stops issuing sample calls: rollouts wait rather than fill the object store.

This module is the Ray runtime alone: every decision (when to sample, batching, the lag
bound, backpressure, the stop, the accounting) is ``cluster.scheduler``'s, and the run
folder's rows, checkpoints and summary are ``cluster.loop``'s, shared with the in-process
runtime (``cluster.local_runtime``). Here, commands become remote calls and ``ray.wait``
results become events.

Failures (``cluster.supervision``): a dead rollout actor or annotator is restarted, within
``max_restarts``; a dead learner rank takes its group down, which is rebuilt from the newest
checkpoint within ``learner.max_restarts`` (the updates since then are counted as lost).
What a checkpoint holds and what a resume restores exactly: ``cluster.checkpointing``.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

import ray

from actors.rollout_worker import EpisodeStats
from cluster.config import OniConfig, to_yaml
from cluster.loop import Clock, RunLoop, resumed_and_stoppable
from cluster.progress import annotator_columns
from cluster.ray_setup import init_ray
from cluster.run_dir import RunDir, atomic_write_text
from cluster.scheduler import (
    Checkpoint,
    Command,
    Drop,
    RebuildLearners,
    RestartActor,
    Sample,
    Train,
)
from cluster.supervision import AnnotatorSupervisor, RestartBudgetExceeded, RolloutSupervisor
from cluster.telemetry import Telemetry, object_store_used_bytes
from cluster.tensorboard import EventWriter
from learner import intrinsic as intrinsic_keys
from learner.learner_group import SKIPPED, WEIGHTS, LearnerGroup

log = logging.getLogger("oniray")

REWARD_MODEL_POLL_S = 2.0  # also how soon a dead annotator is noticed


@dataclass
class Components:
    learners: LearnerGroup
    rollouts: RolloutSupervisor  # the rollout actors, restarted when they die
    num_actions: int
    annotator: AnnotatorSupervisor | None = None  # when the reward service runs


@dataclass
class _Sample:
    """A sample call in flight: whose it is and the refs it returns besides its stats."""

    actor_index: int
    incarnation: int  # of that actor when the call was issued
    fragment: ray.ObjectRef
    captions: ray.ObjectRef


def build_components(cfg: OniConfig, *, labels_dir: str | None = None) -> Components:
    """Create every actor and hand each its handles. One line per data-flow edge:

    rollout actor -> driver:     fragment ObjectRef + small stats (the driver forwards the ref)
    driver -> learner group:     batches of fragment refs (each learner fetches its share)
    learner group -> actors:     versioned weights as one ObjectRef (fetched when it changes)
    rollout actor -> annotator:  each fragment's distinct messages as a ref, via the driver
    annotator -> learner group:  the newest reward model as (version, ObjectRef), via the driver
    """
    rollouts = RolloutSupervisor(cfg)
    infos = ray.get([a.info.remote() for a in rollouts.actors])
    num_actions = infos[0]["num_actions"]
    learners = LearnerGroup(cfg, num_actions=num_actions)
    annotator = None
    if cfg.rewards.annotator.enabled:
        if labels_dir is None:
            raise ValueError("the annotator needs a labels directory (the run's labels/)")
        annotator = AnnotatorSupervisor(cfg, labels_dir=labels_dir)
        annotator.wait_ready()  # a judge that cannot load fails here, not later
    return Components(learners=learners, rollouts=rollouts, num_actions=num_actions,
                      annotator=annotator)


def telemetry_sources(parts: Components) -> list[tuple[str, Any]]:
    """Every live component's metrics, by name (called again after each restart)."""
    return (
        [(f"rollout-{i}", a.metrics.remote) for i, a in enumerate(parts.rollouts.actors)]
        + [(f"learner-{r}", a.metrics.remote) for r, a in enumerate(parts.learners.actors)]
        + ([("annotator", parts.annotator.handle.metrics.remote)] if parts.annotator else [])
    )


class Trainer(RunLoop):
    """The Ray runtime: scheduler commands become remote calls, ``ray.wait`` results events."""

    def __init__(self, cfg: OniConfig, run_dir: RunDir, parts: Components,
                 telemetry: Telemetry | None = None, events: EventWriter | None = None) -> None:
        super().__init__(cfg, run_dir, events)
        self.parts, self.telemetry = parts, telemetry
        self.inflight: dict[ray.ObjectRef, _Sample] = {}  # by stats ref
        self.updates: collections.deque[ray.ObjectRef] = collections.deque()  # = sched.updates
        self.annotations: collections.deque[ray.ObjectRef] = collections.deque()
        self._model_poll: ray.ObjectRef | None = None
        self._last_model_poll = 0.0

    # ---- lifecycle ---------------------------------------------------------------------
    def restore(self, state: dict[str, Any]) -> None:
        self.restore_counters(state)
        self.parts.learners.load_state(state["learner"])

    def checkpoint(self) -> None:
        """Wait for the outstanding updates, so the learner state holds every update counted."""
        try:
            self._drain()
            learner_state = self.parts.learners.state()
        except ray.exceptions.RayActorError as exc:  # died during the wait: no checkpoint
            self._on_learner_lost(exc)
            return
        self._run(self.write_checkpoint(learner_state))

    def _drain(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.updates:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            result = ray.get(self.updates[0], timeout=remaining)
            self.updates.popleft()
            self._apply_update(result, pump=False)

    # ---- random baseline ----------------------------------------------------------------
    def measure_random_baseline(self) -> None:
        plan = self.baseline_plan()
        if plan is None:
            return
        per_env, min_steps = plan
        started = time.perf_counter()
        results: list[EpisodeStats] = ray.get(
            [a.random_baseline.remote(episodes_per_env=per_env, min_steps=min_steps)
             for a in self.parts.rollouts.actors]
        )
        self.set_baseline(results, time.perf_counter() - started)

    # ---- the loop ---------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        self._run(self.sched.start(self.parts.learners.weights()))
        clock = Clock(self)
        while not self.sched.stopping:
            done, _ = ray.wait([*self.inflight, *self.updates], num_returns=1, timeout=0.5)
            for ref in done:
                if ref in self.inflight:
                    self._on_sample(ref, self.inflight.pop(ref))
                elif self.updates and ref == self.updates[0]:
                    self._on_update()
            if self.updates and not self.sched.learner_down:
                try:  # a dead rank > 0 leaves rank 0 waiting in an all-reduce: never done
                    self.parts.learners.raise_peer_errors()
                except ray.exceptions.RayError as exc:  # dead, or failed when a peer died
                    self._on_learner_lost(exc)
            if self.parts.annotator is not None:
                self._poll_reward_model(time.perf_counter())
            sps = clock.tick()
            if sps is not None:
                self.report(sps, object_store_mb=_mib(object_store_used_bytes()),
                            annotator=self._annotator_columns())
        self._final_checkpoint()
        return self.finish()

    def _run(self, cmds: list[Command]) -> None:
        """Carry out the scheduler's commands, and those their outcomes bring."""
        queue = collections.deque(cmds)
        while queue:
            cmd = queue.popleft()
            if isinstance(cmd, Sample):
                actor = self.parts.rollouts.actors[cmd.actor]
                frag_ref, stats_ref, captions_ref = actor.sample.remote(cmd.weights)
                self.inflight[stats_ref] = _Sample(cmd.actor, cmd.incarnation, frag_ref,
                                                   captions_ref)
            elif isinstance(cmd, Train):
                self.note_train(cmd.lags)
                try:
                    ref = self.parts.learners.update(cmd.fragments, reward_model=cmd.reward_model)
                except ray.exceptions.RayError as exc:  # a rank > 0 died (or failed with it)
                    queue.extend(self._on_learner_lost(exc, run=False))
                    continue
                self.updates.append(ref)
            elif isinstance(cmd, Drop):
                self.note_drop(cmd)
            elif isinstance(cmd, Checkpoint):
                self.checkpoint()
            elif isinstance(cmd, RestartActor):
                queue.extend(self._restart_rollout(cmd.actor))
            elif isinstance(cmd, RebuildLearners):
                queue.extend(self._rebuild_learners())

    def _on_sample(self, stats_ref: ray.ObjectRef, sample: _Sample) -> None:
        rollouts, i = self.parts.rollouts, sample.actor_index
        try:
            stats: EpisodeStats = ray.get(stats_ref)
        except ray.exceptions.RayActorError:
            self._run(self.sched.actor_lost(i, sample.incarnation))
            return
        except ray.exceptions.RayTaskError as exc:  # weights owned by a learner that died
            if not isinstance(exc.cause, ray.exceptions.ObjectLostError):
                raise
            log.warning("rollout actor %d could not fetch its weights (%s): fragment lost",
                        i, type(exc.cause).__name__)
            self._run(self.sched.sample_failed(i, sample.incarnation))
            return
        back = rollouts.back(i)
        if back is not None:
            pid = ray.get(rollouts.actors[i].info.remote())["pid"]
            log.warning("rollout actor %d back after %.1f s (pid %d)", i, back, pid)
        self.record_episodes(stats)
        self._annotate(sample.captions)
        self._run(self.sched.fragment_ready(i, sample.incarnation, sample.fragment,
                                            version=stats.policy_version, steps=stats.env_steps))

    def _restart_rollout(self, i: int) -> list[Command]:
        try:
            self.parts.rollouts.replace(i, RuntimeError("sample call failed"))
        except RestartBudgetExceeded as exc:
            self.request_stop(str(exc), failed=True)
            return []
        self._sync_telemetry()
        return self.sched.actor_restarted(i)

    def _on_update(self) -> None:
        try:
            result = ray.get(self.updates[0])
        except ray.exceptions.RayActorError as exc:
            self._on_learner_lost(exc)
            return
        self.updates.popleft()
        self._run(self._apply_update(result))

    def _apply_update(self, result: dict[str, Any], *, pump: bool = True) -> list[Command]:
        if result.get(SKIPPED):  # skipped at a stop: never trained on
            return self.sched.update_done(None, skipped=True)
        self.note_update(result)
        return self.sched.update_done(result[WEIGHTS], pump=pump)

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
            self._run(cmds)
            return []
        return cmds

    def _rebuild_learners(self) -> list[Command]:
        """A new group with the newest checkpoint's learner state (a fresh one if none)."""
        started = time.perf_counter()
        self.parts.learners.shutdown()
        self.parts.learners = LearnerGroup(self.cfg, num_actions=self.parts.num_actions)
        loaded = self.run_dir.load_latest_checkpoint()
        if loaded is not None:
            self.parts.learners.load_state(loaded[0]["learner"])
        weights = self.parts.learners.weights()
        log.warning("learner group rebuilt in %.1f s from %s (policy version %d); pids %s",
                    time.perf_counter() - started, loaded[1].name if loaded else "scratch",
                    weights.version, self.parts.learners.pids())
        self._sync_telemetry()
        return self.sched.learner_restored(weights)

    # ---- the reward service -------------------------------------------------------------
    def _annotate(self, captions_ref: ray.ObjectRef) -> None:
        sup = self.parts.annotator
        if sup is None:
            return
        while self.annotations and _is_done(self.annotations[0]):
            self.annotations.popleft()  # errors of a dead annotator's calls: nothing to do
        limit = self.cfg.rewards.annotator.max_pending_submissions
        if len(self.annotations) < limit and sup.ready_now():
            self.annotations.append(sup.handle.submit_captions.remote([captions_ref]))
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
    def _final_checkpoint(self) -> None:
        """Finish the update in progress, skip those queued behind it, checkpoint: within
        ``run.stop_timeout_s`` even when updates are slow."""
        cfg = self.cfg
        if self.sched.learner_down:
            self._run(self.sched.drop_pending())
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
            self._run(self.sched.drop_pending())
            self.say_newest_checkpoint()
            return
        self.checkpoint()
        # Fragments that reached the driver but will never be trained on count as dropped, so
        # produced == trained + dropped holds in the summary as in the checkpoint.
        self._run(self.sched.drop_pending())
        if self.sched.learner_down:
            self.say_newest_checkpoint()

    def _annotator_columns(self) -> dict[str, Any]:
        """The reward service's columns of the row (none when it does not run)."""
        if self.parts.annotator is None:
            return {}
        try:
            stats = ray.get(self.parts.annotator.handle.stats.remote(), timeout=5)
        except (ray.exceptions.RayError, TimeoutError):
            stats = None  # a busy or restarting annotator must not stall training
        return annotator_columns(stats, reward_model_version_trained=int(
            self.last_loss.get(intrinsic_keys.REWARD_MODEL_VERSION, -1)),
            learner_losses=self.last_loss)


def _pids(parts: Components) -> str:
    """Each component's process id, for operators (and fault tests) that signal one."""
    names = [f"rollout-{i}" for i in range(len(parts.rollouts.actors))]
    pids = [i["pid"] for i in ray.get([a.info.remote() for a in parts.rollouts.actors])]
    names += [f"learner-{r}" for r in range(len(parts.learners.actors))]
    pids += parts.learners.pids()
    if parts.annotator is not None:
        names.append("annotator")
        pids.append(ray.get(parts.annotator.handle.info.remote())["pid"])
    return " ".join(f"{n}={p}" for n, p in zip(names, pids, strict=True))


def _mib(num_bytes: float | None) -> float | None:
    return None if num_bytes is None else num_bytes / 2**20


def _is_done(ref: ray.ObjectRef) -> bool:
    return bool(ray.wait([ref], timeout=0)[0])


def run_training(cfg: OniConfig, run_dir: RunDir, *, resume_state: dict | None = None) -> dict:
    """Build, (restore,) train, checkpoint, summarise. SIGINT/SIGTERM stop with a checkpoint.

    The summary's ``failed`` is true when a failure, not the budget or a signal, stopped it.
    """
    atomic_write_text(run_dir.config, to_yaml(cfg))
    init_ray(cfg)
    telemetry = Telemetry(cfg.metrics)
    telemetry.start()
    parts = build_components(cfg, labels_dir=str(run_dir.labels))
    telemetry.set_sources(telemetry_sources(parts))
    log.info("processes: %s", _pids(parts))
    events = EventWriter(run_dir.root)
    trainer = Trainer(cfg, run_dir, parts, telemetry, events)
    try:
        with resumed_and_stoppable(trainer, trainer.restore, resume_state):
            trainer.measure_random_baseline()
            return trainer.train()
    finally:
        telemetry.refresh()  # the final numbers, for a scrape that comes right after the end
        telemetry.stop()
        events.close()
        for actor in parts.rollouts.actors:
            ray.kill(actor)
        parts.learners.shutdown()
        if parts.annotator is not None:
            parts.annotator.stop()  # flushes the label store
