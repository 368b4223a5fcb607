"""V-trace off-policy targets (Espeholt et al. 2018, IMPALA, eq. 1 and section 4.2).

Consumes time-major tensors ``[T, B]`` of one batch of trajectories (log-probabilities of the
taken actions under the behaviour and target policies, rewards, per-step discounts, values)
and the bootstrap value ``[B]`` of the state after the last step. Emits the value targets
``vs`` and the policy-gradient advantages, both ``[T, B]``. A pure function: no state, no
gradient (targets are constants to the losses).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class VTraceReturns(NamedTuple):
    vs: torch.Tensor  # [T, B] V-trace value targets v_s
    pg_advantages: torch.Tensor  # [T, B] rho_s (r_s + gamma_s v_{s+1} - V(x_s))


@torch.no_grad()
def vtrace(
    *,
    behaviour_logp: torch.Tensor,
    target_logp: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    rho_clip: float = 1.0,
    c_clip: float = 1.0,
    pg_rho_clip: float = 1.0,
) -> VTraceReturns:
    """V-trace targets by the backward recursion
    ``v_s - V(x_s) = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))``.

    ``discounts[t]`` is gamma times 0 where the episode ended at step t, so nothing
    propagates across an episode boundary.
    """
    if values.shape != rewards.shape or bootstrap_value.shape != values.shape[1:]:
        raise ValueError(
            f"vtrace: values {tuple(values.shape)}, rewards {tuple(rewards.shape)} and "
            f"bootstrap {tuple(bootstrap_value.shape)} must be [T, B], [T, B] and [B]"
        )
    rhos = torch.exp(target_logp - behaviour_logp)
    clipped_rhos = rhos.clamp(max=rho_clip)
    cs = rhos.clamp(max=c_clip)
    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)])
    deltas = clipped_rhos * (rewards + discounts * values_tp1 - values)

    vs_minus_v = torch.empty_like(values)
    acc = torch.zeros_like(bootstrap_value)
    for t in range(values.shape[0] - 1, -1, -1):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        vs_minus_v[t] = acc
    vs = vs_minus_v + values

    vs_tp1 = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)])
    pg_advantages = rhos.clamp(max=pg_rho_clip) * (rewards + discounts * vs_tp1 - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)
