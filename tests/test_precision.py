"""bfloat16 arithmetic for the policy (actors/precision.py): when auto picks it, and that the
policy it computes stays within a stated tolerance of float32 on real observations."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from actors import precision
from actors.config import ModelConfig
from actors.envs import ObsEncoder, make_env, reset_seeded
from actors.model import PolicyNet
from actors.precision import compute_in, resolve

CPU = torch.device("cpu")
# What bfloat16 may change in the policy the actors sample from, measured on 64 real
# NetHackScore observations (stated in docs/scaling.md): total variation distance between the
# float32 and bfloat16 action distributions, and the values' difference.
MAX_TV = 0.02
MAX_VALUE_DIFF = 0.05


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("flags,want", [
    (frozenset(), torch.float32),
    (frozenset({"avx2", "fma"}), torch.float32),
    (frozenset({"avx512f", "avx512_bf16"}), torch.bfloat16),
    (frozenset({"amx_bf16", "amx_tile"}), torch.bfloat16),
])
def test_auto_is_bfloat16_only_on_cpus_that_have_it(monkeypatch, flags, want) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    assert resolve("auto", CPU) == want
    assert resolve("float32", CPU) == torch.float32


def test_forced_bfloat16_is_obeyed_and_warned_about_where_emulated(monkeypatch, caplog) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    with caplog.at_level(logging.WARNING, logger="actors.precision"):
        assert resolve("bfloat16", CPU) == torch.bfloat16
    assert "emulates" in caplog.text
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve("float16", CPU)


def test_the_config_rejects_an_unknown_precision() -> None:
    from cluster.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"rollout\.precision"):
        load_config("configs/default.yaml", ["rollout.precision=fp16"])
    assert load_config("configs/default.yaml", ["learner.precision=bfloat16"]
                       ).learner.precision == "bfloat16"


def _real_observations(n: int = 64) -> dict[str, torch.Tensor]:
    env = make_env("NetHackScore-v0")
    # Seeded levels: unseeded, these observations (and the policy's top-1 mean) differ run
    # to run, since reset(seed=...) alone never reaches NetHack's RNGs.
    levels, rng = np.random.default_rng(0), np.random.default_rng(0)
    obs, _ = reset_seeded(env, levels)
    raw = [obs]
    while len(raw) < n:
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        raw.append(obs)
        if terminated or truncated:
            obs, _ = reset_seeded(env, levels)
    env.close()
    encoded = ObsEncoder(9).encode(raw).policy_inputs()
    return {k: torch.as_tensor(v) for k, v in encoded.items()}


def test_bfloat16_policy_stays_within_tolerance_of_float32_on_real_observations() -> None:
    torch.manual_seed(0)
    net = PolicyNet(ModelConfig(), crop_size=9, num_actions=23).eval()
    # A policy with opinions: the default head starts near uniform, which any arithmetic
    # reproduces; a head of gain 30 spreads the logits over several units, as training does.
    torch.nn.init.orthogonal_(net.policy_head.weight, gain=30.0)
    obs = {k: v.unsqueeze(0) for k, v in _real_observations().items()}  # [1, 64, ...]
    first = torch.ones(1, 64, dtype=torch.bool)
    state = net.initial_state(64)
    with torch.no_grad():
        full = net(obs, first, state)
        with compute_in(torch.bfloat16, CPU):
            half = net(obs, first, state)
    assert half.logits.dtype == torch.bfloat16  # the products really ran in bfloat16
    p32 = torch.softmax(full.logits[0], -1)
    p16 = torch.softmax(half.logits[0].float(), -1)
    tv = 0.5 * (p32 - p16).abs().sum(-1)
    print(f"max TV {tv.max():.4f}, mean TV {tv.mean():.4f}, mean top-1 probability "
          f"{p32.max(-1).values.mean():.3f}, max value difference "
          f"{(full.values - half.values.float()).abs().max():.4f}")
    assert p32.max(-1).values.mean() > 0.2  # not uniform: the tolerance means something
    assert tv.max() < MAX_TV, tv.max()
    assert (full.values - half.values.float()).abs().max() < MAX_VALUE_DIFF


def test_a_bfloat16_learner_keeps_float32_weights_and_state(monkeypatch) -> None:
    from cluster.config import OniConfig
    from learner.appo import Learner
    from learner.batch import make_batch
    from tests.helpers.fragments import make_fragment

    cfg = OniConfig()
    cfg.learner.precision = "bfloat16"
    learner = Learner(cfg, num_actions=23)
    assert learner.compute_dtype == torch.bfloat16
    before = {k: v.detach().clone() for k, v in learner.model.named_parameters()}
    metrics = learner.update(make_batch([make_fragment(T=8, E=4, seed=1)]))
    assert np.isfinite(metrics["total_loss"]) and np.isfinite(metrics["grad_norm"])
    for name, param in learner.model.named_parameters():
        assert param.dtype == torch.float32, name
        assert learner.optimizer.state[param]["exp_avg"].dtype == torch.float32, name
    assert any(not torch.equal(before[k], v) for k, v in learner.model.named_parameters())


def test_a_bfloat16_rollout_worker_carries_float32_state() -> None:
    from actors.config import EnvConfig, RolloutConfig
    from actors.rollout_worker import RolloutWorker

    model = ModelConfig(glyph_embedding_dim=8, crop_channels=4, blstats_hidden=8,
                        message_hidden=8, fused_hidden=16, core_hidden=16)
    worker = RolloutWorker(env=EnvConfig(id="oniray/Corridor-v0"),
                           rollout=RolloutConfig(envs_per_actor=4, fragment_length=8,
                                                 precision="bfloat16"),
                           model=model, actor_id=0, seed=0)
    net = PolicyNet(model, crop_size=9, num_actions=worker.num_actions)
    worker.set_weights({k: v.numpy() for k, v in net.state_dict().items()}, version=0)
    fragment, _ = worker.sample()
    assert worker.core_state.dtype == torch.float32
    logp = fragment.column("behaviour_logp").to_numpy()
    assert np.isfinite(logp).all() and (logp <= 0).all()
