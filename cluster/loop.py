"""What both runtimes share around the scheduler: the run folder's rows, checkpoints, summary.

Consumes: the config, the run folder, the scheduler's counters, the rollout workers' episode
stats and the learner's update metrics. Emits: ``metrics.parquet`` rows and TensorBoard
scalars, progress lines, checkpoints (``cluster.checkpointing``), ``summary.json`` and the
curve. No Ray here: ``cluster.driver`` (Ray) and ``cluster.local_runtime`` (one process)
subclass :class:`RunLoop` and only add how commands are carried out.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from actors import metrics as m
from actors.envs import has_goal
from actors.rollout_worker import EpisodeStats
from cluster.checkpointing import COUNTERS, checkpoint_state, restored_reward_model_version
from cluster.config import OniConfig
from cluster.counters import Counters
from cluster.progress import LoopState, metrics_row, progress_line
from cluster.report import mean_and_interval, plot_curve
from cluster.run_dir import RunDir
from cluster.scheduler import Command, Drop, Limits, Scheduler
from cluster.summary import add_rewarded, rewarded_lines, success_rate, summarise
from cluster.tensorboard import EventWriter
from learner import intrinsic as intrinsic_keys

log = logging.getLogger("oniray")


class RunLoop:
    """The scheduler plus the run folder. Subclasses carry out the commands."""

    def __init__(self, cfg: OniConfig, run_dir: RunDir, events: EventWriter | None) -> None:
        self.cfg, self.run_dir, self.events = cfg, run_dir, events
        self.sched = Scheduler(Limits.from_config(cfg))
        self._has_goal = has_goal(cfg.env.id)
        self.baseline: dict[str, float] | None = None
        self.metric_rows: list[dict[str, Any]] = run_dir.read_metrics()
        self.last_loss: dict[str, float] = {}
        self._labels = m.component_labels(role="driver", actor_id=0)

    @property
    def counters(self) -> Counters:
        return self.sched.counters

    def request_stop(self, reason: str, *, failed: bool = False) -> None:
        if self.sched.stop_reason is None:
            log.warning("stopping: %s", reason)
        self.sched.request_stop(reason, failed=failed)

    def restore_counters(self, state: dict[str, Any]) -> None:
        """The driver's side of a checkpoint; the runtime restores the learner's."""
        self.sched.load_state(state[COUNTERS])
        self.baseline = state.get("baseline")
        # Until the first update, the reward model the restored learner scores with.
        self.last_loss[intrinsic_keys.REWARD_MODEL_VERSION] = float(
            restored_reward_model_version(state))

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
        self.last_loss = {k: v for k, v in result.items() if isinstance(v, float)}
        add_rewarded(self.counters.rewarded_messages,
                     result.get(intrinsic_keys.REWARDED_MESSAGES) or {})

    def note_train(self, lags: list[int]) -> None:
        for lag in lags:
            m.POLICY_LAG.labels(**self._labels).observe(lag)

    # ---- the random baseline ---------------------------------------------------------------
    def baseline_plan(self) -> tuple[int, int] | None:
        """(episodes per env, min steps per actor) of the random baseline; None: skip it."""
        episodes = self.cfg.run.random_baseline_episodes
        if episodes == 0 or self.baseline is not None:
            return None
        actors = self.cfg.rollout.num_actors
        envs = actors * self.cfg.rollout.envs_per_actor
        return max(1, -(-episodes // envs)), -(-self.cfg.run.random_baseline_min_steps // actors)

    def set_baseline(self, results: list[EpisodeStats], seconds: float) -> None:
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

    def report(self, sps: float, *, object_store_mb: float | None,
               annotator: dict[str, Any]) -> None:
        sched = self.sched
        lag = float(np.mean(sched.lags)) if sched.lags else 0.0
        sched.lags.clear()
        loop = LoopState(sps=sps, policy_version=sched.version, policy_lag=lag,
                         fragments_ready=len(sched.ready), updates_queued=len(sched.updates),
                         object_store_mb=object_store_mb)
        row = metrics_row(self.counters, loop, self.last_loss, annotator)
        m.ENV_STEPS_PER_SECOND.labels(**self._labels).set(sps)
        m.POLICY_VERSION.labels(**self._labels).set(sched.version)
        m.QUEUE_DEPTH.labels(**self._labels, queue="fragments_ready").set(len(sched.ready))
        m.QUEUE_DEPTH.labels(**self._labels, queue="learner_updates").set(len(sched.updates))
        self.metric_rows.append(row)
        self.run_dir.write_metrics(self.metric_rows)
        if self.events is not None:
            self.events.write_row(row)
        print(progress_line(row, self.baseline), flush=True)

    def say_newest_checkpoint(self) -> None:
        newest = self.run_dir.newest_checkpoint_name()
        print(f"the newest checkpoint is {newest or 'none'}; resume with: "
              f"oniray train --resume {self.run_dir.root}", flush=True)

    def finish(self) -> dict[str, Any]:
        sched = self.sched
        summary = summarise(self.counters, self.baseline, policy_version=sched.version,
                            stop_reason=sched.stop_reason, failed=sched.failed)
        self.run_dir.write_summary(summary)
        if self.metric_rows:
            plot_curve(self.metric_rows, self.baseline, self.run_dir.curve)
        for line in rewarded_lines(summary):
            print(line, flush=True)
        print("summary: " + ", ".join(f"{k}={_fmt(v)}" for k, v in summary.items()
                                      if k != "rewarded_messages"), flush=True)
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
def resumed_and_stoppable(
    loop: RunLoop, restore: Callable[[dict[str, Any]], None], resume_state: dict | None
) -> Iterator[None]:
    """Both runtimes' start: restore ``resume_state`` (if any) and say where the run resumes;
    while the block runs, SIGINT/SIGTERM ask ``loop`` to stop with a checkpoint instead of
    killing the process. The previous handlers come back afterwards."""
    if resume_state is not None:
        restore(resume_state)
        print(f"resumed at {loop.counters.env_steps_produced:,} env steps, "
              f"{loop.counters.updates} updates", flush=True)
    previous = {
        sig: signal.signal(sig, lambda s, _f: loop.request_stop(signal.Signals(s).name))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

