"""Intrinsic rewards for a batch, on the learner: the newest reward model plus RND.

Consumes: a :class:`learner.batch.Batch`, the reward model's published state (a dict from
``rewards.models.RewardModel.state()``, with its version) and the rewards config. Emits the
raw terms ``rewards.combine.combine_rewards`` weighs and masks: ``judged`` [T, B] (the
reward model's score of the message each step led to, as ONI relabels every minibatch with
the newest model) and ``novelty`` [T, B] (RND's normalised bonus of the observation each step
led to), and a few numbers for metrics.

With several learner ranks, RND is one network trained on the union of the ranks' batches:
its gradients are averaged and its running statistics merged across ranks, so every rank
holds the same predictor, optimiser and statistics, and any rank's state is the state.

The model is rebuilt only when its version changes; scoring touches each distinct message of
the batch once (``rewards.scoring.score_messages``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from learner.batch import Batch
from learner.collective import average_gradients, global_moments
from rewards.combine import judged_term
from rewards.config import RewardsConfig
from rewards.models import RewardModel, make_reward_model, reward_model_from_state
from rewards.rnd import RND, fit_step, prediction_error
from rewards.running_stats import RunningMeanStd
from rewards.scoring import credit_by_message, score_messages

# Keys of the metrics dict this module adds to a learner update.
REWARD_MODEL_VERSION = "reward_model_version"  # the version that scored this batch; -1 = none
INTRINSIC_MEAN = "intrinsic_mean"
INTRINSIC_ZERO_FRACTION = "intrinsic_zero_fraction"
INTRINSIC_NONZERO_STEPS = "intrinsic_nonzero_steps"  # cumulative over the run (this rank)
RND_LOSS = "rnd_loss"
# Not a float: {message: [judged reward credited, steps]} of this batch's top messages
# (rewards.combine.judged_term, boundary rule applied); the driver sums it over the run.
REWARDED_MESSAGES = "rewarded_messages"
_REWARDED_PER_BATCH = 32  # the batch's messages with the most credit; the rest are noise


@dataclass
class Intrinsic:
    judged: torch.Tensor | None  # r_int [T, B], or None when no model is published yet
    novelty: torch.Tensor | None  # RND's normalised bonus [T, B] (unweighted), or None: off
    metrics: dict[str, Any]  # floats (None: no model scored yet), and REWARDED_MESSAGES


class IntrinsicScorer:
    """Keeps the newest reward model and the RND networks of one learner rank."""

    def __init__(
        self, cfg: RewardsConfig, *, crop_size: int, seed: int = 0, world_size: int = 1
    ) -> None:
        self.cfg, self.world_size = cfg, world_size
        self.version = -1
        self.model: RewardModel | None = None
        self.nonzero_steps = 0
        self.rnd: RND | None = None
        label_free = make_reward_model(cfg.model)
        if label_free is not None and not label_free.needs_labels:
            # Nothing to learn and nothing to wait for: score from the first update on.
            self.set_model(0, label_free.state())
        if cfg.rnd.coef > 0:
            # The same seed on every rank: identical at the start, kept so by the all-reduce.
            self.rnd = RND(crop_size=crop_size, embedding_dim=cfg.rnd.embedding_dim, seed=seed)
            self.rnd_optimizer = torch.optim.Adam(self.rnd.predictor.parameters(), lr=cfg.rnd.lr)
            self.rnd_stats = RunningMeanStd()

    def set_model(self, version: int, state: dict[str, Any]) -> None:
        if version != self.version:
            self.model = reward_model_from_state(state)
            self.version = version
            self._model_state = state  # kept for state(): a resumed learner scores alike

    def state(self) -> dict[str, Any]:
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
            state["rnd_stats"] = self.rnd_stats.state()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.version, self.model = -1, None
        if state["model"] is not None:
            self.set_model(int(state["version"]), state["model"])
        self.nonzero_steps = int(state.get("nonzero_steps", 0))
        if self.rnd is not None and "rnd" in state:  # RND may be turned on at resume
            self.rnd.load_state_dict(state["rnd"])
            self.rnd_optimizer.load_state_dict(state["rnd_optimizer"])
            self.rnd_stats = RunningMeanStd(**state["rnd_stats"])

    def __call__(self, batch: Batch) -> Intrinsic:
        # The same keys with or without a model (None: nothing scored yet), so a run's
        # metrics columns do not depend on whether a model arrived before a report.
        metrics: dict[str, Any] = {REWARD_MODEL_VERSION: float(self.version),
                                   INTRINSIC_MEAN: None, INTRINSIC_ZERO_FRACTION: None}
        judged = None
        if self.model is not None:
            scores = score_messages(self.model, batch.next_message)
            judged = torch.from_numpy(scores.reshape(batch.length, batch.num_envs))
            metrics[INTRINSIC_MEAN] = float(scores.mean())
            metrics[INTRINSIC_ZERO_FRACTION] = float((scores == 0).mean())
            self.nonzero_steps += int(np.count_nonzero(scores))
            metrics[REWARDED_MESSAGES] = self._rewarded(batch, judged)
        metrics[INTRINSIC_NONZERO_STEPS] = float(self.nonzero_steps)
        novelty = None
        if self.rnd is not None:
            novelty, metrics[RND_LOSS] = self._rnd(batch)
        return Intrinsic(judged=judged, novelty=novelty, metrics=metrics)

    def _rewarded(self, batch: Batch, judged: torch.Tensor) -> dict[str, list[float]]:
        credit = judged_term(judged=judged, next_msg_count=batch.next_msg_count,
                             intrinsic_coef=self.cfg.intrinsic_coef,
                             count_exponent=self.cfg.count_exponent, done=batch.done)
        credited = credit_by_message(batch.next_message, credit.reshape(-1).numpy())
        top = sorted(credited.items(), key=lambda kv: -abs(kv[1][0]))[:_REWARDED_PER_BATCH]
        return {message: [total, float(steps)] for message, (total, steps) in top}

    def _rnd(self, batch: Batch) -> tuple[torch.Tensor, float]:
        """The bonus under the predictor before this batch's step, then that step."""
        assert self.rnd is not None
        glyphs = batch.next_glyph_crop.flatten(0, 1)
        blstats = batch.next_blstats.flatten(0, 1)
        error = prediction_error(self.rnd, glyphs, blstats)
        self.rnd_stats = self.rnd_stats.merge(*global_moments(error, self.world_size))
        bonus = self.rnd_stats.scale(error).reshape(batch.length, batch.num_envs)
        # Equal shards on every rank, so the mean of the ranks' gradients is the gradient
        # of the whole batch's loss.
        reduce = functools.partial(average_gradients, world_size=self.world_size)
        loss = fit_step(self.rnd, self.rnd_optimizer, glyphs, blstats, reduce_gradients=reduce)
        return torch.from_numpy(bonus), loss
