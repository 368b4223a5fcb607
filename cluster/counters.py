"""What a run counts: one plain dataclass, owned by the scheduler (``cluster.scheduler``).

Consumes nothing; the scheduler and the run loop add to it, the progress line, the summary and
the checkpoint read it. Kept apart from the scheduler's rules so that every reader can import
the type without the rules, and apart from ``cluster.checkpointing`` so that the scheduler
imports nothing heavy (that module pulls in the config and the learner).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Counters:
    """Everything the run counts; checkpointed (by ``Scheduler.state()``) so a resumed run
    continues the counts.

    Invariant, in every checkpoint and summary: env_steps_produced == env_steps_trained +
    env_steps_dropped. A fragment is *produced* once its stats reach the driver; one whose
    actor died before that never reached the driver and is *lost* (fragments_lost), not
    produced, so it stays out of the invariant.
    """

    env_steps_produced: int = 0  # steps in fragments that reached the driver
    env_steps_trained: int = 0  # steps in fragments the learner trained on
    env_steps_dropped: int = 0  # steps in fragments dropped (policy lag, the stop, a learner)
    # env_steps_dropped by reason (cluster.scheduler.DROP_REASONS)
    env_steps_dropped_by_reason: dict[str, int] = field(default_factory=dict)
    fragments_dropped: int = 0
    fragments_lost: int = 0  # fragments in flight when their rollout actor died
    actor_restarts: int = 0  # rollout actors restarted, over all sessions
    annotator_restarts: int = 0
    learner_restarts: int = 0  # learner groups rebuilt from a checkpoint, over all sessions
    annotations_skipped: int = 0  # fragments whose captions the busy annotator did not get
    updates: int = 0
    episodes: int = 0
    elapsed_s: float = 0.0  # training wall time over all sessions of this run
    recent_returns: list[float] = field(default_factory=list)
    recent_lengths: list[int] = field(default_factory=list)
    recent_successes: list[bool] = field(default_factory=list)
    # message -> [judged reward credited to the steps that led to it, those steps], summed
    # over the run's updates (rank 0's share with several learners; cluster.summary)
    rewarded_messages: dict[str, list[float]] = field(default_factory=dict)
