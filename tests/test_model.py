"""The policy network: shapes, size, recurrent resets, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from actors.config import ModelConfig
from actors.fragment import MAX_GLYPH
from actors.model import PolicyNet

A = 23  # NetHackScore-v0


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _obs(T: int, B: int, C: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "glyph_crop": torch.randint(0, MAX_GLYPH + 1, (T, B, C, C), generator=g).short(),
        "blstats": torch.randn(T, B, 27, generator=g) * 100,
        "message_bytes": torch.randint(0, 256, (T, B, 256), generator=g).to(torch.uint8),
    }


def _net(seed: int = 0, **model: int) -> PolicyNet:
    torch.manual_seed(seed)
    return PolicyNet(ModelConfig(**model), crop_size=9, num_actions=A)


def test_output_shapes() -> None:
    net = _net()
    out = net(_obs(5, 3), torch.zeros(5, 3, dtype=torch.bool), net.initial_state(3))
    assert out.logits.shape == (5, 3, A)
    assert out.values.shape == (5, 3)
    assert out.core_state.shape == (3, 256)


def test_default_network_has_about_a_million_parameters() -> None:
    n = sum(p.numel() for p in _net().parameters())
    print(f"default PolicyNet parameters: {n:,}")
    assert 0.9e6 < n < 1.1e6
    small = sum(p.numel() for p in _net(message_hidden=0).parameters())
    assert n - small == 256 * 64 + 64 + 64 * 256  # the message layer and its fused inputs


def _state_before(
    net: PolicyNet, obs: dict[str, torch.Tensor], h0: torch.Tensor, *, t: int, env: int
) -> torch.Tensor:
    """One env's core state after steps 0..t-1, without resets."""
    head = {k: v[:t, env : env + 1] for k, v in obs.items()}
    return net(head, torch.zeros(t, 1, dtype=torch.bool), h0[env : env + 1]).core_state


def test_reset_zeroes_the_state_before_a_first_step() -> None:
    net = _net()
    T, B = 8, 3
    obs = _obs(T, B)
    first = torch.zeros(T, B, dtype=torch.bool)
    first[4, 1] = True  # env 1 starts a new episode at t = 4
    h0 = torch.randn(B, 256)
    out = net(obs, first, h0)

    tail = {k: v[4:, 1:2] for k, v in obs.items()}
    fresh = net(tail, first[4:, 1:2], torch.zeros(1, 256))
    torch.testing.assert_close(out.values[4:, 1:2], fresh.values)
    torch.testing.assert_close(out.core_state[1:2], fresh.core_state)
    # Without the reset the carried state would matter (otherwise this test proves nothing).
    h_before = _state_before(net, obs, h0, t=4, env=1)
    carried = net(tail, torch.zeros(4, 1, dtype=torch.bool), h_before)
    assert not torch.allclose(carried.values, fresh.values)
    # Envs without a reset carry their initial state through.
    no_reset = net(obs, torch.zeros(T, B, dtype=torch.bool), h0)
    torch.testing.assert_close(out.values[:, 0], no_reset.values[:, 0])



def test_segments_agree_with_stepping_one_step_at_a_time() -> None:
    net = _net()
    T, B = 10, 4
    obs = _obs(T, B, seed=1)
    first = torch.rand(T, B, generator=torch.Generator().manual_seed(2)) < 0.2
    h = torch.randn(B, 256)
    whole = net(obs, first, h)
    values = []
    for t in range(T):
        step = net({k: v[t : t + 1] for k, v in obs.items()}, first[t : t + 1], h)
        h = step.core_state
        values.append(step.values[0])
    torch.testing.assert_close(whole.values, torch.stack(values))
    torch.testing.assert_close(whole.core_state, h)


def test_act_on_numpy_observations() -> None:
    net = _net()
    obs = {k: v[0].numpy() for k, v in _obs(1, 8).items()}
    first = np.array([True] * 8)
    actions, logp, state = net.act(obs, first, net.initial_state(8))
    assert actions.dtype == torch.int64 and actions.shape == (8,)
    assert ((actions >= 0) & (actions < A)).all()
    assert logp.dtype == torch.float32 and (logp <= 0).all()
    assert state.shape == (8, 256) and not state.requires_grad
    # logp is the log-probability of the sampled action under the forward pass's policy.
    out = net({k: torch.as_tensor(v)[None] for k, v in obs.items()},
              torch.ones(1, 8, dtype=torch.bool), net.initial_state(8))
    want = torch.log_softmax(out.logits[0], -1).gather(1, actions[:, None]).squeeze(1)
    torch.testing.assert_close(logp, want.detach())


def test_deterministic_under_seed() -> None:
    a, b, c = _net(seed=5), _net(seed=5), _net(seed=6)
    for (name, pa_), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa_, pb), name
    assert not torch.equal(a.fuse[0].weight, c.fuse[0].weight)

    obs = {k: v[0] for k, v in _obs(1, 8).items()}
    first = torch.ones(8, dtype=torch.bool)

    def sample(seed: int) -> torch.Tensor:
        return a.act(obs, first, a.initial_state(8), torch.Generator().manual_seed(seed))[0]

    assert torch.equal(sample(1), sample(1))
    assert any(not torch.equal(sample(1), sample(s)) for s in range(2, 6))


def test_config_sizes_are_respected() -> None:
    cfg = dataclasses.replace(ModelConfig(), crop_conv_layers=3, core_hidden=64, fused_hidden=32)
    net = PolicyNet(cfg, crop_size=5, num_actions=4)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.crop_convs) == 3
    out = net(_obs(2, 2, C=5), torch.zeros(2, 2, dtype=torch.bool), net.initial_state(2))
    assert out.logits.shape == (2, 2, 4) and out.core_state.shape == (2, 64)
