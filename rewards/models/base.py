"""The reward-model contract and what the three ONI models share.

Consumes: the label store's ``labels()`` (caption, label) and ``preferences()`` (first, second,
preferred) tables. Emits: ``score(captions) -> float32[N]`` for the learner, ``state()`` (plain
numpy and Python values, for ``ray.put``) and ``fit`` metrics for the annotator's stats.

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

    def __init__(self, cfg: RewardModelConfig) -> None:
        self.cfg = cfg
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
        """Everything needed to score, as plain numpy / Python values."""
        return {
            "kind": self.kind,
            "version": self.version,
            "config": dataclasses.asdict(self.cfg),
            **self._state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RewardModel:
        model = cls(RewardModelConfig(**state["config"]))
        model._load_state(state)
        model.version = int(state["version"])
        return model

    @abstractmethod
    def _fit(self, labels: pa.Table, preferences: pa.Table | None) -> dict[str, float]: ...

    @abstractmethod
    def _score(self, captions: list[str]) -> np.ndarray: ...

    @abstractmethod
    def _state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_state(self, state: dict[str, Any]) -> None: ...


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


def label_columns(labels: pa.Table) -> tuple[list[str], np.ndarray]:
    """The (captions, bool labels) of a label table."""
    return labels.column("caption").to_pylist(), labels.column("label").to_numpy(
        zero_copy_only=False
    ).astype(bool)
