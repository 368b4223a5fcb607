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


# A learner update under bfloat16 against the same update in float32, from the same weights
# and batch (measured over 5 seeds: losses and V-trace targets within 0.1% relative, the
# update direction's cosine >= 0.999, parameter signs agreeing on >= 99.8%; the bounds below
# leave room for other CPUs' kernels).
UPDATE_REL_TOL = 0.01
UPDATE_MIN_COSINE = 0.99


@pytest.mark.parametrize("seed", [0, 1])
def test_a_bfloat16_learner_update_agrees_with_float32(seed: int) -> None:
    """Runs on any CPU: where the hardware lacks bfloat16, torch emulates it (slower, same
    rounding), so an AVX2-only CI machine still checks this path."""
    from cluster.config import OniConfig
    from learner import appo
    from learner.appo import Learner
    from learner.batch import make_batch
    from tests.helpers.fragments import make_fragment

    batch = make_batch([make_fragment(T=8, E=4, seed=seed)])
    metrics, moves = {}, {}
    for dtype in ("float32", "bfloat16"):
        cfg = OniConfig()
        cfg.learner.precision, cfg.learner.lr, cfg.run.seed = dtype, 1e-3, seed
        torch.manual_seed(seed)
        learner = Learner(cfg, num_actions=23)
        assert learner.compute_dtype == getattr(torch, dtype)
        before = [p.detach().clone() for p in learner.model.parameters()]
        metrics[dtype] = learner.update(batch)
        moves[dtype] = torch.cat([(p.detach() - b).flatten()
                                  for p, b in zip(learner.model.parameters(), before,
                                                  strict=True)])
    for key in (appo.MEAN_VTRACE_TARGET, appo.VALUE_LOSS, appo.MEAN_RATIO, "total_loss",
                "grad_norm"):
        assert metrics["bfloat16"][key] == pytest.approx(
            metrics["float32"][key], rel=UPDATE_REL_TOL, abs=1e-3), key
    cosine = torch.nn.functional.cosine_similarity(moves["float32"], moves["bfloat16"], dim=0)
    assert cosine > UPDATE_MIN_COSINE, cosine


def test_a_bfloat16_rollout_step_agrees_with_float32() -> None:
    """The same worker seed and weights in both precisions: the first step's observations are
    the same, so its action distribution may differ only by bfloat16's rounding (the policy
    head at gain 30, so that the distribution is far from uniform)."""
    from actors.config import EnvConfig, RolloutConfig
    from actors.rollout_worker import RolloutWorker

    model = ModelConfig(glyph_embedding_dim=8, crop_channels=4, blstats_hidden=8,
                        message_hidden=8, fused_hidden=16, core_hidden=16)
    torch.manual_seed(0)
    weights = None
    first_rows = {}
    for dtype in ("float32", "bfloat16"):
        worker = RolloutWorker(env=EnvConfig(id="oniray/Corridor-v0"),
                               rollout=RolloutConfig(envs_per_actor=8, fragment_length=4,
                                                     precision=dtype),
                               model=model, actor_id=0, seed=0)
        assert worker.compute_dtype == getattr(torch, dtype)
        if weights is None:
            net = PolicyNet(model, crop_size=9, num_actions=worker.num_actions)
            torch.nn.init.orthogonal_(net.policy_head.weight, gain=30.0)
            weights = {k: v.detach().numpy() for k, v in net.state_dict().items()}
        worker.set_weights(weights, version=0)
        fragment, _ = worker.sample()
        worker.close()
        first_rows[dtype] = fragment.slice(0, 8).to_pydict()  # t = 0, all 8 envs
    f32, b16 = first_rows["float32"], first_rows["bfloat16"]
    same_action = np.equal(f32["action"], b16["action"])
    assert same_action.mean() >= 0.75  # same seed, nearly the same distribution
    logp32 = np.asarray(f32["behaviour_logp"])[same_action]
    logp16 = np.asarray(b16["behaviour_logp"])[same_action]
    np.testing.assert_allclose(np.exp(logp16), np.exp(logp32), atol=MAX_TV)


@pytest.mark.parametrize("flags,want", [
    (frozenset({"avx2", "fma"}), torch.float32),
    (frozenset({"avx512f", "avx512_bf16"}), torch.bfloat16),
])
def test_auto_in_the_learner_and_the_rollout_worker_follows_the_cpu_flags(
        monkeypatch, flags, want) -> None:
    """Both branches of precision=auto, whatever CPU runs the test: the flags are simulated."""
    from actors.config import EnvConfig, RolloutConfig
    from actors.rollout_worker import RolloutWorker
    from cluster.config import OniConfig
    from learner.appo import Learner

    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    cfg = OniConfig()
    assert cfg.learner.precision == "auto" and cfg.rollout.precision == "auto"
    assert Learner(cfg, num_actions=23).compute_dtype == want
    worker = RolloutWorker(env=EnvConfig(id="oniray/Corridor-v0"),
                           rollout=RolloutConfig(envs_per_actor=2, fragment_length=4),
                           model=ModelConfig(), actor_id=0, seed=0)
    assert worker.compute_dtype == want
    worker.close()
