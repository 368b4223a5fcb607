"""Every decision of the training loop, with no Ray and no I/O.

Consumes events from a runtime (``cluster.driver`` on Ray, ``cluster.local_runtime`` in one
process): a fragment is ready (with its policy version and step count), an update is done, a
reward model is published, an actor or the learner died or was rebuilt, a stop is requested.
Emits commands the runtime carries out: :class:`Sample` (issue a sample call), :class:`Train`
(hand a batch to the learner), :class:`Drop` (fragments never trained on, by reason),
:class:`Checkpoint`, :class:`RestartActor`, :class:`RebuildLearners`.

The rules:
  * sample calls: each rollout actor has ``rollout.fragments_in_flight`` slots; a slot is
    reissued when its fragment arrives, unless a full batch already waits (backpressure), so
    fragments alive stay below (max_queued_batches + 1) * fragments_per_batch +
    num_actors * fragments_in_flight;
  * batches: ``fragments_per_batch`` ready fragments, oldest first, while fewer than
    ``learner.max_queued_batches`` updates are outstanding;
  * lag: a fragment acted by a policy more than ``rollout.max_policy_lag`` versions older
    than the one that will train on it is dropped (reason ``policy_lag``);
  * stop: once requested, nothing new is issued; the runtime finishes the update in progress,
    skips those queued behind it (reason ``stop``), checkpoints, and :meth:`drop_pending`
    drops what still waits (reason ``stop``);
  * a dead learner: the updates outstanding, and those trained since the newest checkpoint
    (which the rebuilt learner no longer holds), are dropped (reason ``learner_lost``);
  * a batch the learner could not fetch (a fragment lost with its node): dropped whole,
    untrained (reason ``object_lost``), and batching goes on with the same learner.

State (``state()`` / ``load_state()``, the contract of ``actors.checkpointable``): the
:class:`cluster.counters.Counters`, with what still waits counted as dropped (reason ``stop``),
since a run resumed from that checkpoint never trains on it. Nothing else carries over.

Accounting: ``env_steps_produced == env_steps_trained + env_steps_dropped + steps pending``
at every moment (pending = waiting for a batch or in an outstanding update), so after the stop
produced == trained + dropped; ``env_steps_dropped_by_reason`` sums to ``env_steps_dropped``.
A fragment whose actor died before its stats arrived was never produced: it is counted in
``fragments_lost`` (reason ``actor_lost``), outside the invariant.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Imports stay light (no torch, Ray, pydantic): the scheduler is tested and reasoned about
# alone, and tests/test_checkpointable.py checks it imports nothing heavy.
from actors.versioned import VersionedRef
from cluster.counters import Counters

# Why fragments are dropped: the ``reason`` of a Drop, of ``env_steps_dropped_by_reason`` and of
# the dropped-fragments metric.
POLICY_LAG = "policy_lag"  # acted by a policy too old for the learner that would train on it
STOP = "stop"  # waiting at the stop, or at a checkpoint a resumed run continues from
LEARNER_LOST = "learner_lost"  # held by a learner that died
ACTOR_LOST = "actor_lost"  # its rollout actor died before it arrived (never produced)
# Its object-store copy was gone when the learner fetched it: lost with its node (or the
# reward model the batch was to be scored with, with its owner); the learner lives on.
OBJECT_LOST = "object_lost"
DROP_REASONS = (POLICY_LAG, STOP, LEARNER_LOST, ACTOR_LOST, OBJECT_LOST)
# Why a run stops on its own (signals stop it with the signal's name, a dead learner with a
# sentence naming learner.max_restarts).
STEP_BUDGET_REACHED = "step budget reached"
TIME_BUDGET_REACHED = "time budget reached"


@dataclass(frozen=True)
class Sample:
    actor: int
    incarnation: int
    weights: VersionedRef | None  # the newest policy to act with


@dataclass(frozen=True)
class Train:
    fragments: list[Any]  # the runtime's fragment handles (ObjectRefs, or the fragments)
    reward_model: VersionedRef | None
    lags: list[int]


@dataclass(frozen=True)
class Drop:
    reason: str
    fragments: int
    env_steps: int


@dataclass(frozen=True)
class Checkpoint:
    pass


@dataclass(frozen=True)
class RestartActor:
    actor: int


@dataclass(frozen=True)
class RebuildLearners:
    pass


Command = Sample | Train | Drop | Checkpoint | RestartActor | RebuildLearners


@dataclass
class Limits:
    """The config values the scheduler decides by (``from_config`` reads them)."""

    num_actors: int
    fragments_in_flight: int
    fragments_per_batch: int
    max_policy_lag: int
    max_queued_batches: int
    checkpoint_every_updates: int
    total_env_steps: int
    max_minutes: float | None = None
    learner_max_restarts: int = 0

    @classmethod
    def from_config(cls, cfg: Any) -> Limits:
        return cls(
            num_actors=cfg.rollout.num_actors, fragments_in_flight=cfg.rollout.fragments_in_flight,
            fragments_per_batch=cfg.fragments_per_batch,
            max_policy_lag=cfg.rollout.max_policy_lag,
            max_queued_batches=cfg.learner.max_queued_batches,
            checkpoint_every_updates=cfg.run.checkpoint_every_updates,
            total_env_steps=cfg.run.total_env_steps, max_minutes=cfg.run.max_minutes,
            learner_max_restarts=cfg.learner.max_restarts,
        )


@dataclass
class _Ready:
    handle: Any
    version: int
    steps: int


@dataclass
class _Since:
    """Trained since the newest checkpoint: what a dead learner takes with it."""

    updates: int = 0
    fragments: int = 0
    steps: int = 0


@dataclass
class Scheduler:
    limits: Limits
    counters: Counters = field(default_factory=Counters)
    weights: VersionedRef | None = None  # the learner's newest published policy
    reward_model: VersionedRef | None = None  # the annotator's newest published model

    def __post_init__(self) -> None:
        n = self.limits.num_actors
        self.incarnations = [0] * n
        self.idle: collections.deque[tuple[int, int]] = collections.deque()
        self.ready: collections.deque[_Ready] = collections.deque()
        self.updates: collections.deque[list[_Ready]] = collections.deque()  # outstanding
        self.lags: list[int] = []  # of the fragments batched since the last report
        self.stop_reason: str | None = None
        self.failed = False
        self.learner_restarts = 0  # this session
        self.learner_down = False  # between a learner's death and its rebuild
        self._since = _Since()
        self._restarting: set[int] = set()  # actors told to restart, not yet back
        for i in range(n):
            self.idle.extend([(i, 0)] * self.limits.fragments_in_flight)

    # ---- queries ---------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return -1 if self.weights is None else self.weights.version

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def pending(self) -> list[_Ready]:
        """Fragments produced but neither trained on nor dropped: waiting for a batch, or in
        an outstanding update."""
        return [*self.ready, *(r for b in self.updates for r in b)]

    def pending_steps(self) -> int:
        return sum(r.steps for r in self.pending())

    # ---- state -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The counters as a checkpoint holds them: a run resumed from it never trains on
        what is pending now, so that counts as dropped (reason ``stop``) and the invariant
        produced == trained + dropped holds in it. The live counters are left as they are."""
        saved = dataclasses.asdict(self.counters)
        pending = self.pending()
        steps = sum(r.steps for r in pending)
        saved["fragments_dropped"] += len(pending)
        saved["env_steps_dropped"] += steps
        _add(saved["env_steps_dropped_by_reason"], STOP, steps)
        return saved

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue the counts of a checkpoint (a :meth:`state`); nothing is pending after it."""
        self.counters = Counters(**state)

    # ---- events ----------------------------------------------------------------------------
    def start(self, weights: VersionedRef) -> list[Command]:
        """The first sample calls: every slot, with the learner's initial weights."""
        self.weights = weights
        return self._samples(force=True)

    def fragment_ready(self, actor: int, incarnation: int, handle: Any, *, version: int,
                       steps: int) -> list[Command]:
        self.counters.env_steps_produced += steps
        self.ready.append(_Ready(handle, version, steps))
        if incarnation == self.incarnations[actor]:
            self.idle.append((actor, incarnation))
        return self.pump()

    def actor_lost(self, actor: int, incarnation: int) -> list[Command]:
        """A sample call failed because its actor died: count the fragment lost (each call
        once), and restart the actor on the first loss of its incarnation."""
        self.counters.fragments_lost += 1
        cmds: list[Command] = [Drop(ACTOR_LOST, 1, 0)]
        if (incarnation == self.incarnations[actor] and actor not in self._restarting
                and not self.stopping):
            self._restarting.add(actor)
            cmds.append(RestartActor(actor))
        return cmds

    def sample_failed(self, actor: int, incarnation: int) -> list[Command]:
        """A sample call failed but its actor lives (the weights it was to fetch died with
        their learner): the fragment is lost, the slot is reissued."""
        self.counters.fragments_lost += 1
        if incarnation == self.incarnations[actor]:
            self.idle.append((actor, incarnation))
        return [Drop(ACTOR_LOST, 1, 0), *self.pump()]

    def actor_restarted(self, actor: int) -> list[Command]:
        self._restarting.discard(actor)
        self.incarnations[actor] += 1
        self.counters.actor_restarts += 1
        self.idle.extend([(actor, self.incarnations[actor])] * self.limits.fragments_in_flight)
        return self.pump()

    def update_done(self, weights: VersionedRef | None, *, skipped: bool = False,
                    pump: bool = True) -> list[Command]:
        """The oldest outstanding update finished (``skipped``: at a stop, untrained).
        A due checkpoint comes alone: batching pauses until :meth:`checkpointed`, so the
        checkpoint holds every update counted. ``pump=False``: decide nothing new (a runtime
        waiting for its outstanding updates)."""
        batch = self.updates.popleft()
        if skipped:
            return [self._drop(STOP, batch)]
        steps = sum(r.steps for r in batch)
        c = self.counters
        c.updates += 1
        c.env_steps_trained += steps
        self._since.updates += 1
        self._since.fragments += len(batch)
        self._since.steps += steps
        if weights is not None:
            self.weights = weights
        if c.updates % self.limits.checkpoint_every_updates == 0 and not self.stopping:
            return [Checkpoint()]
        return self.pump() if pump else []

    def update_lost(self, *, pump: bool = True) -> list[Command]:
        """The oldest outstanding update could not fetch its batch (an object lost with its
        node): nothing was trained; the learner lives on, so only that batch is dropped."""
        cmds: list[Command] = [self._drop(OBJECT_LOST, self.updates.popleft())]
        return cmds + self.pump() if pump else cmds

    def checkpointed(self) -> list[Command]:
        """A checkpoint holding every update counted so far was written: batching resumes."""
        assert not self.updates, "a checkpoint must wait for the outstanding updates"
        self._since = _Since()
        return self.pump()

    def reward_model_published(self, model: VersionedRef | None) -> None:
        """None: the annotator that owned the model died; learners keep theirs."""
        self.reward_model = model

    def learner_lost(self) -> list[Command]:
        """A learner rank died: what it trained since the newest checkpoint and the updates
        outstanding are lost; rebuild within ``learner.max_restarts``, else stop."""
        cmds: list[Command] = []
        while self.updates:
            cmds.append(self._drop(LEARNER_LOST, self.updates.popleft()))
        c, since = self.counters, self._since
        c.updates -= since.updates
        c.env_steps_trained -= since.steps
        c.fragments_dropped += since.fragments
        c.env_steps_dropped += since.steps
        _add(c.env_steps_dropped_by_reason, LEARNER_LOST, since.steps)
        if since.fragments:
            cmds.append(Drop(LEARNER_LOST, since.fragments, since.steps))
        self._since = _Since()
        self.learner_down = True
        if self.stopping:
            return cmds
        if self.learner_restarts >= self.limits.learner_max_restarts:
            self.request_stop(f"a learner died and the {self.limits.learner_max_restarts} "
                              f"restarts of learner.max_restarts are used up", failed=True)
            return cmds
        self.learner_restarts += 1
        c.learner_restarts += 1
        return [*cmds, RebuildLearners()]

    def learner_restored(self, weights: VersionedRef) -> list[Command]:
        """The rebuilt learners hold the newest checkpoint's state and publish ``weights``."""
        self.learner_down = False
        self.weights = weights
        return self.pump()

    def request_stop(self, reason: str, *, failed: bool = False) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.failed |= failed

    def check_budget(self, elapsed_s: float) -> None:
        """``elapsed_s``: this session's training time (the time budget is per session)."""
        if self.counters.env_steps_produced >= self.limits.total_env_steps:
            self.request_stop(STEP_BUDGET_REACHED)
        elif self.limits.max_minutes is not None and elapsed_s >= self.limits.max_minutes * 60:
            self.request_stop(TIME_BUDGET_REACHED)

    def skip_queued(self) -> bool:
        """At the stop: whether updates wait behind the one in progress (to be skipped)."""
        return len(self.updates) > 1

    def drop_pending(self) -> list[Command]:
        """After the final checkpoint: what still waits for a batch is never trained on."""
        if not self.ready:
            return []
        batch = list(self.ready)
        self.ready.clear()
        return [self._drop(STOP, batch)]

    # ---- rules -----------------------------------------------------------------------------
    def pump(self) -> list[Command]:
        """The batches and sample calls due now."""
        return self._feed() + self._samples()

    def _feed(self) -> list[Command]:
        """Hand full batches to the learner, dropping fragments aged past the lag bound."""
        lim, cmds = self.limits, []
        while (len(self.updates) < lim.max_queued_batches and not self.stopping
               and not self.learner_down):
            learner_version = self.version + len(self.updates)  # the version that trains it
            # Every waiting fragment, not only the oldest: fragments need not arrive in the
            # order of their versions (several actors, or ray.wait's order of ready refs).
            old = [r for r in self.ready if learner_version - r.version > lim.max_policy_lag]
            if old:
                self.ready = collections.deque(
                    r for r in self.ready if learner_version - r.version <= lim.max_policy_lag)
                cmds.append(self._drop(POLICY_LAG, old))
            if len(self.ready) < lim.fragments_per_batch:
                break
            batch = [self.ready.popleft() for _ in range(lim.fragments_per_batch)]
            lags = [learner_version - r.version for r in batch]
            self.lags += lags
            self.updates.append(batch)
            cmds.append(Train([r.handle for r in batch], self.reward_model, lags))
        return cmds

    def _samples(self, *, force: bool = False) -> list[Command]:
        """Backpressure: while a full batch already waits for a busy learner, actors pause."""
        cmds: list[Command] = []
        while self.idle and not self.stopping and (
            force or len(self.ready) < self.limits.fragments_per_batch
        ):
            actor, incarnation = self.idle.popleft()
            if incarnation != self.incarnations[actor]:
                continue  # a slot of a dead predecessor; its replacement got its own slots
            cmds.append(Sample(actor, incarnation, self.weights))
        return cmds

    def _drop(self, reason: str, batch: list[_Ready]) -> Drop:
        steps = sum(r.steps for r in batch)
        c = self.counters
        c.fragments_dropped += len(batch)
        c.env_steps_dropped += steps
        _add(c.env_steps_dropped_by_reason, reason, steps)
        return Drop(reason, len(batch), steps)


def rollout_seed(run_seed: int, actor_id: int, incarnation: int) -> int:
    """The seed of a rollout actor's environments and sampling. Incarnation 0 keeps the seed
    runs always had; each restart gets a fresh one, so a replacement does not replay the
    episodes its predecessor played."""
    return run_seed * 10_007 + actor_id + incarnation * 1_000_003


def _add(counts: dict[str, int], key: str, value: int) -> None:
    counts[key] = counts.get(key, 0) + value
