"""ONI's retrieval reward model: the judge's label table itself.

reward(caption) = 1 if the judge called it helpful, 0 if not or if it was never labelled. A
label with a probability is helpful where its P(helpful) exceeds ``rewards.judge.threshold``.
It cannot generalise to unseen captions; it is exact on the labelled ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from rewards.config import RewardModelConfig
from rewards.models.base import RewardModel, label_columns


class RetrievalRewardModel(RewardModel):
    kind = "retrieval"

    def __init__(self, cfg: RewardModelConfig, *, label_threshold: float = 0.5) -> None:
        super().__init__(cfg, label_threshold=label_threshold)
        self._helpful: frozenset[str] = frozenset()

    def _fit(self, labels: pa.Table, preferences: pa.Table | None) -> dict[str, float]:
        captions, y, _ = label_columns(labels, threshold=self.label_threshold)
        self._helpful = frozenset(c for c, lab in zip(captions, y, strict=True) if lab)
        return {"labels": float(len(captions)), "helpful": float(len(self._helpful))}

    def _score(self, captions: list[str]) -> np.ndarray:
        return np.fromiter((c in self._helpful for c in captions), np.float32, len(captions))

    def state(self) -> dict[str, Any]:
        # Unhelpful and unknown captions both score 0: the helpful ones are the whole table.
        return {**super().state(), "helpful": sorted(self._helpful)}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._helpful = frozenset(state["helpful"])
