"""V-trace: a hand-computed example, the paper's formula written out slowly, on-policy returns."""

from __future__ import annotations

import math

import pytest
import torch

from learner.vtrace import vtrace


def test_three_step_example_by_hand() -> None:
    # One env, 3 steps. rho = exp(target - behaviour) = [2, 0.5, 1]; rho-bar = c-bar = 1
    # clips them to rho = c = [1, 0.5, 1]. Discounts 0.5 everywhere.
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    out = vtrace(
        behaviour_logp=torch.zeros(3, 1),
        target_logp=torch.log(torch.tensor([[2.0], [0.5], [1.0]])),
        rewards=rewards,
        discounts=torch.full((3, 1), 0.5),
        values=values,
        bootstrap_value=torch.tensor([2.0]),
    )
    # delta_t = rho_t (r_t + gamma V_{t+1} - V_t), V_3 = bootstrap = 2:
    #   delta_0 = 1.0 * (1 + 0.5 * 1.0 - 0.5) = 1.0
    #   delta_1 = 0.5 * (2 + 0.5 * 1.5 - 1.0) = 0.875
    #   delta_2 = 1.0 * (3 + 0.5 * 2.0 - 1.5) = 2.5
    # v_t - V_t = delta_t + gamma c_t (v_{t+1} - V_{t+1}), backwards:
    #   t=2: 2.5                         -> v_2 = 1.5 + 2.5  = 4.0
    #   t=1: 0.875 + 0.5 * 0.5 * 2.5 = 1.5 -> v_1 = 1.0 + 1.5  = 2.5
    #   t=0: 1.0 + 0.5 * 1.0 * 1.5 = 1.75  -> v_0 = 0.5 + 1.75 = 2.25
    torch.testing.assert_close(out.vs, torch.tensor([[2.25], [2.5], [4.0]]))
    # pg advantage_t = rho_t (r_t + gamma v_{t+1} - V_t), v_3 = bootstrap = 2:
    #   t=0: 1.0 * (1 + 0.5 * 2.5 - 0.5) = 1.75
    #   t=1: 0.5 * (2 + 0.5 * 4.0 - 1.0) = 1.5
    #   t=2: 1.0 * (3 + 0.5 * 2.0 - 1.5) = 2.5
    torch.testing.assert_close(out.pg_advantages, torch.tensor([[1.75], [1.5], [2.5]]))


def _slow_vtrace(
    *, behaviour_logp, target_logp, rewards, discounts, values, bootstrap_value,
    rho_clip, c_clip, pg_rho_clip,
):
    """IMPALA eq. (1) as written: v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i c_i)
    delta_t V, with delta_t V = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)); plain floats."""
    T, B = rewards.shape
    vs = [[0.0] * B for _ in range(T)]
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        V = [float(values[t, b]) for t in range(T)] + [float(bootstrap_value[b])]
        ratio = [math.exp(float(target_logp[t, b] - behaviour_logp[t, b])) for t in range(T)]
        for s in range(T):
            total = V[s]
            for t in range(s, T):
                product = 1.0
                for i in range(s, t):
                    product *= float(discounts[i, b]) * min(c_clip, ratio[i])
                delta = min(rho_clip, ratio[t]) * (
                    float(rewards[t, b]) + float(discounts[t, b]) * V[t + 1] - V[t]
                )
                total += product * delta
            vs[s][b] = total
        for s in range(T):
            v_next = vs[s + 1][b] if s + 1 < T else V[T]
            adv[s][b] = min(pg_rho_clip, ratio[s]) * (
                float(rewards[s, b]) + float(discounts[s, b]) * v_next - V[s]
            )
    return torch.tensor(vs, dtype=torch.float64), torch.tensor(adv, dtype=torch.float64)


@pytest.mark.parametrize("clips", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.5), (0.7, 1.3, 0.9)])
def test_matches_the_papers_formula_on_random_inputs(clips: tuple[float, float, float]) -> None:
    g = torch.Generator().manual_seed(7)
    T, B = 7, 5
    inputs = dict(
        behaviour_logp=-torch.rand(T, B, generator=g, dtype=torch.float64) * 3,
        target_logp=-torch.rand(T, B, generator=g, dtype=torch.float64) * 3,
        rewards=torch.randn(T, B, generator=g, dtype=torch.float64),
        # 0.99 with episode ends (discount 0) sprinkled in.
        discounts=0.99 * (torch.rand(T, B, generator=g, dtype=torch.float64) > 0.2).double(),
        values=torch.randn(T, B, generator=g, dtype=torch.float64),
        bootstrap_value=torch.randn(B, generator=g, dtype=torch.float64),
    )
    rho_clip, c_clip, pg_rho_clip = clips
    clip_args = dict(rho_clip=rho_clip, c_clip=c_clip, pg_rho_clip=pg_rho_clip)
    out = vtrace(**inputs, **clip_args)
    want_vs, want_adv = _slow_vtrace(**inputs, **clip_args)
    torch.testing.assert_close(out.vs, want_vs)
    torch.testing.assert_close(out.pg_advantages, want_adv)


def test_on_policy_targets_are_n_step_returns() -> None:
    g = torch.Generator().manual_seed(3)
    T, B = 6, 4
    rewards = torch.randn(T, B, generator=g)
    discounts = 0.9 * (torch.rand(T, B, generator=g) > 0.25).float()
    bootstrap = torch.randn(B, generator=g)
    logp = -torch.rand(T, B, generator=g)
    out = vtrace(
        behaviour_logp=logp, target_logp=logp, rewards=rewards, discounts=discounts,
        values=torch.randn(T, B, generator=g), bootstrap_value=bootstrap,
        rho_clip=float("inf"), c_clip=float("inf"), pg_rho_clip=float("inf"),
    )
    returns = torch.empty(T, B)
    ret = bootstrap
    for t in reversed(range(T)):
        ret = rewards[t] + discounts[t] * ret
        returns[t] = ret
    torch.testing.assert_close(out.vs, returns)


def test_targets_carry_no_gradient() -> None:
    values = torch.randn(3, 2, requires_grad=True)
    logp = torch.zeros(3, 2, requires_grad=True)
    out = vtrace(
        behaviour_logp=torch.zeros(3, 2), target_logp=logp, rewards=torch.ones(3, 2),
        discounts=torch.ones(3, 2), values=values, bootstrap_value=torch.zeros(2),
    )
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="must be"):
        vtrace(
            behaviour_logp=torch.zeros(3, 2), target_logp=torch.zeros(3, 2),
            rewards=torch.zeros(3, 2), discounts=torch.zeros(3, 2), values=torch.zeros(3, 2),
            bootstrap_value=torch.zeros(3),
        )


def _three_steps(*, discounts: list[float], truncated: list[bool] | None) -> tuple:
    """On-policy (rho = c = 1), one env, gamma 0.9, V = [1, 2, 3], bootstrap 4, rewards
    [0, 0, 1]; the value of the observation a time limit cut off is 5."""
    out = vtrace(
        behaviour_logp=torch.zeros(3, 1),
        target_logp=torch.zeros(3, 1),
        rewards=torch.tensor([[0.0], [0.0], [1.0]]),
        discounts=torch.tensor(discounts).unsqueeze(1),
        values=torch.tensor([[1.0], [2.0], [3.0]]),
        bootstrap_value=torch.tensor([4.0]),
        truncated=None if truncated is None else torch.tensor(truncated).unsqueeze(1),
        truncation_values=None if truncated is None else torch.full((3, 1), 5.0),
    )
    return out.vs.squeeze(1).tolist(), out.pg_advantages.squeeze(1).tolist()


def test_a_time_limit_bootstraps_where_a_termination_does_not() -> None:
    # Terminated at step 2: discounts [0.9, 0.9, 0], the episode's future is worth nothing.
    #   v_2 = 1                 v_1 = 0.9 * 1 = 0.9      v_0 = 0.9 * 0.9 = 0.81
    vs, adv = _three_steps(discounts=[0.9, 0.9, 0.0], truncated=[False, False, False])
    assert vs == pytest.approx([0.81, 0.9, 1.0])
    # advantages r_t + gamma_t v_{t+1} - V_t: [0.81 - 1, 0.9 - 2, 1 - 3]
    assert adv == pytest.approx([-0.19, -1.1, -2.0])
    # Truncated at step 2: the discount stays 0.9 and the cut-off state is worth 5.
    #   v_2 = 1 + 0.9 * 5 = 5.5  v_1 = 0.9 * 5.5 = 4.95  v_0 = 0.9 * 4.95 = 4.455
    vs, adv = _three_steps(discounts=[0.9, 0.9, 0.9], truncated=[False, False, True])
    assert vs == pytest.approx([4.455, 4.95, 5.5])
    assert adv == pytest.approx([4.455 - 1, 4.95 - 2, 5.5 - 3])


def test_a_truncation_mid_fragment_uses_the_cut_off_value_not_the_next_episode() -> None:
    # Step 0 is truncated: row 1 already belongs to the next episode, whose values (2, 3, 4)
    # and rewards must not leak into step 0's target: v_0 = 0 + 0.9 * 5 = 4.5.
    #   Next episode: v_2 = 1 + 0.9 * 4 = 4.6, v_1 = 0.9 * 4.6 = 4.14.
    vs, adv = _three_steps(discounts=[0.9, 0.9, 0.9], truncated=[True, False, False])
    assert vs == pytest.approx([4.5, 4.14, 4.6])
    assert adv == pytest.approx([4.5 - 1, 4.14 - 2, 4.6 - 3])
    # Treating the same step as terminal (bootstrapping off) gives v_0 = V_0 + delta_0 = 0.
    vs, _ = _three_steps(discounts=[0.0, 0.9, 0.9], truncated=None)
    assert vs[0] == pytest.approx(0.0)


def test_truncation_needs_its_values() -> None:
    with pytest.raises(ValueError, match="go together"):
        vtrace(behaviour_logp=torch.zeros(1, 1), target_logp=torch.zeros(1, 1),
               rewards=torch.zeros(1, 1), discounts=torch.ones(1, 1), values=torch.zeros(1, 1),
               bootstrap_value=torch.zeros(1), truncated=torch.ones(1, 1, dtype=torch.bool))
