"""The learner's reward, as one pure function: every term, and the one episode-boundary rule.

    r_t = c_ext * clip(r_ext_t) + (1 - done_t) * (c_int * r_int_t * N_t ** -beta + c_rnd * b_t)

Per step t (all tensors [T, B], aligned by ``learner.batch.Batch``):
  r_ext_t  the extrinsic reward of step t;
  done_t   step t ended its episode (terminated or truncated);
  r_int_t  the reward model's score of the message step t led to (row t + 1, ONI's judged
           intrinsic reward), N_t that message's count in its episode (``msg_count``, >= 1);
  b_t      RND's normalised novelty of the observation step t led to.

The boundary rule: when step t ended its episode, the observation after it is the next
episode's first, not something step t's action caused, so no term that scores that
observation (judged, count or RND) is credited to step t. The extrinsic reward belongs to
step t itself and is kept. Tensors in, tensor out; no state.
"""

from __future__ import annotations

import torch


def combine_rewards(
    *,
    extrinsic: torch.Tensor,
    done: torch.Tensor,
    judged: torch.Tensor | None,
    next_msg_count: torch.Tensor,
    novelty: torch.Tensor | None,
    extrinsic_coef: float,
    extrinsic_clip: float | None,
    intrinsic_coef: float,
    count_exponent: float,
    novelty_coef: float,
) -> torch.Tensor:
    """Combine and mask the terms above; every tensor has the shape of ``extrinsic``."""
    for name, term in (("done", done), ("judged", judged), ("next_msg_count", next_msg_count),
                       ("novelty", novelty)):
        if term is not None and term.shape != extrinsic.shape:
            raise ValueError(
                f"combine_rewards: {name} is {tuple(term.shape)}, expected "
                f"{tuple(extrinsic.shape)} (the shape of extrinsic)"
            )
    r_ext = extrinsic.float()
    if extrinsic_clip is not None:
        r_ext = r_ext.clamp(-extrinsic_clip, extrinsic_clip)
    intrinsic = torch.zeros_like(r_ext)
    if judged is not None and intrinsic_coef != 0.0:
        intrinsic = intrinsic + judged_term(judged=judged, next_msg_count=next_msg_count,
                                            intrinsic_coef=intrinsic_coef,
                                            count_exponent=count_exponent)
    if novelty is not None and novelty_coef != 0.0:
        intrinsic = intrinsic + novelty_coef * novelty.float()
    return extrinsic_coef * r_ext + intrinsic * _not_done(done)


def judged_term(
    *,
    judged: torch.Tensor,
    next_msg_count: torch.Tensor,
    intrinsic_coef: float,
    count_exponent: float,
    done: torch.Tensor | None = None,
) -> torch.Tensor:
    """c_int * r_int_t * N_t ** -beta: the judged part of the reward above; with ``done``,
    masked by the boundary rule (what step t is actually credited)."""
    count = next_msg_count.float().clamp(min=1.0)  # a count below 1 can only be padding
    term = intrinsic_coef * judged.float() * count.pow(-count_exponent)
    return term if done is None else term * _not_done(done)


def _not_done(done: torch.Tensor) -> torch.Tensor:
    return (~done.bool()).float()
