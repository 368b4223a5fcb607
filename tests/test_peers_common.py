"""The peer benchmark's shared code (``bench/peers/common.py``) runs oniray's own encoder, so
the Sample Factory and RLlib networks cannot drift from what trains: the parts testable
without the peers' venvs (which ``make bench-peers`` builds)."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from torch import nn

from actors.config import ModelConfig
from actors.model import PolicyNet
from bench.peers.common import CROP_SIZE, NET_SIZES, CroppedNetHack, Encoder, NetSize

A = 23  # NetHackScore's actions


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("net", sorted(NET_SIZES))
def test_encoder_is_policynets_encoder_layer_for_layer(net: str) -> None:
    size = NET_SIZES[net]
    torch.manual_seed(0)
    policy = PolicyNet(ModelConfig(**asdict(size)), crop_size=CROP_SIZE, num_actions=A)
    encoder = Encoder(size)
    mine = {k: v.shape for k, v in encoder.state_dict().items()}
    theirs = {k: v.shape for k, v in policy.state_dict().items()
              if not k.startswith(("core.", "policy_head.", "value_head."))}
    assert mine == theirs
    encoder.load_state_dict(policy.state_dict(), strict=False)
    obs = {
        "glyph_crop": torch.randint(0, 5977, (5, CROP_SIZE, CROP_SIZE), dtype=torch.int16),
        "blstats": torch.randn(5, 27) * 100,
        "message_bytes": torch.randint(0, 256, (5, 256), dtype=torch.uint8),
    }
    assert torch.equal(encoder(obs), policy.encode(obs))


def test_a_peer_network_has_policynets_parameter_count() -> None:
    # What compare.py checks across systems: the encoder, a GRU and two linear heads (RLlib's
    # Body + heads; Sample Factory's core and heads are the same shapes).
    size = NET_SIZES["reference"]
    peer = nn.ModuleList([Encoder(size), nn.GRU(size.fused_hidden, size.core_hidden),
                          nn.Linear(size.core_hidden, A), nn.Linear(size.core_hidden, 1)])
    policy = PolicyNet(ModelConfig(), crop_size=CROP_SIZE, num_actions=A)
    assert sum(p.numel() for p in peer.parameters()) == sum(
        p.numel() for p in policy.parameters())


def test_sizes_are_oniray_model_configs() -> None:
    assert asdict(NET_SIZES["reference"]) == asdict(ModelConfig())  # oniray's default network
    tiny = NET_SIZES["tiny"]
    assert "model.core_hidden=16" in tiny.oniray_overrides()
    assert NetSize(**asdict(tiny)) == tiny  # how RLlib's module rebuilds it from its config


def test_a_message_free_size_encodes_without_the_message_layer() -> None:
    size = NetSize(message_hidden=0, fused_hidden=8, core_hidden=8)
    obs = {"glyph_crop": torch.zeros(2, CROP_SIZE, CROP_SIZE, dtype=torch.int16),
           "blstats": torch.zeros(2, 27), "message_bytes": torch.zeros(2, 256, dtype=torch.uint8)}
    assert Encoder(size)(obs).shape == (2, 8)


def test_cropped_nethack_feeds_the_encoder() -> None:
    env = CroppedNetHack("NetHackScore-v0")
    try:
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        obs, *_ = env.step(0)
    finally:
        env.close()
    batch = {k: torch.as_tensor(v).unsqueeze(0) for k, v in obs.items()}
    assert Encoder(NET_SIZES["tiny"])(batch).shape == (1, NET_SIZES["tiny"].fused_hidden)
