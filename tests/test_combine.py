"""The reward rule r = c_ext clip(r_ext) + (1 - done) (c_int r_int N^-beta + c_rnd b), by hand."""

from __future__ import annotations

import pytest
import torch

from rewards.combine import combine_rewards

COEFS = dict(extrinsic_coef=0.1, extrinsic_clip=10.0, intrinsic_coef=0.4, count_exponent=2.0,
             novelty_coef=0.2)


def _four_steps(**overrides: object) -> torch.Tensor:
    """Four steps of one env; step 1 ends its episode, so row 2 is the next one's start."""
    terms: dict[str, object] = dict(
        extrinsic=torch.tensor([5.0, -20.0, 0.0, 1.0]),
        done=torch.tensor([False, True, False, False]),
        judged=torch.tensor([1.0, 1.0, 0.5, 0.0]),
        next_msg_count=torch.tensor([1, 1, 4, 1], dtype=torch.int32),
        novelty=torch.tensor([2.0, 3.0, 1.0, 0.5]),
        **COEFS,
    )
    terms.update(overrides)
    return combine_rewards(**terms)  # type: ignore[arg-type]


def test_hand_computed_values_with_an_episode_boundary() -> None:
    expected = torch.tensor([
        0.1 * 5.0 + 0.4 * 1.0 * 1**-2 + 0.2 * 2.0,  # 0.5 + 0.4 + 0.4 = 1.3
        0.1 * -10.0,  # r_ext clipped to -10; judged 0.4 and RND 0.6 belong to the next episode
        0.0 + 0.4 * 0.5 * 4**-2 + 0.2 * 1.0,  # 0.0125 + 0.2 = 0.2125
        0.1 * 1.0 + 0.0 + 0.2 * 0.5,  # 0.2
    ])
    torch.testing.assert_close(_four_steps(), expected)


def test_rnd_is_masked_at_the_boundary_exactly_like_the_judged_term() -> None:
    without_rnd = _four_steps(novelty=None)
    with_rnd = _four_steps()
    torch.testing.assert_close(with_rnd - without_rnd, torch.tensor([0.4, 0.0, 0.2, 0.1]))
    without_judge = _four_steps(judged=None)
    torch.testing.assert_close(with_rnd - without_judge, torch.tensor([0.4, 0.0, 0.0125, 0.0]))
    # No boundary: every term of step 1 is credited.
    no_boundary = _four_steps(done=torch.zeros(4, dtype=torch.bool))
    assert no_boundary[1].item() == pytest.approx(-1.0 + 0.4 + 0.6)


def test_no_clip_and_no_intrinsic() -> None:
    reward = combine_rewards(
        extrinsic=torch.tensor([50.0]), done=torch.tensor([True]), judged=None,
        next_msg_count=torch.tensor([1]), novelty=None, extrinsic_coef=10.0,
        extrinsic_clip=None, intrinsic_coef=0.4, count_exponent=3.0, novelty_coef=0.5,
    )
    assert reward.item() == pytest.approx(500.0)  # the extrinsic reward survives the boundary


def test_zero_count_is_treated_as_one() -> None:
    # A count below 1 can only be padding; it must not blow the reward up (0 ** -3 = inf).
    reward = _four_steps(next_msg_count=torch.zeros(4), count_exponent=3.0, novelty=None,
                         extrinsic_coef=0.0)
    torch.testing.assert_close(reward, torch.tensor([0.4, 0.0, 0.2, 0.0]))


def test_beta_zero_keeps_the_full_intrinsic_reward() -> None:
    reward = _four_steps(next_msg_count=torch.tensor([1, 7, 7, 2]), count_exponent=0.0,
                         novelty=None, extrinsic_coef=0.0)
    torch.testing.assert_close(reward, torch.tensor([0.4, 0.0, 0.2, 0.0]))


def test_a_misaligned_term_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"novelty is \(3,\), expected \(4,\)"):
        _four_steps(novelty=torch.ones(3))


def test_judged_term_is_the_judged_part_and_masks_like_combine_rewards() -> None:
    from rewards.combine import judged_term

    terms = dict(judged=torch.tensor([1.0, 1.0, 0.5, 0.0]),
                 next_msg_count=torch.tensor([1, 1, 4, 1], dtype=torch.int32),
                 intrinsic_coef=0.4, count_exponent=2.0)
    done = torch.tensor([False, True, False, False])
    torch.testing.assert_close(judged_term(**terms),  # type: ignore[arg-type]
                               torch.tensor([0.4, 0.4, 0.0125, 0.0]))
    credited = judged_term(**terms, done=done)  # type: ignore[arg-type]
    torch.testing.assert_close(credited, torch.tensor([0.4, 0.0, 0.0125, 0.0]))
    # combine_rewards without the other terms is exactly the credited judged reward
    alone = _four_steps(extrinsic=torch.zeros(4), novelty=None)
    torch.testing.assert_close(alone, credited)
