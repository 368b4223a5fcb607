"""The label-free count model: every message is rewarded, by its episodic count alone.

reward(caption) = 1 for every non-empty caption (the base class scores the empty message 0).
Through ONI's combination, r = c_int * 1 * N^-beta with N the message's count in the episode,
this is the message-novelty bonus of the exploration literature: ONI's formula with every
caption labelled helpful. It needs no judge and no labels, so it exists from the first update
on (``needs_labels`` is False); against the judge-based models it separates what the judge's
labels add from mere novelty.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from rewards.models.base import RewardModel


class CountRewardModel(RewardModel):
    kind = "count"
    needs_labels: ClassVar[bool] = False

    def _fit(self, labels: pa.Table, preferences: pa.Table | None) -> dict[str, float]:
        return {"labels": float(labels.num_rows)}  # labels change nothing

    def _score(self, captions: list[str]) -> np.ndarray:
        return np.ones(len(captions), np.float32)
