"""ONI's intrinsic reward models behind one interface (:class:`RewardModel`).

``make_reward_model(cfg, label_threshold=...)`` builds the model ``cfg.kind`` names (None for
``"none"``); ``label_threshold`` is ``rewards.judge.threshold``, which decides where a label
with a probability counts as helpful;
``reward_model_from_state(state)`` rebuilds a published model on the learner.
"""

from __future__ import annotations

from typing import Any

from rewards.config import RewardModelConfig
from rewards.models.base import RewardModel
from rewards.models.classification import ClassificationRewardModel, soft_label_loss
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
    "soft_label_loss",
]


def make_reward_model(
    cfg: RewardModelConfig, *, label_threshold: float = 0.5
) -> RewardModel | None:
    """A fresh, untrained model of kind ``cfg.kind``; None when no model is configured.
    ``label_threshold``: ``rewards.judge.threshold`` (the default is that key's default)."""
    if cfg.kind == "none":
        return None
    if cfg.kind not in _KINDS:
        raise ValueError(f"unknown reward model kind {cfg.kind!r}; one of {sorted(_KINDS)}")
    return _KINDS[cfg.kind](cfg, label_threshold=label_threshold)


def needs_labels(kind: str) -> bool:
    """Whether reward models of ``kind`` learn from the judge's labels (all but count)."""
    return kind != "none" and _KINDS[kind].needs_labels


def reward_model_from_state(state: dict[str, Any]) -> RewardModel:
    """The model a ``RewardModel.state()`` describes, ready to score: the state names its
    kind, so this picks the class (``load_state`` then fills an instance of it)."""
    model = _KINDS[state["kind"]](RewardModelConfig(**state["config"]))
    model.load_state(state)
    return model
