"""ONI's ranking reward model: Bradley-Terry on the judge's pairwise preferences.

Consumes the preference table (first, second, preferred: 0 first, 1 second, -1 tie; prob_first
where the judge gave P(first better)) and the label table (its captions join the "known" set). A
char-CNN scorer s(caption) is trained with :func:`bradley_terry_loss` towards P(first better):
the judge's probability where it gave one, else 1, 0 or 0.5 from ``preferred``. After each fit
the scores of every known caption update a running mean/std, and the ``ranking_quantile``
quantile of their normalised scores becomes the threshold. Reward: z = (s - mean) / std where z
exceeds the threshold and 0, else 0. The floor at 0 matters when the quantile falls below the
mean (helpful captions are rare, so the median sits in the unhelpful cluster): a caption is
never punished relative to the empty message, which scores 0.

ONI's code computes this normalisation but then hands the raw score to the agent; here the
agent gets the normalised one, so the reward's scale does not drift as the scorer retrains.
Scoring does not update the statistics: a published state scores deterministically.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from rewards.config import RewardModelConfig
from rewards.models.base import RewardModel, holdout_mask, preference_targets
from rewards.models.encoder import encode_bytes, make_net, to_batch
from rewards.models.training import MinibatchTrainer, evaluate
from rewards.running_stats import RunningMeanStd


def bradley_terry_loss(
    score_first: torch.Tensor, score_second: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Mean Bradley-Terry cross-entropy of the preferences.

    The model's P(first beats second) is sigmoid(s_first - s_second); ``target`` [N] is the
    judge's, in [0, 1] (:func:`rewards.models.base.preference_targets`: 1 first, 0 second,
    0.5 a tie, or a probability). For a strict preference this is -log sigmoid(s_winner -
    s_loser); for target t it is -(t log sigmoid(d) + (1 - t) log sigmoid(-d)), least at
    sigmoid(d) = t.
    """
    return F.binary_cross_entropy_with_logits(
        score_first - score_second, target.to(score_first.dtype)
    )


class RankingRewardModel(RewardModel):
    kind = "ranking"

    def __init__(
        self, cfg: RewardModelConfig, *, seed: int = 0, label_threshold: float = 0.5
    ) -> None:
        super().__init__(cfg, label_threshold=label_threshold)
        self.net = make_net(1, seed=seed)
        self.stats = RunningMeanStd()
        self.threshold = 0.0  # in normalised units
        self._trainer = MinibatchTrainer(self.net, seed=seed)

    def raw_scores(self, captions: list[str]) -> np.ndarray:
        """s(caption) of each caption, float32 [N]."""
        return evaluate(self.net, captions, lambda out: out[:, 0])

    def _fit(self, labels: pa.Table, preferences: pa.Table | None) -> dict[str, float]:
        start = time.perf_counter()
        if preferences is None or preferences.num_rows == 0:
            return {"pairs": 0.0}
        first = preferences.column("first").to_pylist()
        second = preferences.column("second").to_pylist()
        preferred = preferences.column("preferred").to_numpy().astype(np.int64)
        target = preference_targets(preferences)
        # A pair's side of the split must not depend on the order it was asked in.
        keys = ["\x00".join(sorted(p)) for p in zip(first, second, strict=True)]
        held = holdout_mask(keys, self.cfg.holdout_fraction)
        train = np.flatnonzero(~held)
        metrics: dict[str, float] = {"pairs": float(train.size), "holdout": float(held.sum())}
        if train.size:
            rows_a, rows_b = encode_bytes(first), encode_bytes(second)
            targets = torch.from_numpy(target)

            def loss_of(i: np.ndarray) -> torch.Tensor:
                b = train[i]  # the trainer draws positions among the training pairs
                return bradley_terry_loss(
                    self.net(*to_batch(rows_a[b]))[:, 0],
                    self.net(*to_batch(rows_b[b]))[:, 0],
                    targets[b],
                )

            metrics["loss"] = self._trainer.fit(self.cfg, train.size, loss_of)
        strict = held & (preferred >= 0)
        if strict.any():
            idx = np.flatnonzero(strict)
            diff = self.raw_scores([first[i] for i in idx]) - self.raw_scores(
                [second[i] for i in idx]
            )
            metrics["accuracy"] = float(((diff < 0).astype(np.int64) == preferred[idx]).mean())
        known = sorted({*labels.column("caption").to_pylist(), *first, *second} - {""})
        raw = self.raw_scores(known)
        self.stats = self.stats.update(raw)
        self.threshold = float(np.quantile(self.stats.normalise(raw), self.cfg.ranking_quantile))
        metrics["threshold"] = self.threshold
        metrics["fit_seconds"] = time.perf_counter() - start
        return metrics

    def _score(self, captions: list[str]) -> np.ndarray:
        z = self.stats.normalise(self.raw_scores(captions))
        return np.where(z > self.threshold, np.maximum(z, 0.0), 0.0).astype(np.float32)

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "net": self.net.state(),
            "stats": self.stats.state(),
            "threshold": self.threshold,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.net.load_state(state["net"])
        self.stats = RunningMeanStd(**state["stats"])
        self.threshold = float(state["threshold"])
