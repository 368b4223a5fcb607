"""What a checkpoint holds, and what a resumed run gets back exactly.

Consumes: the scheduler's state (its :class:`cluster.counters.Counters`, with what is pending
counted as dropped), the random baseline, the learner group's state and the config. Emits: the
dict ``cluster.run_dir.RunDir.save_checkpoint`` writes (with its checksum), read back on
``oniray train --resume``. Every part is a ``state()`` of the one contract
(``actors.checkpointable``), restored by that component's ``load_state``.

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

from typing import Any

from cluster.config import OniConfig, to_yaml
from learner.learner_core import INTRINSIC_STATE

# The checkpoint's keys, as on disk since the first checkpoints (runs resume from those).
COUNTERS, BASELINE, LEARNER, CONFIG_YAML = "counters", "baseline", "learner", "config_yaml"


def checkpoint_state(
    cfg: OniConfig,
    *,
    counters: dict[str, Any],
    baseline: dict[str, float] | None,
    learner_state: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint of a learner state that holds every update counted in ``counters``:
    ``Scheduler.state()``, which already counts what is pending as dropped."""
    return {
        COUNTERS: counters,
        BASELINE: baseline,
        LEARNER: learner_state,
        CONFIG_YAML: to_yaml(cfg),
    }


def restored_reward_model_version(state: dict[str, Any]) -> int:
    """The reward-model version the restored learners score with; -1 if none."""
    return int(state[LEARNER].get(INTRINSIC_STATE, {}).get("version", -1))
