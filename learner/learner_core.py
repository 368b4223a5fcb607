"""One learner rank without Ray: the APPO learner and its intrinsic scorer together.

Consumes: a batch of fragments (``pa.RecordBatch``) and, optionally, the newest reward model
as a :class:`actors.versioned.VersionedRef` whose ``ref`` the caller has resolved to the
model's state. Emits: the update's metrics, with ``policy_version``. The learner owns the
policy version (``Learner.policy_version``); nothing else counts it.

``learner.learner_group`` wraps this in a Ray actor; ``cluster.local_runtime`` calls it
directly, so both runtimes train through the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from actors.versioned import VersionedRef
from learner.appo import POLICY_VERSION, Learner
from learner.intrinsic import IntrinsicScorer

INTRINSIC_STATE = "intrinsic"  # state key: the IntrinsicScorer's reward model and RND


class LearnerCore:
    def __init__(self, cfg: Any, *, num_actions: int, rank: int = 0, world_size: int = 1) -> None:
        self.learner = Learner(cfg, num_actions=num_actions, rank=rank, world_size=world_size)
        self.scorer = IntrinsicScorer(cfg.rewards, crop_size=cfg.env.crop_size, seed=cfg.run.seed)

    @property
    def policy_version(self) -> int:
        return self.learner.policy_version

    def needs_model(self, model: VersionedRef | None) -> bool:
        """Whether ``model`` is newer than the one in use (only then is its state fetched)."""
        return model is not None and model.version != self.scorer.version

    def update(self, fragments: list[pa.RecordBatch],
               reward_model: VersionedRef | None = None) -> dict[str, Any]:
        """Train on ``fragments``; ``reward_model.ref`` is the model's state, already fetched."""
        if self.needs_model(reward_model):
            assert reward_model is not None
            self.scorer.set_model(reward_model.version, reward_model.ref)
        intrinsic = self.scorer(fragments)
        metrics: dict[str, Any] = self.learner.update(
            fragments, intrinsic=intrinsic.reward_model, bonus=intrinsic.bonus
        )
        metrics.update(intrinsic.metrics)
        metrics[POLICY_VERSION] = self.learner.policy_version
        return metrics

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.learner.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.learner.set_weights(weights)

    def state(self) -> dict[str, Any]:
        return {**self.learner.state_dict(), INTRINSIC_STATE: self.scorer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)
        if INTRINSIC_STATE in state:  # checkpoints from before the scorer was saved lack it
            self.scorer.load_state_dict(state[INTRINSIC_STATE])
