"""The APPO learner: V-trace targets, PPO's clipped surrogate, Adam. No Ray in here.

Consumes a :class:`learner.batch.Batch` of fragments acted by possibly older policy versions,
and optionally the batch's raw intrinsic terms (``learner.intrinsic``), which
``rewards.combine.combine_rewards`` weighs and masks with the extrinsic reward. Emits updated
weights (``get_weights``: CPU numpy arrays, for publishing), a metrics dict per update and
its state (``state()`` / ``load_state()``). With ``world_size > 1`` it expects
``torch.distributed`` to be initialised by its caller (``learner.learner_group``) and averages
gradients across ranks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from actors.model import PolicyNet
from actors.precision import compute_in, resolve
from learner.batch import Batch
from learner.collective import average_gradients, global_moments
from learner.config import LearnerSections
from learner.losses import (
    clipped_value_loss,
    entropy_loss,
    normalized_advantages,
    policy_loss,
    value_loss,
)
from learner.stabilisers import (
    RewardNormaliser,
    adapt_kl_coef,
    adapt_lr,
    approx_kl,
    explained_variance,
)
from learner.vtrace import vtrace
from rewards.combine import combine_rewards

# Keys of the dict `Learner.update` returns (values of the last epoch; counters cumulative).
POLICY_LOSS = "policy_loss"
VALUE_LOSS = "value_loss"
ENTROPY_LOSS = "entropy_loss"
TOTAL_LOSS = "total_loss"
GRAD_NORM = "grad_norm"  # global norm before clipping, after the cross-rank average
MEAN_RATIO = "mean_ratio"  # pi_current / pi_behaviour over the batch's steps
CLIP_FRACTION = "clip_fraction"  # steps whose ratio lies outside [1 - eps, 1 + eps]
MEAN_VALUE = "mean_value"
MEAN_VTRACE_TARGET = "mean_vtrace_target"
MEAN_REWARD = "mean_reward"  # the combined reward the learner trains on
ENV_STEPS = "env_steps"  # steps in this update (this rank)
ENV_STEPS_TRAINED = "env_steps_trained"  # cumulative, this rank
POLICY_VERSION = "policy_version"
UPDATE_SECONDS = "update_seconds"
# An update's size (docs/results.md#stabilisers). This rank's batch, from tensors the update
# already holds: no extra forward pass.
KL = "kl"  # KL(behaviour || current) over the batch, k3 estimate (learner.stabilisers)
GRAD_NORM_CLIPPED = "grad_norm_clipped"  # the global norm the optimiser stepped with
EXPLAINED_VARIANCE = "explained_variance"  # of the V-trace targets by the values
ADVANTAGE_MEAN = "advantage_mean"  # V-trace's policy-gradient advantages, before whitening
ADVANTAGE_STD = "advantage_std"
LR = "lr"  # the learning rate this update stepped with
KL_COEF = "kl_coef"  # learner.kl_guard=penalty: the coefficient this update used
REWARD_NORM_SCALE = "reward_norm_scale"  # learner.normalize_rewards: the reward's divisor
# The keys Prometheus shows as oniray_learner_update_stat{stat=...} (learner.learner_group).
UPDATE_STATS = (KL, CLIP_FRACTION, GRAD_NORM_CLIPPED, MEAN_VALUE, EXPLAINED_VARIANCE,
                ADVANTAGE_MEAN, ADVANTAGE_STD, LR, KL_COEF, REWARD_NORM_SCALE)
_STREAM_STRIDE = 1 << 20  # stream key = actor_id * stride + env slot (E is far below it)


class Learner:
    """Owns the policy network, its optimiser, the policy version and the counters.

    ``policy_version`` counts updates (each publishes one set of weights), not optimiser
    steps: with ``epochs > 1`` one version covers several Adam steps. The driver's lag
    bookkeeping assumes one version per update.
    """

    def __init__(
        self, cfg: LearnerSections, *, num_actions: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = torch.device(
            "cuda" if cfg.learner.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        )
        # Seeded without touching the process's global RNG: every rank builds the same net.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.run.seed)
            model = PolicyNet(cfg.model, crop_size=cfg.env.crop_size, num_actions=num_actions)
        self.model = model.to(self.device)
        # The forward pass's arithmetic; weights, Adam, V-trace and the losses stay float32.
        self.compute_dtype = resolve(cfg.learner.precision, self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.learner.lr, eps=cfg.learner.adam_eps
        )
        self.policy_version = 0
        self.env_steps_trained = 0
        # The KL guard's state (learner.stabilisers); unchanged while kl_target is null.
        lc = cfg.learner
        self.lr, self.kl_coef = lc.lr, lc.kl_coef
        self.reward_normaliser = (
            RewardNormaliser(gamma=lc.gamma, floor=lc.reward_norm_std_floor,
                             world_size=world_size) if lc.normalize_rewards else None
        )

    # ---- training ----------------------------------------------------------------------
    def update(
        self,
        batch: Batch,
        *,
        judged: torch.Tensor | None = None,
        novelty: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One APPO update on the batch.

        ``judged`` and ``novelty`` ([T, B], B = the batch's envs) are the raw intrinsic terms
        of the observation each step led to (``learner.intrinsic.Intrinsic``).
        """
        started = time.perf_counter()
        batch = batch.to(self.device)
        rewards = self._rewards(batch, judged=judged, novelty=novelty)
        lc = self.cfg.learner
        scale = None
        if lc.reward_scale != 1.0:
            rewards = rewards * lc.reward_scale
        if self.reward_normaliser is not None:
            rewards, scale = self.reward_normaliser(rewards, done=batch.done,
                                                    streams=_streams(batch))
        lr, kl_coef = self.lr, self.kl_coef
        for _ in range(lc.epochs):
            metrics = self._step(batch, rewards)
        if lc.kl_target is not None:
            self._guard(metrics[KL])
        metrics[LR] = lr
        if lc.kl_target is not None and lc.kl_guard == "penalty":
            metrics[KL_COEF] = kl_coef
        if scale is not None:
            metrics[REWARD_NORM_SCALE] = scale
        self.policy_version += 1
        steps = batch.length * batch.num_envs
        self.env_steps_trained += steps
        metrics.update({
            MEAN_REWARD: rewards.mean().item(),
            ENV_STEPS: float(steps),
            ENV_STEPS_TRAINED: float(self.env_steps_trained),
            POLICY_VERSION: float(self.policy_version),
            UPDATE_SECONDS: time.perf_counter() - started,
        })
        return metrics

    def _rewards(
        self, batch: Batch, *, judged: torch.Tensor | None, novelty: torch.Tensor | None
    ) -> torch.Tensor:
        rc = self.cfg.rewards
        return combine_rewards(
            extrinsic=batch.reward,
            done=batch.done,
            judged=None if judged is None else judged.to(self.device),
            next_msg_count=batch.next_msg_count,
            novelty=None if novelty is None else novelty.to(self.device),
            extrinsic_coef=rc.extrinsic_coef,
            extrinsic_clip=rc.extrinsic_clip,
            intrinsic_coef=rc.intrinsic_coef,
            count_exponent=rc.count_exponent,
            novelty_coef=rc.rnd.coef,
        )

    def _guard(self, kl: float) -> None:
        """The KL guard: the next update's learning rate or penalty coefficient, from the KL
        averaged over every rank (equal shards: the mean of the ranks' means), so every rank
        takes the same decision."""
        lc = self.cfg.learner
        assert lc.kl_target is not None
        kl_all, _, _ = global_moments(np.array([kl]), self.world_size)
        if lc.kl_guard == "lr":
            self.lr = adapt_lr(self.lr, kl=kl_all, target=lc.kl_target, max_lr=lc.lr)
            self._set_lr(self.lr)
        else:
            self.kl_coef = adapt_kl_coef(self.kl_coef, kl=kl_all, target=lc.kl_target)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _step(self, batch: Batch, rewards: torch.Tensor) -> dict[str, float]:
        lc = self.cfg.learner
        T = batch.length
        rows = batch.rows
        # The model unrolls over all T + 1 rows; the last one's value is the bootstrap.
        with compute_in(self.compute_dtype, self.device):
            out = self.model(rows.obs(), rows.first, rows.initial_core_state)
        all_values = out.values.float()
        logits, values = out.logits[:T].float(), all_values[:T]
        logp = F.log_softmax(logits, dim=-1).gather(-1, batch.action.unsqueeze(-1)).squeeze(-1)
        behaviour_logp = batch.behaviour_logp
        # Only a termination ends the future; at a time limit V-trace bootstraps from the
        # value the actor computed for the observation the limit cut off.
        discounts = lc.gamma * (~batch.terminated).float()
        # Sample Factory's APPO: V-trace's rho-clipped advantages under the PPO ratio.
        targets = vtrace(
            behaviour_logp=behaviour_logp,
            target_logp=logp.detach(),
            rewards=rewards,
            discounts=discounts,
            values=values.detach(),
            bootstrap_value=all_values[T].detach(),
            truncated=batch.truncated,
            truncation_values=batch.truncation_value,
            rho_clip=lc.vtrace_rho_clip,
            c_clip=lc.vtrace_c_clip,
            pg_rho_clip=lc.vtrace_rho_clip,
        )
        raw_advantages = advantages = targets.pg_advantages
        if lc.normalize_advantages:
            # Over the global batch, so every rank scales its shard alike.
            mean, variance, _ = global_moments(advantages.cpu().numpy(), self.world_size)
            advantages = normalized_advantages(advantages, mean=mean, variance=variance,
                                               std_floor=lc.advantage_std_floor)
        pg = policy_loss(
            logp=logp, behaviour_logp=behaviour_logp, advantages=advantages,
            clip_ratio=lc.clip_ratio,
        )
        if lc.value_clip is None:
            vf = value_loss(values=values, targets=targets.vs)
        else:
            vf = clipped_value_loss(values=values, targets=targets.vs,
                                    old_values=batch.behaviour_value, clip=lc.value_clip)
        ent = entropy_loss(logits=logits)
        total = pg + lc.value_coef * vf + lc.entropy_coef * ent
        if lc.kl_target is not None and lc.kl_guard == "penalty":
            total = total + self.kl_coef * approx_kl(logp, behaviour_logp)

        self.optimizer.zero_grad()
        total.backward()
        average_gradients(self.model.parameters(), self.world_size)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), lc.max_grad_norm)
        self.optimizer.step()

        with torch.no_grad():
            log_rho = logp - behaviour_logp
            ratio = torch.exp(log_rho)
            clipped = ((ratio - 1.0).abs() > lc.clip_ratio).float().mean()
            # One host transfer for every scalar of the update, not one per number.
            scalars = torch.stack([
                pg.detach(), vf.detach(), ent.detach(), total.detach(), grad_norm,
                ratio.mean(), clipped, values.detach().mean(), targets.vs.mean(),
                approx_kl(logp, behaviour_logp), raw_advantages.mean(),
                raw_advantages.std(unbiased=False), explained_variance(values, targets.vs),
            ]).tolist()
        names = (POLICY_LOSS, VALUE_LOSS, ENTROPY_LOSS, TOTAL_LOSS, GRAD_NORM, MEAN_RATIO,
                 CLIP_FRACTION, MEAN_VALUE, MEAN_VTRACE_TARGET, KL, ADVANTAGE_MEAN,
                 ADVANTAGE_STD, EXPLAINED_VARIANCE)
        metrics = dict(zip(names, scalars, strict=True))
        norm = metrics[GRAD_NORM]
        # What clip_grad_norm_ scaled the gradients to: norm * min(1, max / (norm + 1e-6)).
        metrics[GRAD_NORM_CLIPPED] = norm * min(1.0, lc.max_grad_norm / (norm + 1e-6))
        return metrics

    # ---- weights and checkpoints ---------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """A CPU copy of the parameters (safe to publish while training continues)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        state = {k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()}
        self.model.load_state_dict(state)

    def state(self) -> dict[str, Any]:
        """Everything a resumed learner needs to continue bit for bit (the one contract)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "policy_version": self.policy_version,
            "env_steps_trained": self.env_steps_trained,
            "torch_rng_state": torch.get_rng_state(),
            # The stabilisers' running state: the KL guard's lr and coefficient, the reward
            # normalisation's statistics (the same on every rank).
            "stabilisers": {
                "lr": self.lr, "kl_coef": self.kl_coef,
                "reward_normaliser": (None if self.reward_normaliser is None
                                      else self.reward_normaliser.state()),
            },
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.policy_version = int(state["policy_version"])
        self.env_steps_trained = int(state["env_steps_trained"])
        torch.set_rng_state(state["torch_rng_state"])
        stabilisers = state.get("stabilisers")  # absent from checkpoints before issue 28
        if stabilisers is None:
            self.lr = self.optimizer.param_groups[0]["lr"]
            return
        self.lr, self.kl_coef = float(stabilisers["lr"]), float(stabilisers["kl_coef"])
        self._set_lr(self.lr)
        saved = stabilisers.get("reward_normaliser")
        if self.reward_normaliser is not None and saved is not None:
            self.reward_normaliser.load_state(saved)


def _streams(batch: Batch) -> list[int]:
    """A key per env column of the batch: its actor and env slot (a stream of fragments)."""
    return [meta.actor_id * _STREAM_STRIDE + e
            for meta in batch.rows.metas for e in range(meta.num_envs)]
