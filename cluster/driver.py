"""The driver: wires every component, runs the training loop, checkpoints, reports.

Consumes: a validated :class:`OniConfig`. Emits: the run folder (``cluster.run_dir``), a live
progress line, and a final summary. The driver moves ObjectRefs between components and never
fetches a fragment: it only reads the small stats objects that come with each one.

The loop keeps ``fragments_in_flight`` sample calls outstanding per rollout actor, groups
finished fragments into batches of ``batch_size`` steps, and hands a batch to the learner group
while at most ``max_queued_batches`` updates are outstanding. When that bound is reached the
driver stops issuing sample calls: rollouts wait rather than fill the object store.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from actors.rollout_actor import RolloutActor
from actors.rollout_worker import EpisodeStats
from cluster import metrics as m
from cluster.config import OniConfig, to_yaml
from cluster.report import mean_and_interval, plot_curve
from cluster.run_dir import RunDir, atomic_write_text
from cluster.telemetry import Telemetry
from learner import intrinsic as intrinsic_keys
from learner.learner_group import LearnerGroup
from rewards.annotator_actor import create_annotator_actor

log = logging.getLogger("oniray")


@dataclass
class Counters:
    """Everything the driver counts; checkpointed so a resumed run continues the counts."""

    env_steps_produced: int = 0  # steps in fragments that reached the driver
    env_steps_trained: int = 0  # steps in fragments handed to the learner
    env_steps_dropped: int = 0  # steps in fragments dropped for policy lag
    fragments_dropped: int = 0
    annotations_skipped: int = 0  # fragments whose captions the busy annotator did not get
    updates: int = 0
    episodes: int = 0
    elapsed_s: float = 0.0  # training wall time over all sessions of this run
    recent_returns: list[float] = field(default_factory=list)
    recent_lengths: list[int] = field(default_factory=list)


# Submissions to the annotator not yet accepted by it. Beyond this the driver skips
# fragments' captions rather than queue calls (each pins a fragment in the object store);
# the annotator's own caption queue is bounded by rewards.annotator.queue_size.
MAX_PENDING_ANNOTATIONS = 16
REWARD_MODEL_POLL_S = 2.0


@dataclass
class Components:
    learners: LearnerGroup
    actors: list[Any]  # RolloutActor handles
    num_actions: int
    annotator: Any | None = None  # AnnotatorActor handle, when the reward service runs


def build_components(cfg: OniConfig, *, labels_dir: str | None = None) -> Components:
    """Create every actor and hand each its handles. One line per data-flow edge:

    rollout actor -> driver:     fragment ObjectRef + small stats (the driver forwards the ref)
    driver -> learner group:     batches of fragment refs (each learner fetches its share)
    learner group -> actors:     versioned weights as one ObjectRef (fetched when it changes)
    rollout actor -> annotator:  each fragment's distinct messages as a ref, via the driver
    annotator -> learner group:  the newest reward model as (version, ObjectRef), via the driver
    """
    actor_options = {"num_cpus": cfg.rollout.num_cpus, "resources": cfg.rollout.resources or None}
    actors = [
        RolloutActor.options(**actor_options).remote(
            cfg, actor_id=i, seed=cfg.run.seed * 10_007 + i
        )
        for i in range(cfg.rollout.num_actors)
    ]
    infos = ray.get([a.info.remote() for a in actors])
    num_actions = infos[0]["num_actions"]
    learners = LearnerGroup(cfg, num_actions=num_actions)
    annotator = None
    if cfg.rewards.annotator.enabled:
        if labels_dir is None:
            raise ValueError("the annotator needs a labels directory (the run's labels/)")
        annotator = create_annotator_actor(cfg.rewards, store_dir=labels_dir, env_id=cfg.env.id)
        ray.get(annotator.ready.remote())  # a judge that cannot load fails here, not later
    return Components(learners=learners, actors=actors, num_actions=num_actions,
                      annotator=annotator)


class Trainer:
    """The training loop over already-built components."""

    def __init__(self, cfg: OniConfig, run_dir: RunDir, parts: Components) -> None:
        self.cfg, self.run_dir, self.parts = cfg, run_dir, parts
        self.counters = Counters()
        self.baseline: dict[str, float] | None = None
        self.metric_rows: list[dict[str, Any]] = run_dir.read_metrics()
        self._stop_reason: str | None = None
        self._lags: list[int] = []
        self._last_loss: dict[str, float] = {}
        self._labels = m.component_labels(role="driver", actor_id=0)
        self._reward_model_version = -1

    # ---- lifecycle ---------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if self._stop_reason is None:
            log.warning("stopping: %s (writing a checkpoint)", reason)
        self._stop_reason = reason

    def restore(self, state: dict[str, Any]) -> None:
        self.counters = Counters(**state["counters"])
        self.baseline = state.get("baseline")
        self.parts.learners.load_state(state["learner"])

    def checkpoint(self) -> None:
        state = {
            "counters": self.counters.__dict__,
            "baseline": self.baseline,
            "learner": self.parts.learners.get_state(),
            "config_yaml": to_yaml(self.cfg),
        }
        path = self.run_dir.save_checkpoint(state, update=self.counters.updates)
        log.debug("checkpoint %s", path)

    # ---- random baseline ----------------------------------------------------------------
    def measure_random_baseline(self) -> None:
        episodes = self.cfg.run.random_baseline_episodes
        if episodes == 0 or self.baseline is not None:
            return
        per_actor = max(1, -(-episodes // len(self.parts.actors)))
        started = time.perf_counter()
        results: list[EpisodeStats] = ray.get(
            [a.random_baseline.remote(per_actor) for a in self.parts.actors]
        )
        returns = [r for stats in results for r in stats.episode_returns]
        steps = sum(stats.env_steps for stats in results)
        mean, half = mean_and_interval(returns)
        self.baseline = {
            "mean_return": mean,
            "ci95": half,
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
        learners, actors = self.parts.learners, self.parts.actors
        version, weights_ref = learners.weights()
        max_lag = cfg.rollout.max_policy_lag
        per_batch = cfg.fragments_per_batch
        budget_s = None if cfg.run.max_minutes is None else cfg.run.max_minutes * 60

        annotator = self.parts.annotator
        annotations: collections.deque[ray.ObjectRef] = collections.deque()
        reward_model: tuple[int, ray.ObjectRef] | None = None
        model_poll: ray.ObjectRef | None = None
        last_model_poll = 0.0

        # stats ref -> (actor index, fragment ref, captions ref)
        inflight: dict[ray.ObjectRef, tuple[int, ray.ObjectRef, ray.ObjectRef]] = {}
        idle: collections.deque[int] = collections.deque()
        ready: collections.deque[tuple[ray.ObjectRef, int]] = collections.deque()  # (frag, ver)
        updates: collections.deque[ray.ObjectRef] = collections.deque()

        def issue(actor_index: int) -> None:
            frag_ref, stats_ref, captions_ref = actors[actor_index].sample.remote(
                [weights_ref], version
            )
            inflight[stats_ref] = (actor_index, frag_ref, captions_ref)

        for i in range(len(actors)):
            for _ in range(cfg.rollout.fragments_in_flight):
                issue(i)

        session_start = time.perf_counter()
        elapsed_before = counters.elapsed_s
        last_report = session_start
        steps_at_last_report = counters.env_steps_produced
        while self._stop_reason is None:
            waitables = list(inflight) + list(updates)
            done, _ = ray.wait(waitables, num_returns=1, timeout=0.5)
            for ref in done:
                if ref in inflight:
                    actor_index, frag_ref, captions_ref = inflight.pop(ref)
                    stats: EpisodeStats = ray.get(ref)
                    counters.env_steps_produced += stats.env_steps
                    self._record_episodes(stats)
                    ready.append((frag_ref, stats.policy_version))
                    idle.append(actor_index)
                    if annotator is not None:
                        while annotations and _is_done(annotations[0]):
                            annotations.popleft()
                        if len(annotations) < MAX_PENDING_ANNOTATIONS:
                            annotations.append(
                                annotator.submit_captions.remote([captions_ref])
                            )
                        else:
                            counters.annotations_skipped += 1
                else:
                    updates.remove(ref)
                    result = ray.get(ref)
                    counters.updates += 1
                    version, weights_ref = int(result["policy_version"]), result["weights_ref"][0]
                    self._last_loss = {k: v for k, v in result.items() if isinstance(v, float)}
                    self._reward_model_version = int(
                        result.get(intrinsic_keys.REWARD_MODEL_VERSION, -1)
                    )
                    if counters.updates % cfg.run.checkpoint_every_updates == 0:
                        self.checkpoint()

            # Hand full batches to the learner, dropping fragments that aged past the lag bound.
            while len(updates) < cfg.learner.max_queued_batches:
                learner_version = version + len(updates)  # what it will be when this one trains
                while ready and learner_version - ready[0][1] > max_lag:
                    ready.popleft()
                    counters.fragments_dropped += 1
                    counters.env_steps_dropped += cfg.fragment_steps
                    m.FRAGMENTS_DROPPED.labels(**self._labels, reason="policy_lag").inc()
                if len(ready) < per_batch:
                    break
                batch = [ready.popleft() for _ in range(per_batch)]
                lags = [learner_version - v for _, v in batch]
                self._lags += lags
                for lag in lags:
                    m.POLICY_LAG.labels(**self._labels).observe(lag)
                updates.append(
                    learners.update([ref for ref, _ in batch], reward_model=reward_model)
                )
                counters.env_steps_trained += per_batch * cfg.fragment_steps

            # Backpressure: while a full batch already waits for a busy learner, actors pause.
            # Fragments alive in the object store stay below
            # (max_queued_batches + 1) * fragments_per_batch + num_actors * fragments_in_flight.
            while idle and len(ready) < per_batch:
                issue(idle.popleft())
            m.QUEUE_DEPTH.labels(**self._labels, queue="fragments_ready").set(len(ready))
            m.QUEUE_DEPTH.labels(**self._labels, queue="learner_updates").set(len(updates))

            now = time.perf_counter()
            # The newest reward model, polled without waiting (the judge is never waited on).
            if annotator is not None:
                if model_poll is not None and _is_done(model_poll):
                    version_and_ref = ray.get(model_poll)
                    if version_and_ref[1] is not None:
                        reward_model = version_and_ref
                    model_poll = None
                if model_poll is None and now - last_model_poll >= REWARD_MODEL_POLL_S:
                    model_poll = annotator.reward_model_ref.remote()
                    last_model_poll = now
            counters.elapsed_s = elapsed_before + (now - session_start)
            if counters.env_steps_produced >= cfg.run.total_env_steps:
                self._stop_reason = "step budget reached"
            elif budget_s is not None and now - session_start >= budget_s:
                self._stop_reason = "time budget reached"
            if now - last_report >= cfg.run.report_every_s or self._stop_reason:
                sps = (counters.env_steps_produced - steps_at_last_report) / (now - last_report)
                self._report(sps, version)
                last_report, steps_at_last_report = now, counters.env_steps_produced

        # Let the queued updates finish so the checkpoint holds everything trained on.
        for ref in updates:
            result = ray.get(ref)
            counters.updates += 1
            version = int(result["policy_version"])
        # Fragments that reached the driver but will never be trained on count as dropped, so
        # produced == trained + dropped holds in every checkpoint.
        counters.fragments_dropped += len(ready)
        counters.env_steps_dropped += len(ready) * cfg.fragment_steps
        self.checkpoint()
        return self._finish(version)

    # ---- reporting -----------------------------------------------------------------------------
    def _record_episodes(self, stats: EpisodeStats) -> None:
        c = self.counters
        c.episodes += len(stats.episode_returns)
        window = self.cfg.run.summary_window_episodes
        c.recent_returns = (c.recent_returns + stats.episode_returns)[-window:]
        c.recent_lengths = (c.recent_lengths + stats.episode_lengths)[-window:]

    def _report(self, sps: float, version: int) -> None:
        c = self.counters
        mean_return = float(np.mean(c.recent_returns)) if c.recent_returns else None
        lag = float(np.mean(self._lags)) if self._lags else 0.0
        self._lags.clear()
        row = {
            "time_s": c.elapsed_s,
            "env_steps": c.env_steps_produced,
            "env_steps_trained": c.env_steps_trained,
            "env_steps_dropped": c.env_steps_dropped,
            "fragments_dropped": c.fragments_dropped,
            "sps": sps,
            "updates": c.updates,
            "policy_version": version,
            "policy_lag": lag,
            "episodes": c.episodes,
            "mean_return": mean_return,
            "mean_length": float(np.mean(c.recent_lengths)) if c.recent_lengths else None,
            **{f"learner_{k}": v for k, v in self._last_loss.items()},
            **self._annotator_row(),
        }
        m.ENV_STEPS_PER_SECOND.labels(**self._labels).set(sps)
        m.POLICY_VERSION.labels(**self._labels).set(version)
        self.metric_rows.append(row)
        self.run_dir.write_metrics(self.metric_rows)
        ret = "   n/a" if mean_return is None else f"{mean_return:6.2f}"
        base = f" (random {self.baseline['mean_return']:.2f})" if self.baseline else ""
        print(
            f"[{_clock(c.elapsed_s)}] steps {c.env_steps_produced:>10,} | sps {sps:7,.0f} | "
            f"lag {lag:4.1f} | return {ret}{base} | episodes {c.episodes:,} | "
            f"updates {c.updates:,} | dropped {c.fragments_dropped}",
            flush=True,
        )

    def _annotator_row(self) -> dict[str, Any]:
        """The reward service's numbers for the metrics row (empty when it does not run)."""
        if self.parts.annotator is None:
            return {}
        try:
            stats = ray.get(self.parts.annotator.stats.remote(), timeout=5)
        except (ray.exceptions.RayError, TimeoutError):
            return {}  # a busy or restarting annotator must not stall training
        keys = {
            "store_labels": "labels_total",
            "labels_per_s": "labels_per_s",
            "queue_depth": "judge_queue_depth",
            "cache_hit_rate": "judge_cache_hit_rate",
            "parse_failures_total": "judge_parse_failures",
            "canary_fpr": "canary_fpr",
            "reward_model_version": "reward_model_version_published",
            "reward_model_accuracy": "reward_model_accuracy",
        }
        row = {name: float(stats[key]) for key, name in keys.items() if key in stats}
        row["reward_model_version_trained"] = self._reward_model_version
        row["intrinsic_sparsity"] = self._last_loss.get(intrinsic_keys.INTRINSIC_ZERO_FRACTION)
        return row

    def _finish(self, version: int) -> dict[str, Any]:
        c = self.counters
        mean, half = mean_and_interval(c.recent_returns)
        summary: dict[str, Any] = {
            "stop_reason": self._stop_reason,
            "env_steps": c.env_steps_produced,
            "env_steps_trained": c.env_steps_trained,
            "env_steps_dropped": c.env_steps_dropped,
            "updates": c.updates,
            "policy_version": version,
            "episodes": c.episodes,
            "elapsed_s": round(c.elapsed_s, 1),
            "mean_sps": round(c.env_steps_produced / max(c.elapsed_s, 1e-9), 1),
            "final_mean_return": mean,
            "final_return_ci95": half,
            "final_window_episodes": len(c.recent_returns),
        }
        if self.baseline:
            summary["random_mean_return"] = self.baseline["mean_return"]
            summary["random_return_ci95"] = self.baseline["ci95"]
            # A one-sided Welch z-test at the 5% level, not merely a higher mean.
            base_mean, base_half = self.baseline["mean_return"], self.baseline["ci95"]
            std_error = math.hypot(half, base_half) / 1.96
            z = (mean - base_mean) / max(std_error, 1e-9)
            summary["beats_random_z"] = round(min(max(z, -1e6), 1e6), 2)
            summary["beats_random"] = bool(z > 1.645)
        self.run_dir.write_summary(summary)
        if self.metric_rows:
            plot_curve(self.metric_rows, self.baseline, self.run_dir.curve)
        print("summary: " + ", ".join(f"{k}={_fmt(v)}" for k, v in summary.items()), flush=True)
        return summary


def _is_done(ref: ray.ObjectRef) -> bool:
    return bool(ray.wait([ref], timeout=0)[0])


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def init_ray(cfg: OniConfig) -> None:
    """Join the configured cluster, or start a local Ray with token authentication on."""
    if ray.is_initialized():
        return
    # Token authentication: Ray 2.60 turns it on for a local Ray by itself (and generates
    # ~/.ray/auth_token); a cluster's nodes decide it with RAY_AUTH_MODE at `ray start`.
    # Setting RAY_AUTH_MODE here would be too late: Ray reads it when it is imported.
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, namespace=cfg.ray.namespace)
        return
    needed = (
        cfg.rollout.num_actors * cfg.rollout.num_cpus
        + cfg.learner.num_learners * cfg.learner.num_cpus
        + (cfg.rewards.annotator.num_cpus if cfg.rewards.annotator.enabled else 0)
    )
    # Logical CPUs: reserve what the actors ask for even on a 2-core laptop (they time-share).
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, int(np.ceil(needed)))
    ray.init(
        num_cpus=num_cpus,
        object_store_memory=None if cfg.ray.object_store_mb is None
        else cfg.ray.object_store_mb * 1024 * 1024,
        include_dashboard=cfg.ray.include_dashboard,
        dashboard_host=cfg.ray.dashboard_host,
        namespace=cfg.ray.namespace,
        log_to_driver=True,
    )


def run_training(cfg: OniConfig, run_dir: RunDir, *, resume_state: dict | None = None) -> dict:
    """Build, (restore,) train, checkpoint, summarise. SIGINT/SIGTERM stop with a checkpoint."""
    atomic_write_text(run_dir.config, to_yaml(cfg))
    init_ray(cfg)
    telemetry = Telemetry(cfg.metrics)
    telemetry.start()
    parts = build_components(cfg, labels_dir=str(run_dir.labels))
    telemetry.set_sources(
        [(f"rollout-{i}", actor.metrics.remote) for i, actor in enumerate(parts.actors)]
        + [(f"learner-{r}", a.metrics.remote) for r, a in enumerate(parts.learners.actors)]
        + ([("annotator", parts.annotator.metrics.remote)] if parts.annotator else [])
    )
    trainer = Trainer(cfg, run_dir, parts)
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
        for actor in parts.actors:
            ray.kill(actor)
        parts.learners.shutdown()
        if parts.annotator is not None:
            ray.get(parts.annotator.stop.remote())  # flushes the label store
            ray.kill(parts.annotator)
