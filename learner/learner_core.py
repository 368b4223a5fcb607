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
from learner.batch import make_batch
from learner.config import LearnerSections
from learner.intrinsic import IntrinsicScorer

INTRINSIC_STATE = "intrinsic"  # state key: the IntrinsicScorer's reward model and RND


class LearnerCore:
    def __init__(
        self, cfg: LearnerSections, *, num_actions: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.learner = Learner(cfg, num_actions=num_actions, rank=rank, world_size=world_size)
        # RND's gradients and statistics are averaged over the ranks: one RND for the group.
        self.scorer = IntrinsicScorer(
            cfg.rewards, crop_size=cfg.env.crop_size, seed=cfg.run.seed, world_size=world_size
        )

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
        batch = make_batch(fragments)
        intrinsic = self.scorer(batch)
        metrics: dict[str, Any] = self.learner.update(
            batch, judged=intrinsic.judged, novelty=intrinsic.novelty
        )
        metrics.update(intrinsic.metrics)
        metrics[POLICY_VERSION] = self.learner.policy_version
        return metrics

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.learner.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.learner.set_weights(weights)

    def state(self) -> dict[str, Any]:
        return {**self.learner.state(), INTRINSIC_STATE: self.scorer.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state(state)
        if INTRINSIC_STATE in state:  # checkpoints from before the scorer was saved lack it
            self.scorer.load_state(state[INTRINSIC_STATE])
