"""The local runtime: the whole run in one process, no Ray at all (``oniray train --local``).

Consumes: a validated :class:`OniConfig` and its run folder. Emits: the same run folder as the
Ray runtime (metrics.parquet, TensorBoard scalars, checkpoints, summary.json, the curve, the
report), through the same code: the decisions are ``cluster.scheduler``'s, the
session, command dispatch, rows, checkpoints and summary ``cluster.loop``'s, and the
components are made and wired by ``cluster.components`` (:class:`~cluster.components.InProcess`):
the rollout workers (one per ``rollout.num_actors``), one learner core, the annotator with its
judge and reward model (fitted in the loop, not in a thread).

Commands are carried out one at a time, in the order the scheduler gives them, so a debugger
can step from an environment step to a gradient. What it leaves out: Prometheus telemetry,
restarts (nothing here can die alone), and more than one learner rank.
"""

from __future__ import annotations

import collections
import logging

import torch

from actors.fragment import step_captions
from actors.rollout_worker import EpisodeStats
from actors.versioned import VersionedRef
from cluster.components import InProcess, LocalComponents, connect_components
from cluster.config import OniConfig, to_yaml
from cluster.loop import RunLoop
from cluster.run_dir import RunDir, atomic_write_text
from cluster.scheduler import Command, Sample, Train

log = logging.getLogger("oniray")


class InProcessRunLoop(RunLoop):
    """Rollout workers, one learner and the annotator, stepped by the scheduler in turn."""

    parts: LocalComponents

    def __init__(self, cfg: OniConfig, run_dir: RunDir, parts: LocalComponents) -> None:
        super().__init__(cfg, run_dir, parts)
        self._queue: collections.deque[Command] = collections.deque()  # to carry out, in order

    # ---- where events come from: the commands themselves, one at a time ---------------------
    def carry_out(self, cmds: list[Command]) -> None:
        self._queue.extend(cmds)

    def step(self) -> bool:
        if not self._queue:  # nothing left to do can only mean a stalled rule: say so, stop
            self.request_stop("the scheduler issued no work", failed=True)
            return False
        self._queue.extend(self.execute(self._queue.popleft()))
        self._annotate_step()
        return True

    def wind_down(self) -> None:
        # The batches handed out are trained (none is slow enough to skip here).
        self.checkpoint()
        for cmd in self.sched.drop_pending():
            self.execute(cmd)
        if self.parts.annotator is not None:
            self.parts.annotator.flush()

    # ---- how commands run: as calls, in this process -----------------------------------------
    def weights(self) -> VersionedRef:
        core = self.parts.learners
        return VersionedRef(core.policy_version, core.get_weights())

    def sample(self, cmd: Sample) -> list[Command]:
        worker = self.parts.rollouts[cmd.actor]
        if cmd.weights is not None and cmd.weights.version != worker.policy_version:
            worker.set_weights(cmd.weights.ref, cmd.weights.version)
        fragment, stats = worker.sample()
        # The Ray shell extracts them in the rollout actor; here, only for an annotator.
        captions = step_captions(fragment) if self.parts.annotator is not None else None
        return self.fragment_arrived(cmd.actor, cmd.incarnation, fragment, stats=stats,
                                     captions=captions)

    def update(self, cmd: Train, *, pump: bool = True) -> list[Command]:
        result = self.parts.learners.update(cmd.fragments, cmd.reward_model)
        return self.update_arrived(result, self.weights(), pump=pump)

    def checkpoint(self) -> list[Command]:
        """Train the batches already handed out (the checkpoint holds every update counted),
        write it; the rest of the queue goes on, then what the scheduler adds."""
        rest: collections.deque[Command] = collections.deque()
        for cmd in self._queue:
            if isinstance(cmd, Train):
                self.note_train(cmd.lags)
                self.update(cmd, pump=False)  # a checkpoint it makes due is this one
            else:
                rest.append(cmd)
        self._queue = rest
        return self.write_checkpoint(self.parts.learners.state())

    def restart_actor(self, actor: int) -> list[Command]:
        raise RuntimeError("the local runtime cannot restart a rollout worker")

    def rebuild_learners(self) -> list[Command]:
        raise RuntimeError("the local runtime cannot rebuild its learner")

    def play_random(self, *, episodes_per_env: int, min_steps: int) -> list[EpisodeStats]:
        return [w.play_random(episodes_per_env=episodes_per_env, min_steps=min_steps)
                for w in self.parts.rollouts]

    # ---- the reward service, stepped in the loop ------------------------------------------
    def annotate(self, captions: object) -> None:
        if self.parts.annotator is not None:
            self.parts.annotator.submit(captions)

    def _annotate_step(self) -> None:
        """What the annotation service has due (a judge batch, a reward-model round, a flush:
        ``Annotator.tick`` decides, as in the Ray actor's thread), then publish the newest
        reward model."""
        annotator = self.parts.annotator
        if annotator is None:
            return
        annotator.tick()  # how long nothing is due does not matter: the next command ticks
        version, state = annotator.reward_model()
        current = self.sched.reward_model
        if state is not None and (current is None or current.version != version):
            self.sched.reward_model_published(VersionedRef(version, state))

    def annotator_stats(self) -> dict[str, float] | None:
        assert self.parts.annotator is not None
        return self.parts.annotator.stats()


def train_in_process(cfg: OniConfig, run_dir: RunDir, *, resume_state: dict | None = None) -> dict:
    """Build, (restore,) train, checkpoint, summarise, in this process. SIGINT/SIGTERM stop
    with a checkpoint, as with Ray."""
    atomic_write_text(run_dir.config, to_yaml(cfg))
    if cfg.learner.num_learners > 1:
        log.warning("--local trains with one learner (learner.num_learners = %d ignored)",
                    cfg.learner.num_learners)
    torch.set_num_threads(cfg.learner.torch_threads)  # the learner's: the loop's hot part
    makers = InProcess()
    parts = connect_components(cfg, makers, labels_dir=str(run_dir.labels))
    try:
        return InProcessRunLoop(cfg, run_dir, parts).run(resume_state)
    finally:
        makers.close(parts)
