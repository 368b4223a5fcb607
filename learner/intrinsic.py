"""Intrinsic rewards for a batch, on the learner: the newest reward model plus RND.

Consumes: fragments (``actors.fragment``), the reward model's published state (a dict from
``rewards.models.RewardModel.state()``, with its version) and the rewards config. Emits:
``r_int`` [T, B] for ``combine_rewards`` (the score of the message each step led to: rows
1..T of the fragment, as ONI relabels every minibatch with the newest model), the RND bonus
[T, B] (already weighted by ``rnd.coef``) and a few numbers for metrics.

The model is rebuilt only when its version changes; scoring touches each distinct message of
the batch once (``rewards.scoring.score_messages``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from actors.fragment import FragmentMeta
from rewards.config import RewardsConfig
from rewards.models import RewardModel, make_reward_model, reward_model_from_state
from rewards.rnd import RND, fit_step, rnd_bonus
from rewards.running_stats import RunningMeanStd
from rewards.scoring import score_messages

# Keys of the metrics dict this module adds to a learner update.
REWARD_MODEL_VERSION = "reward_model_version"  # the version that scored this batch; -1 = none
INTRINSIC_MEAN = "intrinsic_mean"
INTRINSIC_ZERO_FRACTION = "intrinsic_zero_fraction"
INTRINSIC_NONZERO_STEPS = "intrinsic_nonzero_steps"  # cumulative over the run (this rank)
RND_LOSS = "rnd_loss"


@dataclass
class Intrinsic:
    reward_model: torch.Tensor | None  # r_int [T, B] or None when no model is published yet
    bonus: torch.Tensor | None  # weighted RND bonus [T, B], or None when RND is off
    metrics: dict[str, float]


class IntrinsicScorer:
    """Keeps the newest reward model and the RND networks of one learner."""

    def __init__(self, cfg: RewardsConfig, *, crop_size: int, seed: int = 0) -> None:
        self.cfg = cfg
        self.version = -1
        self.model: RewardModel | None = None
        self.nonzero_steps = 0
        self.rnd: RND | None = None
        label_free = make_reward_model(cfg.model)
        if label_free is not None and not label_free.needs_labels:
            # Nothing to learn and nothing to wait for: score from the first update on.
            self.set_model(0, label_free.state())
        if cfg.rnd.coef > 0:
            self.rnd = RND(crop_size=crop_size, embedding_dim=cfg.rnd.embedding_dim, seed=seed)
            self.rnd_optimizer = torch.optim.Adam(self.rnd.predictor.parameters(), lr=cfg.rnd.lr)
            self.rnd_stats = RunningMeanStd()

    def set_model(self, version: int, state: dict[str, Any]) -> None:
        if version != self.version:
            self.model = reward_model_from_state(state)
            self.version = version
            self._model_state = state  # kept for state_dict: a resumed learner scores alike

    def state_dict(self) -> dict[str, Any]:
        """The reward model in use (version and published state) and RND's networks,
        optimiser and running statistics: what a resumed learner needs to score alike."""
        state: dict[str, Any] = {
            "version": self.version,
            "model": getattr(self, "_model_state", None) if self.model is not None else None,
            "nonzero_steps": self.nonzero_steps,
        }
        if self.rnd is not None:
            state["rnd"] = self.rnd.state_dict()
            state["rnd_optimizer"] = self.rnd_optimizer.state_dict()
            state["rnd_stats"] = self.rnd_stats.to_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.version, self.model = -1, None
        if state["model"] is not None:
            self.set_model(int(state["version"]), state["model"])
        self.nonzero_steps = int(state.get("nonzero_steps", 0))
        if self.rnd is not None and "rnd" in state:  # RND may be turned on at resume
            self.rnd.load_state_dict(state["rnd"])
            self.rnd_optimizer.load_state_dict(state["rnd_optimizer"])
            self.rnd_stats = RunningMeanStd.from_dict(state["rnd_stats"])

    def __call__(self, fragments: list[pa.RecordBatch]) -> Intrinsic:
        metrics: dict[str, float] = {REWARD_MODEL_VERSION: float(self.version)}
        r_int = None
        if self.model is not None:
            columns = []
            for fragment in fragments:
                meta = FragmentMeta.decode(fragment.schema)
                t, e = meta.length, meta.num_envs
                # Rows 1..T: the observation (and message) that each step's action led to.
                messages = fragment.column("message").slice(e, t * e)
                columns.append(score_messages(self.model, messages).reshape(t, e))
            scores = np.concatenate(columns, axis=1)  # the env order of stack_fragments
            r_int = torch.from_numpy(scores)
            metrics[INTRINSIC_MEAN] = float(scores.mean())
            metrics[INTRINSIC_ZERO_FRACTION] = float((scores == 0).mean())
            self.nonzero_steps += int(np.count_nonzero(scores))
        metrics[INTRINSIC_NONZERO_STEPS] = float(self.nonzero_steps)
        bonus = None
        if self.rnd is not None:
            bonus, metrics[RND_LOSS] = self._rnd(fragments)
        return Intrinsic(reward_model=r_int, bonus=bonus, metrics=metrics)

    def _rnd(self, fragments: list[pa.RecordBatch]) -> tuple[torch.Tensor, float]:
        assert self.rnd is not None
        columns, loss = [], 0.0
        for fragment in fragments:
            meta = FragmentMeta.decode(fragment.schema)
            t, e = meta.length, meta.num_envs
            rows = fragment.slice(e, t * e)  # the observations the steps led to
            glyphs = torch.from_numpy(np.array(rows.column("glyph_crop").to_numpy_ndarray()))
            blstats = torch.from_numpy(np.array(rows.column("blstats").to_numpy_ndarray()))
            bonus, self.rnd_stats = rnd_bonus(self.rnd, self.rnd_stats, glyphs, blstats)
            columns.append(bonus.reshape(t, e))
            loss = fit_step(self.rnd, self.rnd_optimizer, glyphs, blstats)
        return torch.from_numpy(np.concatenate(columns, axis=1)) * self.cfg.rnd.coef, loss
