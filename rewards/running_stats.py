"""Running mean and variance as an immutable value: ``stats.update(batch)`` returns new stats.

Consumed by the ranking reward model (normalising its scores) and RND (normalising its bonus).
The merge is Chan et al.'s parallel form of Welford's algorithm, so one batch update equals
feeding the batch's values one at a time, and the state is three plain floats that travel
through the object store with the model that owns them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RunningMeanStd:
    """Mean and (population) variance of every value seen so far."""

    mean: float = 0.0
    var: float = 1.0  # before any data: the identity normalisation
    count: float = 0.0

    def update(self, values: np.ndarray) -> RunningMeanStd:
        """These statistics merged with those of ``values`` (any shape; flattened)."""
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return self
        return self.merge(float(x.mean()), float(x.var()), float(x.size))

    def merge(self, batch_mean: float, batch_var: float, batch_count: float) -> RunningMeanStd:
        """Chan et al.: combine two (mean, M2) summaries without revisiting their values."""
        if self.count == 0:
            return RunningMeanStd(batch_mean, batch_var, batch_count)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count
        m2 += delta * delta * self.count * batch_count / total
        return RunningMeanStd(mean, m2 / total, total)

    @property
    def std(self) -> float:
        return float(np.sqrt(self.var))

    def normalise(self, values: np.ndarray, *, eps: float = 1e-8) -> np.ndarray:
        """(values - mean) / std, as float32."""
        out = (np.asarray(values, np.float64) - self.mean) / np.sqrt(self.var + eps)
        return out.astype(np.float32)

    def scale(self, values: np.ndarray, *, eps: float = 1e-8) -> np.ndarray:
        """values / std, without centring (RND's bonus keeps its sign and zero)."""
        return (np.asarray(values, np.float64) / np.sqrt(self.var + eps)).astype(np.float32)

    def state(self) -> dict[str, float]:
        """The three floats; ``RunningMeanStd(**state)`` is the same statistics again (a value
        is rebuilt, not loaded into: ``actors.checkpointable``)."""
        return {"mean": self.mean, "var": self.var, "count": self.count}
