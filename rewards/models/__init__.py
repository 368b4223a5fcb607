"""ONI's intrinsic reward models behind one interface (:class:`RewardModel`).

``make_reward_model(cfg)`` builds the model ``cfg.kind`` names (None for ``"none"``);
``reward_model_from_state(state)`` rebuilds a published model on the learner.
"""

from __future__ import annotations

from typing import Any

from rewards.config import RewardModelConfig
from rewards.models.base import RewardModel
from rewards.models.classification import ClassificationRewardModel
from rewards.models.count import CountRewardModel
from rewards.models.ranking import RankingRewardModel, bradley_terry_loss
from rewards.models.retrieval import RetrievalRewardModel

_KINDS: dict[str, type[RewardModel]] = {
    m.kind: m for m in (RetrievalRewardModel, ClassificationRewardModel, RankingRewardModel,
                        CountRewardModel)
}

__all__ = [
    "ClassificationRewardModel",
    "CountRewardModel",
    "RankingRewardModel",
    "RetrievalRewardModel",
    "RewardModel",
    "bradley_terry_loss",
    "make_reward_model",
    "needs_labels",
    "reward_model_from_state",
]


def make_reward_model(cfg: RewardModelConfig) -> RewardModel | None:
    """A fresh, untrained model of kind ``cfg.kind``; None when no model is configured."""
    if cfg.kind == "none":
        return None
    try:
        return _KINDS[cfg.kind](cfg)
    except KeyError:
        raise ValueError(
            f"unknown reward model kind {cfg.kind!r}; one of {sorted(_KINDS)}"
        ) from None


def needs_labels(kind: str) -> bool:
    """Whether reward models of ``kind`` learn from the judge's labels (all but count)."""
    return kind != "none" and _KINDS[kind].needs_labels


def reward_model_from_state(state: dict[str, Any]) -> RewardModel:
    """The model a ``RewardModel.state()`` describes, ready to score."""
    return _KINDS[state["kind"]].from_state(state)
