"""What a checkpoint holds, and what a resumed run gets back exactly.

Consumes: the driver's :class:`Counters`, the random baseline, the learner group's state and
the config. Emits: the dict ``cluster.run_dir.RunDir.save_checkpoint`` writes (with its
checksum), and reads it back on ``oniray train --resume``.

Exact on resume (bit for bit, as of the checkpoint):
  * the driver's counters: env steps produced / trained / dropped, fragments dropped and
    lost, updates, episodes, restarts, elapsed time, the recent returns of the summary;
  * the learner: policy weights, Adam state, policy version, its torch RNG state, and the
    intrinsic scorer: the reward model in use (version and state) and RND's target,
    predictor, optimiser and running statistics (``learner.learner_group.INTRINSIC_STATE``);
  * the label store, which is on disk (``labels/``) and reloaded by the new annotator.
Not exact:
  * the rollout actors' environments and recurrent states: NLE cannot save a game, so every
    environment starts a new episode (episodes in progress at the stop are not counted);
  * fragments in flight or waiting at the stop: counted as dropped, never trained on;
  * labels the annotator had not flushed (at most ``rewards.annotator.flush_interval_s`` of
    labelling, only after a kill -9: a clean stop flushes), asked again;
  * the annotator's reward model is refitted from the store at its next round; until then
    the learners score with the restored one.
The driver keeps no random state of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cluster.config import OniConfig, to_yaml
from learner.learner_core import INTRINSIC_STATE


@dataclass
class Counters:
    """Everything the driver counts; checkpointed so a resumed run continues the counts.

    Invariant, in every checkpoint and summary: env_steps_produced == env_steps_trained +
    env_steps_dropped. A fragment is *produced* once its stats reach the driver; one whose
    actor died before that never reached the driver and is *lost* (fragments_lost), not
    produced, so it stays out of the invariant.
    """

    env_steps_produced: int = 0  # steps in fragments that reached the driver
    env_steps_trained: int = 0  # steps in fragments the learner trained on
    env_steps_dropped: int = 0  # steps in fragments dropped (policy lag, the stop, a learner)
    # env_steps_dropped by reason (cluster.scheduler: policy_lag, stop, learner_lost)
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


def checkpoint_state(
    cfg: OniConfig,
    *,
    counters: Counters,
    pending_fragments: int,
    baseline: dict[str, float] | None,
    learner_state: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint of a learner state that holds every update counted in ``counters``.

    ``pending_fragments`` reached the driver but are not trained on in that state: a run
    resumed from it never trains on them, so the checkpoint counts them as dropped and the
    invariant holds in it.
    """
    saved = asdict(counters)
    saved["fragments_dropped"] += pending_fragments
    saved["env_steps_dropped"] += pending_fragments * cfg.fragment_steps
    by_reason = saved["env_steps_dropped_by_reason"]
    by_reason["stop"] = by_reason.get("stop", 0) + pending_fragments * cfg.fragment_steps
    return {
        "counters": saved,
        "baseline": baseline,
        "learner": learner_state,
        "config_yaml": to_yaml(cfg),
    }


def restored_counters(state: dict[str, Any]) -> Counters:
    return Counters(**state["counters"])


def restored_reward_model_version(state: dict[str, Any]) -> int:
    """The reward-model version the restored learners score with; -1 if none."""
    return int(state["learner"].get(INTRINSIC_STATE, {}).get("version", -1))
