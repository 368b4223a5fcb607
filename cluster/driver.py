"""The driver: wires every component, runs the training loop, checkpoints, reports.

Consumes: a validated :class:`OniConfig`. Emits: the run folder (``cluster.run_dir``), a live
progress line, and a final summary. The driver moves ObjectRefs between components and never
fetches a fragment: it only reads the small stats objects that come with each one.

The loop keeps ``fragments_in_flight`` sample calls outstanding per rollout actor, groups
finished fragments into batches of ``batch_size`` steps, and hands a batch to the learner group
while at most ``max_queued_batches`` updates are outstanding. When that bound is reached the
driver stops issuing sample calls: rollouts wait rather than fill the object store.

Failures (``cluster.supervision``): a dead rollout actor or annotator is restarted, within
``max_restarts``; a dead learner stops the run, to be resumed from the newest checkpoint.
What a checkpoint holds and what a resume restores exactly: ``cluster.checkpointing``.
"""

from __future__ import annotations

import collections
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from actors.envs import has_goal
from actors.rollout_worker import EpisodeStats
from cluster import metrics as m
from cluster.checkpointing import (
    Counters,
    checkpoint_state,
    restored_counters,
    restored_reward_model_version,
)
from cluster.config import OniConfig, to_yaml
from cluster.progress import LoopState, annotator_columns, metrics_row, progress_line
from cluster.ray_setup import init_ray
from cluster.report import mean_and_interval, plot_curve
from cluster.run_dir import RunDir, atomic_write_text
from cluster.summary import success_rate, summarise
from cluster.supervision import AnnotatorSupervisor, RestartBudgetExceeded, RolloutSupervisor
from cluster.telemetry import Telemetry, object_store_used_bytes
from cluster.tensorboard import EventWriter
from learner import intrinsic as intrinsic_keys
from learner.learner_group import SKIPPED, LearnerGroup

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


class Trainer:
    """The training loop over already-built components."""

    def __init__(self, cfg: OniConfig, run_dir: RunDir, parts: Components,
                 telemetry: Telemetry | None = None, events: EventWriter | None = None) -> None:
        self.cfg, self.run_dir, self.parts, self.telemetry = cfg, run_dir, parts, telemetry
        self.events = events  # TensorBoard: the same rows as metrics.parquet
        self._has_goal = has_goal(cfg.env.id)
        self.counters = Counters()
        self.baseline: dict[str, float] | None = None
        self.metric_rows: list[dict[str, Any]] = run_dir.read_metrics()
        self._stop_reason: str | None = None
        self._failed = False  # stopped by a failure, not by budget or signal: exit code 1
        self._learner_lost = False
        self._lags: list[int] = []
        self._last_loss: dict[str, float] = {}
        self._labels = m.component_labels(role="driver", actor_id=0)
        self._reward_model_version = -1
        self.version, self.weights_ref = -1, None
        self.inflight: dict[ray.ObjectRef, _Sample] = {}  # by stats ref
        self.idle: collections.deque[tuple[int, int]] = collections.deque()  # (actor, incarn.)
        self.ready: collections.deque[tuple[ray.ObjectRef, int]] = collections.deque()
        self.updates: collections.deque[ray.ObjectRef] = collections.deque()
        self.annotations: collections.deque[ray.ObjectRef] = collections.deque()
        self.reward_model: tuple[int, ray.ObjectRef] | None = None
        self._model_poll: ray.ObjectRef | None = None
        self._last_model_poll = 0.0

    # ---- lifecycle ---------------------------------------------------------------------
    def request_stop(self, reason: str, *, failed: bool = False) -> None:
        if self._stop_reason is None:
            log.warning("stopping: %s", reason)
            self._stop_reason = reason
        self._failed |= failed

    def restore(self, state: dict[str, Any]) -> None:
        self.counters = restored_counters(state)
        self.baseline = state.get("baseline")
        self.parts.learners.load_state(state["learner"])
        self._reward_model_version = restored_reward_model_version(state)
        if self.parts.annotator is not None:
            self.parts.annotator.resume_from(self._reward_model_version)

    def checkpoint(self) -> None:
        """Wait for the queued updates, so the learner state holds every update counted."""
        try:
            while self.updates:
                self._apply_update(ray.get(self.updates[0]))
                self.updates.popleft()
            learner_state = self.parts.learners.get_state()
        except ray.exceptions.RayActorError as exc:  # died during the wait: no checkpoint
            self._on_learner_lost(exc)
            return
        state = checkpoint_state(
            self.cfg, counters=self.counters, pending_fragments=len(self.ready),
            baseline=self.baseline, learner_state=learner_state,
        )
        path = self.run_dir.save_checkpoint(state, update=self.counters.updates)
        log.debug("checkpoint %s", path)

    # ---- random baseline ----------------------------------------------------------------
    def measure_random_baseline(self) -> None:
        episodes = self.cfg.run.random_baseline_episodes
        if episodes == 0 or self.baseline is not None:
            return
        actors = self.parts.rollouts.actors
        envs = len(actors) * self.cfg.rollout.envs_per_actor
        per_env = max(1, -(-episodes // envs))
        min_steps = -(-self.cfg.run.random_baseline_min_steps // len(actors))
        started = time.perf_counter()
        results: list[EpisodeStats] = ray.get(
            [a.random_baseline.remote(episodes_per_env=per_env, min_steps=min_steps)
             for a in actors]
        )
        returns = [r for stats in results for r in stats.episode_returns]
        successes = [s for stats in results for s in stats.episode_successes]
        steps = sum(stats.env_steps for stats in results)
        mean, half = mean_and_interval(returns)
        self.baseline = {
            "mean_return": mean,
            "ci95": half,
            "success_rate": success_rate(successes) if self._has_goal else None,
            "episodes": len(returns),
            "env_steps": steps,
            "raw_sps": steps / max(time.perf_counter() - started, 1e-9),
        }
        print(
            f"random agent: mean return {mean:.2f} ± {half:.2f} over {len(returns)} episodes "
            f"({steps:,} steps)", flush=True
        )

    # ---- the loop ---------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        cfg, counters = self.cfg, self.counters
        self.version, self.weights_ref = self.parts.learners.weights()
        budget_s = None if cfg.run.max_minutes is None else cfg.run.max_minutes * 60
        for i in range(cfg.rollout.num_actors):
            self.idle.extend([(i, 0)] * cfg.rollout.fragments_in_flight)
        self._issue_samples(force=True)

        session_start = time.perf_counter()
        elapsed_before = counters.elapsed_s
        last_report = session_start
        steps_at_last_report = counters.env_steps_produced
        while self._stop_reason is None:
            done, _ = ray.wait([*self.inflight, *self.updates], num_returns=1, timeout=0.5)
            for ref in done:
                if ref in self.inflight:
                    self._on_sample(ref, self.inflight.pop(ref))
                else:
                    self.updates.remove(ref)
                    self._on_update(ref)
            self._feed_learner()
            self._issue_samples()
            now = time.perf_counter()
            if self.parts.annotator is not None:
                self._poll_reward_model(now)
            counters.elapsed_s = elapsed_before + (now - session_start)
            if counters.env_steps_produced >= cfg.run.total_env_steps:
                self._stop_reason = self._stop_reason or "step budget reached"
            elif budget_s is not None and now - session_start >= budget_s:
                self._stop_reason = self._stop_reason or "time budget reached"
            if now - last_report >= cfg.run.report_every_s or self._stop_reason:
                sps = (counters.env_steps_produced - steps_at_last_report) / (now - last_report)
                self._report(sps, self.version)
                last_report, steps_at_last_report = now, counters.env_steps_produced
        self._final_checkpoint()
        return self._finish(self.version)

    def _issue_samples(self, *, force: bool = False) -> None:
        """Backpressure: while a full batch already waits for a busy learner, actors pause.
        Fragments alive in the object store stay below
        (max_queued_batches + 1) * fragments_per_batch + num_actors * fragments_in_flight."""
        rollouts = self.parts.rollouts
        while self.idle and (force or len(self.ready) < self.cfg.fragments_per_batch):
            i, incarnation = self.idle.popleft()
            if incarnation != rollouts.incarnations[i]:
                continue  # a slot of a dead predecessor; its replacement got its own slots
            frag_ref, stats_ref, captions_ref = rollouts.actors[i].sample.remote(
                [self.weights_ref], self.version
            )
            self.inflight[stats_ref] = _Sample(i, incarnation, frag_ref, captions_ref)
        m.QUEUE_DEPTH.labels(**self._labels, queue="fragments_ready").set(len(self.ready))
        m.QUEUE_DEPTH.labels(**self._labels, queue="learner_updates").set(len(self.updates))

    def _on_sample(self, stats_ref: ray.ObjectRef, sample: _Sample) -> None:
        rollouts, i = self.parts.rollouts, sample.actor_index
        try:
            stats: EpisodeStats = ray.get(stats_ref)
        except ray.exceptions.RayActorError as exc:
            self._on_rollout_lost(sample, exc)
            return
        back = rollouts.back(i)
        if back is not None:
            pid = ray.get(rollouts.actors[i].info.remote())["pid"]
            log.warning("rollout actor %d back after %.1f s (pid %d)", i, back, pid)
        self.counters.env_steps_produced += stats.env_steps
        self._record_episodes(stats)
        self.ready.append((sample.fragment, stats.policy_version))
        if sample.incarnation == rollouts.incarnations[i]:
            self.idle.append((i, sample.incarnation))
        self._annotate(sample.captions)

    def _on_rollout_lost(self, sample: _Sample, error: Exception) -> None:
        """Count the fragment lost (once: each sample call is popped once); restart the actor
        on the first loss of its incarnation, the others are the same death."""
        self.counters.fragments_lost += 1
        m.FRAGMENTS_DROPPED.labels(**self._labels, reason="actor_lost").inc()
        rollouts, i = self.parts.rollouts, sample.actor_index
        if sample.incarnation != rollouts.incarnations[i]:
            return
        try:
            rollouts.replace(i, error)
        except RestartBudgetExceeded as exc:
            self.request_stop(str(exc), failed=True)
            return
        self.counters.actor_restarts += 1
        self.idle.extend([(i, rollouts.incarnations[i])] * self.cfg.rollout.fragments_in_flight)
        self._sync_telemetry()

    def _on_update(self, ref: ray.ObjectRef) -> None:
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._on_learner_lost(exc)
            return
        if self._apply_update(result):
            self.checkpoint()

    def _apply_update(self, result: dict[str, Any]) -> bool:
        """Count a finished update; whether a periodic checkpoint is due."""
        cfg, counters = self.cfg, self.counters
        steps = cfg.fragments_per_batch * cfg.fragment_steps
        if result.get(SKIPPED):  # skipped at a stop: never trained on
            counters.fragments_dropped += cfg.fragments_per_batch
            counters.env_steps_dropped += steps
            return False
        counters.updates += 1
        counters.env_steps_trained += steps
        self.version, self.weights_ref = int(result["policy_version"]), result["weights_ref"][0]
        self._last_loss = {k: v for k, v in result.items() if isinstance(v, float)}
        self._reward_model_version = int(result.get(intrinsic_keys.REWARD_MODEL_VERSION, -1))
        return counters.updates % cfg.run.checkpoint_every_updates == 0

    def _on_learner_lost(self, error: Exception) -> None:
        self._learner_lost = True
        self.request_stop(
            f"a learner died ({type(error).__name__}); its updates since the newest "
            f"checkpoint are lost. Resume with: oniray train --resume {self.run_dir.root}",
            failed=True,
        )

    def _feed_learner(self) -> None:
        """Hand full batches to the learner, dropping fragments aged past the lag bound."""
        cfg, counters = self.cfg, self.counters
        per_batch = cfg.fragments_per_batch
        while len(self.updates) < cfg.learner.max_queued_batches and not self._learner_lost:
            learner_version = self.version + len(self.updates)  # when this one trains
            while self.ready and learner_version - self.ready[0][1] > cfg.rollout.max_policy_lag:
                self.ready.popleft()
                counters.fragments_dropped += 1
                counters.env_steps_dropped += cfg.fragment_steps
                m.FRAGMENTS_DROPPED.labels(**self._labels, reason="policy_lag").inc()
            if len(self.ready) < per_batch:
                return
            batch = [self.ready.popleft() for _ in range(per_batch)]
            lags = [learner_version - v for _, v in batch]
            self._lags += lags
            for lag in lags:
                m.POLICY_LAG.labels(**self._labels).observe(lag)
            try:
                ref = self.parts.learners.update(
                    [r for r, _ in batch], reward_model=self.reward_model
                )
            except ray.exceptions.RayActorError as exc:  # a rank > 0 died
                self.ready.extendleft(reversed(batch))
                self._on_learner_lost(exc)
                return
            self.updates.append(ref)

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
                version, ref = ray.get(self._model_poll)
                self._model_poll = None
                if ref is not None:
                    self.reward_model = (sup.stamp(version), ref)
            if self._model_poll is None and now - self._last_model_poll >= REWARD_MODEL_POLL_S:
                self._model_poll = sup.handle.reward_model_ref.remote()
                self._last_model_poll = now
        except ray.exceptions.RayActorError as exc:
            self._model_poll = None
            # The dead annotator owned the model's object: a learner still to fetch it would
            # fail. None keeps every learner on the model it already has.
            self.reward_model = None
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
        cfg, counters = self.cfg, self.counters
        if self._learner_lost:
            self._say_newest_checkpoint()
            return
        deadline = time.monotonic() + cfg.run.stop_timeout_s
        if len(self.updates) > 1:
            self.parts.learners.skip_after(self.updates[0])
        try:
            while self.updates:
                remaining = max(deadline - time.monotonic(), 0.0)
                self._apply_update(ray.get(self.updates[0], timeout=remaining))
                self.updates.popleft()
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
            log.error("the learner did not finish its update within run.stop_timeout_s = %s s "
                      "(%s): no final checkpoint", cfg.run.stop_timeout_s, type(exc).__name__)
            self._failed = True
            self._say_newest_checkpoint()
            return
        self.checkpoint()
        if self._learner_lost:
            self._say_newest_checkpoint()
            return
        # Fragments that reached the driver but will never be trained on count as dropped, so
        # produced == trained + dropped holds in the summary as in the checkpoint.
        counters.fragments_dropped += len(self.ready)
        counters.env_steps_dropped += len(self.ready) * cfg.fragment_steps
        self.ready.clear()

    def _say_newest_checkpoint(self) -> None:
        newest = self.run_dir.newest_checkpoint_name()
        print(f"the newest checkpoint is {newest or 'none'}; resume with: "
              f"oniray train --resume {self.run_dir.root}", flush=True)

    # ---- reporting -----------------------------------------------------------------------------
    def _record_episodes(self, stats: EpisodeStats) -> None:
        c = self.counters
        c.episodes += len(stats.episode_returns)
        window = self.cfg.run.summary_window_episodes
        c.recent_returns = (c.recent_returns + stats.episode_returns)[-window:]
        c.recent_lengths = (c.recent_lengths + stats.episode_lengths)[-window:]
        if self._has_goal:  # no goal (NetHackScore): no success rate, rather than 0
            c.recent_successes = (c.recent_successes + stats.episode_successes)[-window:]

    def _report(self, sps: float, version: int) -> None:
        lag = float(np.mean(self._lags)) if self._lags else 0.0
        self._lags.clear()
        loop = LoopState(sps=sps, policy_version=version, policy_lag=lag,
                         fragments_ready=len(self.ready), updates_queued=len(self.updates),
                         object_store_mb=_mib(object_store_used_bytes()))
        row = metrics_row(self.counters, loop, self._last_loss, self._annotator_columns())
        m.ENV_STEPS_PER_SECOND.labels(**self._labels).set(sps)
        m.POLICY_VERSION.labels(**self._labels).set(version)
        self.metric_rows.append(row)
        self.run_dir.write_metrics(self.metric_rows)
        if self.events is not None:
            self.events.write_row(row)
        print(progress_line(row, self.baseline), flush=True)

    def _annotator_columns(self) -> dict[str, Any]:
        """The reward service's columns of the row (none when it does not run)."""
        if self.parts.annotator is None:
            return {}
        try:
            stats = ray.get(self.parts.annotator.handle.stats.remote(), timeout=5)
        except (ray.exceptions.RayError, TimeoutError):
            stats = None  # a busy or restarting annotator must not stall training
        return annotator_columns(stats, reward_model_version_trained=self._reward_model_version,
                                 learner_losses=self._last_loss)

    def _finish(self, version: int) -> dict[str, Any]:
        summary = summarise(self.counters, self.baseline, policy_version=version,
                            stop_reason=self._stop_reason, failed=self._failed)
        self.run_dir.write_summary(summary)
        if self.metric_rows:
            plot_curve(self.metric_rows, self.baseline, self.run_dir.curve)
        print("summary: " + ", ".join(f"{k}={_fmt(v)}" for k, v in summary.items()), flush=True)
        return summary


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


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


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
    if resume_state is not None:
        trainer.restore(resume_state)
        print(f"resumed at {trainer.counters.env_steps_produced:,} env steps, "
              f"{trainer.counters.updates} updates", flush=True)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(
            sig, lambda s, _f: trainer.request_stop(signal.Signals(s).name)
        )
    try:
        trainer.measure_random_baseline()
        return trainer.train()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        telemetry.refresh()  # the final numbers, for a scrape that comes right after the end
        telemetry.stop()
        events.close()
        for actor in parts.rollouts.actors:
            ray.kill(actor)
        parts.learners.shutdown()
        if parts.annotator is not None:
            parts.annotator.stop()  # flushes the label store
