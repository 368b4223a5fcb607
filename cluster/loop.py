"""The run loop both runtimes share: the session, the command dispatch, the run folder.

Consumes: the config, the run folder, the run's components (``cluster.components``), the
rollout workers' episode stats and the learner's update metrics. Emits: ``metrics.parquet``
rows, TensorBoard scalars and W&B history (``cluster.tracking``, when ``run.wandb`` is on),
progress lines, checkpoints (``cluster.checkpointing``), ``summary.json``, the curve and the
report (``cluster.report``).

:class:`RunLoop` owns the session (restore, the random baseline, the training loop's
skeleton, the stop), turns each scheduler command into the data-flow edge it stands for
(:meth:`RunLoop.execute`), and writes the rows, checkpoints and summary. No Ray here:
``cluster.driver`` (Ray) and ``cluster.local_runtime`` (one process) subclass it and add only
where events come from and how a command is carried out (the methods marked "the runtime's").
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from actors import metrics as m
from actors.envs import has_goal
from actors.rollout_worker import EpisodeStats
from actors.versioned import VersionedRef
from cluster import tracking
from cluster.checkpointing import COUNTERS, checkpoint_state, restored_reward_model_version
from cluster.components import Components
from cluster.config import OniConfig
from cluster.counters import Counters
from cluster.progress import LoopState, annotator_columns, metrics_row, progress_line
from cluster.report import mean_and_interval, plot_curve, write_report
from cluster.run_dir import RunDir
from cluster.scheduler import (
    Checkpoint,
    Command,
    Drop,
    Limits,
    RebuildLearners,
    RestartActor,
    Sample,
    Scheduler,
    Train,
)
from cluster.summary import add_rewarded, rewarded_lines, success_rate, summarise
from cluster.tensorboard import EventWriter
from learner import intrinsic as intrinsic_keys

log = logging.getLogger("oniray")


class RunLoop:
    """The scheduler, the components and the run folder. Subclasses carry out the commands."""

    def __init__(self, cfg: OniConfig, run_dir: RunDir, parts: Components) -> None:
        self.cfg, self.run_dir, self.parts = cfg, run_dir, parts
        self.events: EventWriter | None = None  # open while run() runs
        self.tracker: tracking.Tracker | None = None  # W&B (run.wandb), open while run() runs
        self.sched = Scheduler(Limits.from_config(cfg))
        self._has_goal = has_goal(cfg.env.id)
        self.baseline: dict[str, float] | None = None
        self.metric_rows: list[dict[str, Any]] = run_dir.read_metrics()
        self.last_loss: dict[str, float | None] = {}
        self._labels = m.component_labels(role="driver", actor_id=0)

    @property
    def counters(self) -> Counters:
        return self.sched.counters

    def request_stop(self, reason: str, *, failed: bool = False) -> None:
        if self.sched.stop_reason is None:
            log.warning("stopping: %s", reason)
        self.sched.request_stop(reason, failed=failed)

    # ---- the session -----------------------------------------------------------------------
    def run(self, resume_state: dict[str, Any] | None) -> dict[str, Any]:
        """Restore ``resume_state`` (if any), measure the random baseline, train to the stop,
        summarise. Meanwhile SIGINT/SIGTERM ask for a stop with a checkpoint instead of
        killing the process, and the TensorBoard events file and the W&B run are open."""
        self.events = EventWriter(self.run_dir.root)
        try:
            self.tracker = tracking.start(self.cfg, self.run_dir, rows=self.metric_rows)
            if resume_state is not None:
                self.restore(resume_state)
                print(f"resumed at {self.counters.env_steps_produced:,} env steps, "
                      f"{self.counters.updates} updates", flush=True)
            with _stop_on_signals(self):
                self.measure_random_baseline()
                return self.train()
        finally:
            self.events.close()
            self.events = None
            if self.tracker is not None:  # still open: an exception ended the run
                self.tracker.finish(failed=True)
                self.tracker = None

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: the scheduler's counts, the baseline, the learner."""
        self.sched.load_state(state[COUNTERS])
        self.baseline = state.get("baseline")
        # Until the first update, the reward model the restored learner scores with.
        self.last_loss[intrinsic_keys.REWARD_MODEL_VERSION] = float(
            restored_reward_model_version(state))
        self.parts.learners.load_state(state["learner"])

    def measure_random_baseline(self) -> None:
        """A uniformly random agent's first episodes in every env, once per run (a resumed
        run has it from its checkpoint): the bar the progress line and summary show."""
        episodes = self.cfg.run.random_baseline_episodes
        if episodes == 0 or self.baseline is not None:
            return
        actors = self.cfg.rollout.num_actors
        envs = actors * self.cfg.rollout.envs_per_actor
        started = time.perf_counter()
        results = self.play_random(
            episodes_per_env=max(1, -(-episodes // envs)),
            min_steps=-(-self.cfg.run.random_baseline_min_steps // actors),
        )
        self._set_baseline(results, time.perf_counter() - started)

    def train(self) -> dict[str, Any]:
        """Sample, batch, train, checkpoint until the scheduler stops; then the runtime's
        stop, and the summary."""
        self.carry_out(self.sched.start(self.weights()))
        clock = Clock(self)
        while not self.sched.stopping:
            if not self.step():
                break
            sps = clock.tick()
            if sps is not None:
                self.report(sps)
        self.wind_down()
        return self.finish()

    # ---- the edges: each command and each arrival, to the component its data goes to ------
    def execute(self, cmd: Command) -> list[Command]:
        """Carry out one command; returns the commands its outcome brings at once."""
        if isinstance(cmd, Sample):  # learner -> rollout: the newest weights, one VersionedRef
            return self.sample(cmd)
        if isinstance(cmd, Train):  # rollout -> learner: a batch, with the newest reward model
            self.note_train(cmd.lags)
            return self.update(cmd)
        if isinstance(cmd, Drop):  # fragments no learner will see: counted, never sent
            self.note_drop(cmd)
            return []
        if isinstance(cmd, Checkpoint):  # learner -> run folder: state, with the counts
            return self.checkpoint()
        if isinstance(cmd, RestartActor):
            return self.restart_actor(cmd.actor)
        if isinstance(cmd, RebuildLearners):
            return self.rebuild_learners()
        raise TypeError(f"unknown command {cmd!r}")

    def fragment_arrived(self, actor: int, incarnation: int, fragment: Any, *,
                         stats: EpisodeStats, captions: Any) -> list[Command]:
        """A sample call returned: its episodes are counted, its captions go to the
        annotator, the fragment (a handle: an ObjectRef on Ray) to the scheduler's batches."""
        self.record_episodes(stats)
        self.annotate(captions)  # rollout -> annotator: the fragment's distinct messages
        return self.sched.fragment_ready(actor, incarnation, fragment,
                                         version=stats.policy_version, steps=stats.env_steps)

    def update_arrived(self, result: dict[str, Any], weights: VersionedRef, *,
                       pump: bool = True) -> list[Command]:
        """An update finished: its metrics are kept, its weights go out with the next samples
        (``pump=False``: decide nothing new, a runtime waiting for its outstanding updates)."""
        self.note_update(result)
        return self.sched.update_done(weights, pump=pump)

    # ---- the runtime's: where events come from, how commands are carried out -------------
    def weights(self) -> VersionedRef:
        """The learner's current policy version and weights."""
        raise NotImplementedError

    def carry_out(self, cmds: list[Command]) -> None:
        """Take the scheduler's commands (at once, or queued for :meth:`step`)."""
        raise NotImplementedError

    def step(self) -> bool:
        """One turn of the loop: the next events or commands; False: leave the loop now."""
        raise NotImplementedError

    def wind_down(self) -> None:
        """At the stop: finish or skip the updates under way, the final checkpoint, and count
        what waits for a batch as dropped."""
        raise NotImplementedError

    def sample(self, cmd: Sample) -> list[Command]:
        raise NotImplementedError

    def update(self, cmd: Train) -> list[Command]:
        raise NotImplementedError

    def checkpoint(self) -> list[Command]:
        """Write a checkpoint holding every update counted (see :meth:`write_checkpoint`)."""
        raise NotImplementedError

    def restart_actor(self, actor: int) -> list[Command]:
        raise NotImplementedError

    def rebuild_learners(self) -> list[Command]:
        raise NotImplementedError

    def annotate(self, captions: Any) -> None:
        """Hand a fragment's captions to the annotator, if one runs."""
        raise NotImplementedError

    def play_random(self, *, episodes_per_env: int, min_steps: int) -> list[EpisodeStats]:
        """Every rollout worker's ``play_random`` results."""
        raise NotImplementedError

    def annotator_stats(self) -> dict[str, float] | None:
        """The annotator's stats; None when it cannot say now (asked only when it runs)."""
        raise NotImplementedError

    def object_store_mb(self) -> float | None:
        return None  # no object store: one process

    # ---- bookkeeping --------------------------------------------------------------------------
    def write_checkpoint(self, learner_state: dict[str, Any]) -> list[Command]:
        """``learner_state`` must hold every update counted (no update outstanding); returns
        the commands batching resumes with."""
        state = checkpoint_state(
            self.cfg, counters=self.sched.state(), baseline=self.baseline,
            learner_state=learner_state,
        )
        path = self.run_dir.save_checkpoint(state, update=self.counters.updates)
        log.debug("checkpoint %s", path)
        return self.sched.checkpointed()

    def note_drop(self, cmd: Drop) -> None:
        m.FRAGMENTS_DROPPED.labels(**self._labels, reason=cmd.reason).inc(cmd.fragments)

    def note_update(self, result: dict[str, Any]) -> None:
        # The update's numbers; None stays (a statistic with nothing to measure yet keeps its
        # column); the rest (weights, rewarded messages) is not a metric.
        self.last_loss = {k: v for k, v in result.items() if v is None or isinstance(v, float)}
        add_rewarded(self.counters.rewarded_messages,
                     result.get(intrinsic_keys.REWARDED_MESSAGES) or {})

    def note_train(self, lags: list[int]) -> None:
        for lag in lags:
            m.POLICY_LAG.labels(**self._labels).observe(lag)

    def _set_baseline(self, results: list[EpisodeStats], seconds: float) -> None:
        returns = [r for stats in results for r in stats.episode_returns]
        successes = [s for stats in results for s in stats.episode_successes]
        steps = sum(stats.env_steps for stats in results)
        mean, half = mean_and_interval(returns)
        self.baseline = {
            "mean_return": mean, "ci95": half,
            "success_rate": success_rate(successes) if self._has_goal else None,
            "episodes": len(returns), "env_steps": steps, "raw_sps": steps / max(seconds, 1e-9),
        }
        print(f"random agent: mean return {mean:.2f} ± {half:.2f} over {len(returns)} episodes "
              f"({steps:,} steps)", flush=True)

    # ---- reporting -------------------------------------------------------------------------
    def record_episodes(self, stats: EpisodeStats) -> None:
        c = self.counters
        c.episodes += len(stats.episode_returns)
        window = self.cfg.run.summary_window_episodes
        c.recent_returns = (c.recent_returns + stats.episode_returns)[-window:]
        c.recent_lengths = (c.recent_lengths + stats.episode_lengths)[-window:]
        if self._has_goal:  # no goal (NetHackScore): no success rate, rather than 0
            c.recent_successes = (c.recent_successes + stats.episode_successes)[-window:]

    def report(self, sps: float) -> None:
        """A row of metrics.parquet and TensorBoard, and the progress line."""
        sched = self.sched
        lag = float(np.mean(sched.lags)) if sched.lags else 0.0
        sched.lags.clear()
        loop = LoopState(sps=sps, policy_version=sched.version, policy_lag=lag,
                         fragments_ready=len(sched.ready), updates_queued=len(sched.updates),
                         object_store_mb=self.object_store_mb())
        row = metrics_row(self.counters, loop, self.last_loss, self.annotator_columns())
        m.ENV_STEPS_PER_SECOND.labels(**self._labels).set(sps)
        m.POLICY_VERSION.labels(**self._labels).set(sched.version)
        m.QUEUE_DEPTH.labels(**self._labels, queue="fragments_ready").set(len(sched.ready))
        m.QUEUE_DEPTH.labels(**self._labels, queue="learner_updates").set(len(sched.updates))
        self.metric_rows.append(row)
        self.run_dir.write_metrics(self.metric_rows)
        if self.events is not None:
            self.events.write_row(row)
        if self.tracker is not None:
            self.tracker.log(row, index=len(self.metric_rows) - 1)
        print(progress_line(row, self.baseline), flush=True)

    def annotator_columns(self) -> dict[str, Any]:
        """The reward service's columns of the row (none when it does not run)."""
        if self.parts.annotator is None:
            return {}
        return annotator_columns(self.annotator_stats(), reward_model_version_trained=int(
            self.last_loss.get(intrinsic_keys.REWARD_MODEL_VERSION, -1)),
            learner_losses=self.last_loss)

    def say_newest_checkpoint(self) -> None:
        newest = self.run_dir.newest_checkpoint_name()
        print(f"the newest checkpoint is {newest or 'none'}; resume with: "
              f"oniray train --resume {self.run_dir.root}", flush=True)

    def finish(self) -> dict[str, Any]:
        sched = self.sched
        summary = summarise(self.counters, self.baseline, policy_version=sched.version,
                            stop_reason=sched.stop_reason, failed=sched.failed)
        self.run_dir.write_summary(summary)
        files = []
        if self.metric_rows:
            plot_curve(self.metric_rows, self.baseline, self.run_dir.curve)
            report = write_report(self.run_dir.root)
            files = [report, report.with_name("report.png"), self.run_dir.curve]
        for line in rewarded_lines(summary):
            print(line, flush=True)
        print("summary: " + ", ".join(f"{k}={_fmt(v)}" for k, v in summary.items()
                                      if k != "rewarded_messages"), flush=True)
        if self.tracker is not None:
            self.tracker.finish(summary=summary, failed=summary["failed"], files=files)
            self.tracker = None
        return summary


class Clock:
    """Session time for the budget and the report interval; elapsed time over all sessions."""

    def __init__(self, loop: RunLoop) -> None:
        self.loop = loop
        self.start = self.last_report = time.perf_counter()
        self.elapsed_before = loop.counters.elapsed_s
        self.steps_at_report = loop.counters.env_steps_produced

    def tick(self) -> float | None:
        """Update the elapsed time and the budget; the sps to report if a report is due."""
        now, c = time.perf_counter(), self.loop.counters
        c.elapsed_s = self.elapsed_before + (now - self.start)
        self.loop.sched.check_budget(now - self.start)
        due = now - self.last_report >= self.loop.cfg.run.report_every_s
        if not due and not self.loop.sched.stopping:
            return None
        sps = (c.env_steps_produced - self.steps_at_report) / max(now - self.last_report, 1e-9)
        self.last_report, self.steps_at_report = now, c.env_steps_produced
        return sps


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def _stop_on_signals(loop: RunLoop) -> Iterator[None]:
    """While the block runs, SIGINT/SIGTERM ask ``loop`` to stop with a checkpoint instead of
    killing the process. The previous handlers come back afterwards. Off the main thread
    (a Ray Tune trial runs its training in a thread) Python takes no handler: Tune stops a
    trial by ending its actor, and the run resumes from its newest checkpoint."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: signal.signal(sig, lambda s, _f: loop.request_stop(signal.Signals(s).name))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
