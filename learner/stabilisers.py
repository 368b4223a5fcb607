"""What keeps an update's size independent of the reward's scale: pure functions and small
state holders the APPO learner (``learner.appo``) applies when their ``learner.*`` keys are on.

Consumes per-update tensors the learner already holds (log-probabilities, values, V-trace
targets, rewards) and, for the running statistics, every rank's share of the batch. Emits the
update's diagnostics (KL, explained variance), the KL guard's new learning rate or penalty
coefficient, and the reward normalisation's scale. Every decision that changes training is
taken on cross-rank statistics (``learner.collective.global_moments``), so all ranks decide
alike; every piece of state answers ``state()`` / ``load_state()`` through the learner's own
state (``actors.checkpointable``), so it survives a resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from learner.collective import global_moments
from rewards.running_stats import RunningMeanStd

# The KL guard's rule, as Sample Factory's kl_adaptive and RLlib's APPO apply it: act when the
# measured KL leaves [target / 2, 2 x target], by a factor of 1.5 (RLlib halves its coefficient
# instead when KL is low; the lr guard grows back by the same 1.5 it shrinks by).
KL_HIGH, KL_LOW = 2.0, 0.5
LR_FACTOR = 1.5
MIN_LR = 1e-6  # Sample Factory's lr_adaptive_min
PENALTY_UP, PENALTY_DOWN = 1.5, 0.5


def approx_kl(logp: torch.Tensor, behaviour_logp: torch.Tensor) -> torch.Tensor:
    """KL(behaviour || current), mean over the steps, from the taken actions alone.

    Schulman's estimator k3 = (rho - 1) - log rho with rho = pi / mu: unbiased under the
    behaviour policy's samples (which the batch's actions are), never negative, and low in
    variance. The fragments keep only the taken action's log-probability, not the whole
    distribution, so this is the KL the data allows. Differentiable (the KL penalty uses it).
    """
    log_rho = logp - behaviour_logp.detach()
    return (torch.exp(log_rho) - 1.0 - log_rho).mean()


@torch.no_grad()
def explained_variance(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - Var(targets - values) / Var(targets): 1 = the critic predicts its targets, 0 = no
    better than their mean, negative = worse; NaN where the targets do not vary. A 0-d tensor,
    never read on the host here: the update fetches all its scalars in one transfer."""
    var_targets = targets.float().var(unbiased=False)
    residual = (targets - values).float().var(unbiased=False)
    return torch.where(var_targets > 0, 1.0 - residual / var_targets,
                       torch.full_like(var_targets, float("nan")))


def adapt_lr(lr: float, *, kl: float, target: float, max_lr: float) -> float:
    """Sample Factory's kl_adaptive: the learning rate for the next update."""
    if kl > KL_HIGH * target:
        return max(lr / LR_FACTOR, MIN_LR)
    if kl < KL_LOW * target:
        return min(lr * LR_FACTOR, max_lr)
    return lr


def adapt_kl_coef(coef: float, *, kl: float, target: float) -> float:
    """RLlib APPO's adaptive KL loss coefficient for the next update."""
    if kl > KL_HIGH * target:
        return coef * PENALTY_UP
    if kl < KL_LOW * target:
        return coef * PENALTY_DOWN
    return coef


class RewardNormaliser:
    """Rewards divided by the running std of the discounted return (Dungeons & Data's APPO).

    Per env stream (an actor's env slot), the discounted return ``R_t = r_t + gamma R_{t-1}``,
    restarted after every episode end, is carried from one fragment to the next; the running
    variance of every ``R_t`` of every rank's batch is merged into one ``RunningMeanStd`` (the
    same on all ranks), and the batch's rewards are divided by ``max(std, floor)``.

    Why V-trace needs no change: the divisor is one positive constant per update, the same
    for every step, every env and every rank, so it rescales the reward of the MDP the critic
    learns, not its dynamics. The critic learns values in those units; the bootstrap value and
    the truncation values (``learner.vtrace``: the value of the state a time limit cut off,
    computed by the acting policy's critic) come from the same critic and are in the same
    units, so V-trace's targets ``v_s`` are exactly the unscaled targets divided by the
    constant (``tests/test_stabilisers.py`` checks it on a truncated 3-step example), and the
    policy gradient only changes by that positive factor. Sample Factory 2's return
    normalisation instead standardises the targets (subtracting a mean), which is what
    V-trace's bootstrapping would have to undo. The divisor drifts slowly (a running std over
    the whole run), so values a few updates old are off by that drift only.

    The carried returns are approximate where the batches do not follow a stream in order:
    with several ranks a stream's fragments may go to different ranks, a dropped fragment
    leaves a gap, and two consecutive fragments of one stream in one batch both start from
    the same carry. That only perturbs the estimate of the scale, never its sameness across
    ranks (the statistics are merged over every rank; each rank keeps its own carries, and a
    checkpoint keeps rank 0's).
    """

    def __init__(self, *, gamma: float, floor: float, world_size: int = 1) -> None:
        self.gamma, self.floor, self.world_size = gamma, floor, world_size
        self.stats = RunningMeanStd()
        self.returns: dict[int, float] = {}  # stream key -> R after its last step seen

    def __call__(self, rewards: torch.Tensor, *, done: torch.Tensor,
                 streams: Sequence[int]) -> tuple[torch.Tensor, float]:
        """``rewards``, ``done`` [T, B]; ``streams`` [B] keys. The scaled rewards and the
        divisor used."""
        r = rewards.detach().double().cpu().numpy()
        not_done = 1.0 - done.cpu().numpy().astype(np.float64)
        carry = np.array([self.returns.get(k, 0.0) for k in streams], np.float64)
        discounted = np.empty_like(r)
        for t in range(r.shape[0]):
            carry = r[t] + self.gamma * carry
            discounted[t] = carry
            carry = carry * not_done[t]  # the next step starts a new episode's return
        self.returns.update(zip(streams, carry.tolist(), strict=True))
        self.stats = self.stats.merge(*global_moments(discounted, self.world_size))
        scale = max(self.stats.std, self.floor)
        return rewards / scale, scale

    def state(self) -> dict[str, Any]:
        return {"stats": self.stats.state(), "returns": dict(self.returns)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.stats = RunningMeanStd(**state["stats"])
        self.returns = {int(k): float(v) for k, v in state["returns"].items()}
