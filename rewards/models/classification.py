"""ONI's classification reward model: a char-CNN predicting the judge's label.

Consumes the label table; trains with :func:`soft_label_loss` on (caption bytes, target), where
the target is the judge's P(helpful) where it gave one and the hard label (1 or 0) elsewhere, so
a caption the judge was unsure of pulls the model less than one it was sure of. Measures
accuracy on a held-out slice chosen by caption hash (stable across retrains) against the
judge's helpful / not helpful (probabilities cut at ``rewards.judge.threshold``). Reward:
1 where the model's P(helpful) > ``model.threshold``, else 0. Retraining continues from the
current weights.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from rewards.config import RewardModelConfig
from rewards.models.base import RewardModel, holdout_mask, label_columns
from rewards.models.encoder import encode_bytes, make_net, to_batch
from rewards.models.training import MinibatchTrainer, evaluate


def soft_label_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the model's P(helpful) against a probability target.

    logits [N, 2] (not helpful, helpful); target [N] in [0, 1]. With q = softmax(logits)[:, 1]
    the loss is -(t log q + (1 - t) log(1 - q)): the usual cross-entropy where t is 0 or 1, and
    least at q = t otherwise.
    """
    target = target.to(logits.dtype)
    return F.cross_entropy(logits, torch.stack([1.0 - target, target], dim=1))


class ClassificationRewardModel(RewardModel):
    kind = "classification"

    def __init__(
        self, cfg: RewardModelConfig, *, seed: int = 0, label_threshold: float = 0.5
    ) -> None:
        super().__init__(cfg, label_threshold=label_threshold)
        self.net = make_net(2, seed=seed)
        self._trainer = MinibatchTrainer(self.net, seed=seed)

    def probabilities(self, captions: list[str]) -> np.ndarray:
        """P(helpful) of each caption, float32 [N]."""
        return evaluate(self.net, captions, lambda logits: torch.softmax(logits, dim=1)[:, 1])

    def _fit(self, labels: pa.Table, preferences: pa.Table | None) -> dict[str, float]:
        start = time.perf_counter()
        captions, y, target = label_columns(labels, threshold=self.label_threshold)
        held = holdout_mask(captions, self.cfg.holdout_fraction)
        train = np.flatnonzero(~held)
        metrics: dict[str, float] = {
            "train_labels": float(train.size),
            "holdout": float(held.sum()),
        }
        if train.size:
            rows = encode_bytes([captions[i] for i in train])
            targets = torch.from_numpy(target[train])
            metrics["loss"] = self._trainer.fit(
                self.cfg, train.size,
                lambda b: soft_label_loss(self.net(*to_batch(rows[b])), targets[b]),
            )
        if held.any():
            hc = [c for c, h in zip(captions, held, strict=True) if h]
            predicted = self._score(hc) > 0.5
            metrics["accuracy"] = float((predicted == y[held]).mean())
        metrics["fit_seconds"] = time.perf_counter() - start
        return metrics

    def _score(self, captions: list[str]) -> np.ndarray:
        return (self.probabilities(captions) > self.cfg.threshold).astype(np.float32)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "net": self.net.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.net.load_state(state["net"])
