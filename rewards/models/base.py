"""The reward-model contract and what the three ONI models share.

Consumes: the label store's ``labels()`` (caption, label, prob) and ``preferences()`` (first,
second, preferred, prob_first) tables; the probability columns may be absent or null, where the
judge gave only a verdict (:func:`label_columns`, :func:`preference_targets`).
Emits: ``score(captions) -> float32[N]`` for the learner, ``state()`` (plain numpy and Python
values, for ``ray.put``) and ``fit`` metrics for the annotator's stats.

State is the one contract (``actors.checkpointable``): ``state()`` and ``load_state(state)``.
Each model extends both with what it adds (``super()`` first); the keys are those published
and checkpointed since the first runs, so their checkpoints still load.
``rewards.models.reward_model_from_state`` builds the model a state describes.

A model's ``version`` counts its fits; the annotator publishes a state only when it changes.
The empty message is never rewarded (as in ONI), whatever the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from rewards.config import RewardModelConfig


class RewardModel(ABC):
    """An intrinsic reward model of captions; see the module docstring."""

    kind: ClassVar[str]
    # False for a model that scores without any label (count): it is built on the learner at
    # start, and the run needs no annotator.
    needs_labels: ClassVar[bool] = True

    def __init__(self, cfg: RewardModelConfig, *, label_threshold: float = 0.5) -> None:
        """``label_threshold``: ``rewards.judge.threshold`` (default 0.5, as there), the P(helpful)
        above which a label with a probability counts as helpful."""
        self.cfg = cfg
        self.label_threshold = label_threshold
        self.version = 0

    def fit(self, *, labels: pa.Table, preferences: pa.Table | None = None) -> dict[str, float]:
        """(Re)train on every label and preference so far; return metrics; bump the version."""
        metrics = self._fit(labels, preferences)
        self.version += 1
        return metrics

    def score(self, captions: Sequence[str]) -> np.ndarray:
        """The intrinsic reward of each caption, float32 [N]; 0 for the empty message."""
        out = np.zeros(len(captions), np.float32)
        keep = [i for i, c in enumerate(captions) if c and not c.isspace()]
        if keep:
            out[keep] = self._score([captions[i] for i in keep])
        return out

    def state(self) -> dict[str, Any]:
        """Everything needed to score, as plain numpy / Python values. The optimiser and the
        minibatch RNG are the trainer's and stay out: the learner only scores."""
        return {
            "kind": self.kind,
            "version": self.version,
            "config": dataclasses.asdict(self.cfg),
            "label_threshold": self.label_threshold,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Score as the model that wrote ``state`` (a ``state()`` of this kind) did."""
        if state["kind"] != self.kind:
            raise ValueError(f"a {state['kind']!r} state loaded into a {self.kind!r} model")
        self.cfg = RewardModelConfig(**state["config"])
        # A state saved before label_threshold existed (a checkpoint) had hard labels only.
        self.label_threshold = float(state.get("label_threshold", 0.5))
        self.version = int(state["version"])

    @abstractmethod
    def _fit(self, labels: pa.Table, preferences: pa.Table | None) -> dict[str, float]: ...

    @abstractmethod
    def _score(self, captions: list[str]) -> np.ndarray: ...


def holdout_mask(keys: Sequence[str], fraction: float) -> np.ndarray:
    """True for the keys held out for evaluation: a stable function of each key's bytes.

    A caption keeps its side of the split across retrains and restarts (Python's ``hash`` is
    salted per process, so a content hash is used instead).
    """
    if fraction <= 0:
        return np.zeros(len(keys), bool)
    u = (
        np.array(
            [
                int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
                for k in keys
            ],
            dtype=np.float64,
        )
        / 2.0**64
    )
    return u < fraction


def label_columns(
    labels: pa.Table, *, threshold: float
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(captions, helpful bool [N], target float32 [N]) of a label table.

    Where a label has a probability (a ``prob`` column, not null), the target is that
    probability and the label is helpful where it exceeds ``threshold``; elsewhere both come
    from the hard ``label`` (target 1.0 or 0.0). The threshold is applied here, not only when
    the judge labelled, so a store reopened under a new ``rewards.judge.threshold`` follows it.
    """
    captions = labels.column("caption").to_pylist()
    hard = labels.column("label").to_numpy(zero_copy_only=False).astype(bool)
    prob = _nullable_floats(labels, "prob")
    soft = ~np.isnan(prob)
    target = np.where(soft, prob, hard).astype(np.float32)
    helpful = np.where(soft, prob > threshold, hard)
    return captions, helpful, target


def preference_targets(preferences: pa.Table) -> np.ndarray:
    """P(first is better than second) per preference, float32 [N]: ``prob_first`` where there
    is one, else 1.0, 0.0 or 0.5 for ``preferred`` 0 (first), 1 (second) or -1 (tie)."""
    preferred = preferences.column("preferred").to_numpy(zero_copy_only=False)
    hard = np.select([preferred == 0, preferred == 1], [1.0, 0.0], 0.5)
    prob = _nullable_floats(preferences, "prob_first")
    return np.where(np.isnan(prob), hard, prob).astype(np.float32)


def _nullable_floats(table: pa.Table, column: str) -> np.ndarray:
    """A float column with null (or an absent column: a table made before it existed) as NaN."""
    if column not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return table.column(column).cast(pa.float64()).fill_null(np.nan).to_numpy(
        zero_copy_only=False
    )
