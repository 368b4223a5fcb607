"""The learner's reward, as one pure function (ONI's combination).

    r = c_ext * clip(r_ext) + c_int * r_int * N ** -beta

where N is the per-episode count of the step's message (``msg_count``, >= 1) and r_int the
reward model's score of that message. Tensors in, tensor out; no state.
"""

from __future__ import annotations

import torch


def combine_rewards(
    *,
    extrinsic: torch.Tensor,
    intrinsic: torch.Tensor | None,
    msg_count: torch.Tensor,
    extrinsic_coef: float,
    extrinsic_clip: float | None,
    intrinsic_coef: float,
    count_exponent: float,
) -> torch.Tensor:
    """Combine extrinsic and intrinsic rewards; all tensors share one shape."""
    r_ext = extrinsic.float()
    if extrinsic_clip is not None:
        r_ext = r_ext.clamp(-extrinsic_clip, extrinsic_clip)
    reward = extrinsic_coef * r_ext
    if intrinsic is not None and intrinsic_coef != 0.0:
        count = msg_count.float().clamp(min=1.0)  # a count below 1 can only be padding
        reward = reward + intrinsic_coef * intrinsic.float() * count.pow(-count_exponent)
    return reward
