"""The local runtime: the whole run in one process, no Ray at all (``oniray train --local``).

Consumes: a validated :class:`OniConfig` and its run folder. Emits: the same run folder as the
Ray runtime (metrics.parquet, TensorBoard scalars, checkpoints, summary.json, the curve; the
CLI adds the report), through the same code: the decisions are ``cluster.scheduler``'s, the
rows, checkpoints and summary ``cluster.loop``'s, and the components are the ones the Ray
actors wrap: :class:`actors.rollout_worker.RolloutWorker` (one per ``rollout.num_actors``),
:class:`learner.learner_core.LearnerCore` (one rank), :class:`rewards.annotator.Annotator`
with its judge and reward model (fitted in the loop, not in a thread).

Commands are carried out one at a time, in the order the scheduler gives them, so a debugger
can step from an environment step to a gradient. What it leaves out: Prometheus telemetry,
restarts (nothing here can die alone), and more than one learner rank.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import torch

from actors.fragment import step_captions
from actors.rollout_worker import RolloutWorker
from actors.versioned import VersionedRef
from cluster.config import OniConfig, to_yaml
from cluster.loop import Clock, RunLoop, resumed_and_stoppable
from cluster.progress import annotator_columns
from cluster.run_dir import RunDir, atomic_write_text
from cluster.scheduler import (
    Checkpoint,
    Command,
    Drop,
    RebuildLearners,
    RestartActor,
    Sample,
    Train,
    rollout_seed,
)
from cluster.tensorboard import EventWriter
from learner import intrinsic as intrinsic_keys
from learner.learner_core import LearnerCore

log = logging.getLogger("oniray")


class LocalTrainer(RunLoop):
    """Rollout workers, one learner and the annotator, stepped by the scheduler in turn."""

    def __init__(self, cfg: OniConfig, run_dir: RunDir, events: EventWriter | None = None) -> None:
        super().__init__(cfg, run_dir, events)
        if cfg.learner.num_learners > 1:
            log.warning("--local trains with one learner (learner.num_learners = %d ignored)",
                        cfg.learner.num_learners)
        torch.set_num_threads(cfg.learner.torch_threads)
        self.workers = [
            RolloutWorker(env=cfg.env, rollout=cfg.rollout, model=cfg.model, actor_id=i,
                          seed=rollout_seed(cfg.run.seed, i, 0))
            for i in range(cfg.rollout.num_actors)
        ]
        self.learner = LearnerCore(cfg, num_actions=self.workers[0].num_actions)
        self.annotator = None
        if cfg.rewards.annotator.enabled:
            from rewards.annotator import Annotator
            from rewards.judges import make_judge
            from rewards.label_store import LabelStore

            self.annotator = Annotator(
                cfg.rewards, judge=make_judge(cfg.rewards.judge, env_id=cfg.env.id),
                store=LabelStore(run_dir.labels), train_in_step=True,
            )
        self._outstanding: collections.deque[dict[str, Any]] = collections.deque()

    def restore(self, state: dict[str, Any]) -> None:
        self.restore_counters(state)
        self.learner.load_state(state["learner"])

    def weights(self) -> VersionedRef:
        """The learner's policy, published as the value itself (nothing to fetch)."""
        return VersionedRef(self.learner.policy_version, self.learner.get_weights())

    def measure_random_baseline(self) -> None:
        plan = self.baseline_plan()
        if plan is None:
            return
        per_env, min_steps = plan
        started = time.perf_counter()
        results = [w.play_random(episodes_per_env=per_env, min_steps=min_steps)
                   for w in self.workers]
        self.set_baseline(results, time.perf_counter() - started)

    def train(self) -> dict[str, Any]:
        queue: collections.deque[Command] = collections.deque(self.sched.start(self.weights()))
        clock = Clock(self)
        while not self.sched.stopping:
            if not queue:  # nothing left to do can only mean a stalled rule: say so, stop
                self.request_stop("the scheduler issued no work", failed=True)
                break
            cmd = queue.popleft()
            if isinstance(cmd, Checkpoint):
                queue = self._checkpoint(queue)
            else:
                queue.extend(self._execute(cmd))
            self._annotate_step()
            sps = clock.tick()
            if sps is not None:
                self.report(sps, object_store_mb=None, annotator=self._annotator_columns())
        # The stop: the batches handed out are trained (none is slow enough to skip here).
        queue = self._checkpoint(queue)
        for cmd in self.sched.drop_pending():
            self._execute(cmd)
        if self.annotator is not None:
            self.annotator.flush()
        return self.finish()

    def _execute(self, cmd: Command) -> list[Command]:
        if isinstance(cmd, Sample):
            worker = self.workers[cmd.actor]
            if cmd.weights is not None and cmd.weights.version != worker.policy_version:
                worker.set_weights(cmd.weights.ref, cmd.weights.version)
            fragment, stats = worker.sample()
            self.record_episodes(stats)
            if self.annotator is not None:
                self.annotator.submit(step_captions(fragment))
            return self.sched.fragment_ready(cmd.actor, cmd.incarnation, fragment,
                                             version=stats.policy_version, steps=stats.env_steps)
        if isinstance(cmd, Train):
            return self._train(cmd)
        if isinstance(cmd, Drop):
            self.note_drop(cmd)
            return []
        if isinstance(cmd, Checkpoint | RestartActor | RebuildLearners):  # train() does these
            raise RuntimeError(f"the local runtime cannot carry out {cmd}")
        raise TypeError(f"unknown command {cmd!r}")

    def _train(self, cmd: Train, *, pump: bool = True) -> list[Command]:
        self.note_train(cmd.lags)
        result = self.learner.update(cmd.fragments, cmd.reward_model)
        self.note_update(result)
        return self.sched.update_done(self.weights(), pump=pump)

    def _checkpoint(self, queue: collections.deque[Command]) -> collections.deque[Command]:
        """Train the batches already handed out (the checkpoint holds every update counted),
        write it, and go on with the rest of the queue and what the scheduler adds."""
        rest: collections.deque[Command] = collections.deque()
        for cmd in queue:
            if isinstance(cmd, Train):
                self._train(cmd, pump=False)  # a checkpoint it makes due is this one
            else:
                rest.append(cmd)
        rest.extend(self.write_checkpoint(self.learner.state()))
        return rest

    def _annotate_step(self) -> None:
        """Label a batch when one is due, refit, and publish the newest reward model."""
        annotator = self.annotator
        if annotator is None:
            return
        wait = annotator.seconds_until_batch()
        if wait is not None and wait <= 0:
            annotator.step()
        version, state = annotator.reward_model()
        current = self.sched.reward_model
        if state is not None and (current is None or current.version != version):
            self.sched.reward_model_published(VersionedRef(version, state))

    def _annotator_columns(self) -> dict[str, Any]:
        if self.annotator is None:
            return {}
        return annotator_columns(self.annotator.stats(), reward_model_version_trained=int(
            self.last_loss.get(intrinsic_keys.REWARD_MODEL_VERSION, -1)),
            learner_losses=self.last_loss)


def run_training(cfg: OniConfig, run_dir: RunDir, *, resume_state: dict | None = None) -> dict:
    """Build, (restore,) train, checkpoint, summarise, in this process. SIGINT/SIGTERM stop
    with a checkpoint, as with Ray."""
    atomic_write_text(run_dir.config, to_yaml(cfg))
    events = EventWriter(run_dir.root)
    trainer = LocalTrainer(cfg, run_dir, events)
    try:
        with resumed_and_stoppable(trainer, trainer.restore, resume_state):
            trainer.measure_random_baseline()
            return trainer.train()
    finally:
        events.close()
        if trainer.annotator is not None:
            trainer.annotator.judge.close()
        for worker in trainer.workers:
            worker.close()
