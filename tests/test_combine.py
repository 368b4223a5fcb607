"""The reward combination r = c_ext clip(r_ext) + c_int r_int N^-beta, by hand."""

from __future__ import annotations

import pytest
import torch

from rewards.combine import combine_rewards


def test_hand_computed_values() -> None:
    extrinsic = torch.tensor([5.0, -20.0, 0.0, 1.0])
    intrinsic = torch.tensor([1.0, 1.0, 0.5, 0.0])
    msg_count = torch.tensor([1, 2, 4, 1])
    reward = combine_rewards(
        extrinsic=extrinsic, intrinsic=intrinsic, msg_count=msg_count,
        extrinsic_coef=0.1, extrinsic_clip=10.0, intrinsic_coef=0.4, count_exponent=3.0,
    )
    expected = torch.tensor([
        0.1 * 5.0 + 0.4 * 1.0 * 1.0,  # 0.9
        0.1 * -10.0 + 0.4 * 1.0 / 2**3,  # -1.0 + 0.05 = -0.95 (r_ext clipped to -10)
        0.0 + 0.4 * 0.5 / 4**3,  # 0.003125
        0.1 * 1.0 + 0.0,  # 0.1
    ])
    torch.testing.assert_close(reward, expected)


def test_no_clip_and_no_intrinsic() -> None:
    reward = combine_rewards(
        extrinsic=torch.tensor([50.0]), intrinsic=None, msg_count=torch.tensor([1]),
        extrinsic_coef=10.0, extrinsic_clip=None, intrinsic_coef=0.4, count_exponent=3.0,
    )
    assert reward.item() == pytest.approx(500.0)


def test_zero_count_is_treated_as_one() -> None:
    # A count below 1 can only be padding; it must not blow the reward up (0 ** -3 = inf).
    reward = combine_rewards(
        extrinsic=torch.zeros(1), intrinsic=torch.ones(1), msg_count=torch.zeros(1),
        extrinsic_coef=1.0, extrinsic_clip=None, intrinsic_coef=0.5, count_exponent=3.0,
    )
    assert reward.item() == pytest.approx(0.5)


def test_beta_zero_keeps_the_full_intrinsic_reward() -> None:
    reward = combine_rewards(
        extrinsic=torch.zeros(2), intrinsic=torch.ones(2), msg_count=torch.tensor([1, 7]),
        extrinsic_coef=1.0, extrinsic_clip=None, intrinsic_coef=0.4, count_exponent=0.0,
    )
    torch.testing.assert_close(reward, torch.tensor([0.4, 0.4]))
