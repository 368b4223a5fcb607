"""V-trace off-policy targets (Espeholt et al. 2018, IMPALA, eq. 1 and section 4.2).

Consumes time-major tensors ``[T, B]`` of one batch of trajectories (log-probabilities of the
taken actions under the behaviour and target policies, rewards, per-step discounts, values)
and the bootstrap value ``[B]`` of the state after the last step. Emits the value targets
``vs`` and the policy-gradient advantages, both ``[T, B]``. A pure function: no state, no
gradient (targets are constants to the losses).

Episode ends come in two kinds. A *terminated* step (death, goal) has no future: its discount
is 0. A *truncated* step (a time limit cut the episode) does have one, but the next row of
the fragment already belongs to the next episode, so its value is taken from
``truncation_values`` (the value of the observation the limit cut off) instead, and nothing
propagates back across the boundary (Pardo et al. 2018, "Time Limits in Reinforcement
Learning").
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
    truncated: torch.Tensor | None = None,
    truncation_values: torch.Tensor | None = None,
    rho_clip: float = 1.0,
    c_clip: float = 1.0,
    pg_rho_clip: float = 1.0,
) -> VTraceReturns:
    """V-trace targets by the backward recursion
    ``v_s - V(x_s) = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))``.

    ``discounts[t]`` is gamma, or 0 where step t terminated its episode. ``truncated[t]``
    (bool ``[T, B]``, optional) marks steps a time limit ended: there the next state's value
    is ``truncation_values[t]`` rather than row t + 1's, and the recursion restarts, so
    nothing propagates across any episode boundary.
    """
    if values.shape != rewards.shape or bootstrap_value.shape != values.shape[1:]:
        raise ValueError(
            f"vtrace: values {tuple(values.shape)}, rewards {tuple(rewards.shape)} and "
            f"bootstrap {tuple(bootstrap_value.shape)} must be [T, B], [T, B] and [B]"
        )
    if (truncated is None) != (truncation_values is None):
        raise ValueError("vtrace: truncated and truncation_values go together")
    rhos = torch.exp(target_logp - behaviour_logp)
    clipped_rhos = rhos.clamp(max=rho_clip)
    cs = rhos.clamp(max=c_clip)
    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)])
    carry = discounts  # how much of step t + 1's correction flows back to step t
    if truncated is not None:
        values_tp1 = torch.where(truncated, truncation_values, values_tp1)
        carry = discounts * (~truncated).to(discounts.dtype)
    deltas = clipped_rhos * (rewards + discounts * values_tp1 - values)

    vs_minus_v = torch.empty_like(values)
    acc = torch.zeros_like(bootstrap_value)
    for t in range(values.shape[0] - 1, -1, -1):
        acc = deltas[t] + carry[t] * cs[t] * acc
        vs_minus_v[t] = acc
    vs = vs_minus_v + values

    vs_tp1 = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)])
    if truncated is not None:  # a cut-off state has no trajectory after it: v_s = V
        vs_tp1 = torch.where(truncated, truncation_values, vs_tp1)
    pg_advantages = rhos.clamp(max=pg_rho_clip) * (rewards + discounts * vs_tp1 - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)
