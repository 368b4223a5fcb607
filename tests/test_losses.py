"""APPO's loss terms: values against hand-computed numbers, and where the gradient flows."""

from __future__ import annotations

import math

import torch

from learner.losses import entropy_loss, normalized_advantages, policy_loss, value_loss


def _logp_for_ratios(ratios: list[float]) -> torch.Tensor:
    # behaviour_logp = 0, so ratio = exp(logp).
    return torch.log(torch.tensor(ratios)).requires_grad_(True)


def test_policy_loss_value() -> None:
    logp = _logp_for_ratios([1.05, 1.5, 0.5])
    loss = policy_loss(
        logp=logp, behaviour_logp=torch.zeros(3), advantages=torch.tensor([1.0, 1.0, -1.0]),
        clip_ratio=0.2,
    )
    # min(r A, clip(r, 0.8, 1.2) A): min(1.05, 1.05) = 1.05; min(1.5, 1.2) = 1.2;
    # min(-0.5, -0.8) = -0.8. Loss = -(1.05 + 1.2 - 0.8) / 3.
    assert math.isclose(loss.item(), -(1.05 + 1.2 - 0.8) / 3, rel_tol=1e-6)


def test_policy_loss_gradient_stops_outside_the_trust_region() -> None:
    # ratio 1.5 with A > 0 and 0.5 with A < 0 are clipped: no gradient. Ratio 0.5 with A > 0
    # (the policy moved away from a good action) is not: the unclipped term is the minimum.
    logp = _logp_for_ratios([1.05, 1.5, 0.5, 0.5])
    advantages = torch.tensor([1.0, 1.0, -1.0, 1.0])
    policy_loss(
        logp=logp, behaviour_logp=torch.zeros(4), advantages=advantages, clip_ratio=0.2
    ).backward()
    # d/dlogp of -r A / N is -r A / N.
    torch.testing.assert_close(logp.grad, torch.tensor([-1.05 / 4, 0.0, 0.0, -0.5 / 4]))


def test_policy_loss_treats_advantages_and_behaviour_as_constants() -> None:
    advantages = torch.ones(2, requires_grad=True)
    behaviour = torch.zeros(2, requires_grad=True)
    policy_loss(
        logp=torch.zeros(2, requires_grad=True), behaviour_logp=behaviour,
        advantages=advantages, clip_ratio=0.1,
    ).backward()
    assert advantages.grad is None and behaviour.grad is None


def test_value_loss_value_and_gradient() -> None:
    values = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 5.0], requires_grad=True)
    loss = value_loss(values=values, targets=targets)
    # errors 0, 2, -2 -> 0.5 * (0 + 4 + 4) / 3 = 4/3
    assert math.isclose(loss.item(), 4 / 3, rel_tol=1e-6)
    loss.backward()
    # d/dv = (v - target) / N
    torch.testing.assert_close(values.grad, torch.tensor([0.0, 2 / 3, -2 / 3]))
    assert targets.grad is None


def test_entropy_loss_value() -> None:
    # Row 1 uniform over 4 actions: H = log 4. Row 2: p = [0.25, 0.75] (logits 0, log 3) and
    # two actions with probability ~0: H = -(0.25 log 0.25 + 0.75 log 0.75).
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e4, -1e4]])
    h2 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert math.isclose(entropy_loss(logits=logits).item(), -(math.log(4) + h2) / 2, rel_tol=1e-5)


def test_entropy_gradient_pushes_towards_uniform() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0]], requires_grad=True)
    entropy_loss(logits=logits).backward()
    # Descending the loss lowers the largest logit and raises the smallest.
    assert logits.grad[0, 1] > 0 and logits.grad[0, 2] < 0
    stepped = (logits - 0.1 * logits.grad).detach()
    assert entropy_loss(logits=stepped) < entropy_loss(logits=logits.detach())

    uniform = torch.zeros(1, 5, requires_grad=True)
    entropy_loss(logits=uniform).backward()
    torch.testing.assert_close(uniform.grad, torch.zeros(1, 5))  # maximum: no gradient


def test_normalized_advantages_by_hand() -> None:
    # [1, 2, 3]: mean 2, population variance 2/3, so (A - 2) / sqrt(2/3) = [-1.2247, 0, 1.2247].
    out = normalized_advantages(torch.tensor([1.0, 2.0, 3.0]), mean=2.0, variance=2.0 / 3.0)
    torch.testing.assert_close(out, torch.tensor([-1.224745, 0.0, 1.224745]))


def test_normalized_advantages_of_a_constant_batch_are_zero_not_nan() -> None:
    out = normalized_advantages(torch.full((4,), 0.7), mean=0.7, variance=0.0)
    torch.testing.assert_close(out, torch.zeros(4))
