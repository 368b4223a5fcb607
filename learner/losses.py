"""APPO's three loss terms as free functions: tensors in, scalar tensor out.

Consumes the current policy's outputs (log-probabilities of the taken actions, logits, values)
and the V-trace targets (constants). Emits scalar losses to minimise; callers weight and sum
them. Means run over every element, so a [T, B] batch and its flattening give the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def policy_loss(
    *,
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio: float,
) -> torch.Tensor:
    """PPO's clipped surrogate with ratio pi_current / pi_behaviour (as APPO uses it).

    ``-mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))``: once the ratio leaves the
    trust region in the direction the advantage favours, that sample stops pulling.
    """
    advantages = advantages.detach()
    ratio = torch.exp(logp - behaviour_logp.detach())
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio) * advantages
    return -torch.minimum(unclipped, clipped).mean()


def normalized_advantages(
    advantages: torch.Tensor, *, mean: float, variance: float, std_floor: float = 0.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """``(A - mean) / (max(std, std_floor) + eps)`` with the batch's moments (over every
    rank's steps, which the caller reduces). A batch whose advantages are all equal gets
    zeros, not NaN; with a floor, a batch whose spread is below it keeps its small size
    instead of being scaled up to unit std (no reward yet: the critic's noise)."""
    return (advantages - mean) / (max(variance**0.5, std_floor) + eps)


def value_loss(*, values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0.5 * mean squared error to the (constant) targets."""
    return 0.5 * (values - targets.detach()).pow(2).mean()


def clipped_value_loss(
    *, values: torch.Tensor, targets: torch.Tensor, old_values: torch.Tensor, clip: float
) -> torch.Tensor:
    """PPO's clipped value loss: ``0.5 * mean(max((V - v)^2, (V_clip - v)^2))`` with
    ``V_clip = V_old + clip(V - V_old, -clip, clip)``. Once the value has moved more than
    ``clip`` from ``old_values`` towards its target, that step stops pulling it."""
    targets, old_values = targets.detach(), old_values.detach()
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - targets).pow(2), (clipped - targets).pow(2)).mean()


def entropy_loss(*, logits: torch.Tensor) -> torch.Tensor:
    """Negative mean entropy of the categorical policies (minimising it raises entropy)."""
    logp = F.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    return -entropy.mean()
