"""The learner's stabilisers and update diagnostics (issue 28), against hand-computed values.

Each test starts from the plain learner (every stabiliser off) and turns on the one it checks;
the defaults (whitening floored at 1.0, value clip 1.0: issue 28's pilots) are tested as such.
Each test here fails if its key stops doing what its doc says. Pure math first
(learner.stabilisers, learner.losses), then the APPO learner with each key on (float32 pinned:
known answers), then the defaults and the presets at config load.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from cluster.config import ConfigError, OniConfig, load_config
from learner import appo
from learner.appo import Learner
from learner.batch import make_batch
from learner.losses import clipped_value_loss, normalized_advantages, value_loss
from learner.stabilisers import (
    MIN_LR,
    RewardNormaliser,
    adapt_kl_coef,
    adapt_lr,
    approx_kl,
    explained_variance,
)
from learner.vtrace import vtrace
from tests.helpers.fragments import make_fragment
from tests.helpers.learner_cfg import plain_learner_config

A = 23
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _cfg(**learner: object) -> OniConfig:
    """The plain learner (every stabiliser off) with ``learner``'s keys on: each test turns on
    the stabiliser it checks, against the loss without it."""
    return plain_learner_config(**learner)


# ---- pure functions ------------------------------------------------------------------------
def test_approx_kl_is_k3_of_the_taken_actions() -> None:
    # rho = 0.5 / 0.25 = 2: (2 - 1) - ln 2 = 0.306853; rho = 0.25 / 0.5: -0.5 + ln 2 = 0.193147
    logp = torch.log(torch.tensor([0.5, 0.25]))
    behaviour = torch.log(torch.tensor([0.25, 0.5]))
    assert approx_kl(logp, behaviour).item() == pytest.approx(0.25, abs=1e-6)
    assert approx_kl(behaviour, behaviour).item() == 0.0  # on-policy: no divergence


def test_explained_variance_by_hand() -> None:
    # targets [1, 2, 4]: mean 7/3, var (16 + 1 + 25) / 27 = 14/9; residual [0, 0, 1]: var 2/9
    values, targets = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0])
    assert explained_variance(values, targets).item() == pytest.approx(1 - (2 / 9) / (14 / 9))
    assert math.isnan(explained_variance(values, torch.ones(3)).item())


def test_kl_adaptive_lr_and_penalty_rules() -> None:
    # target 0.01: act above 0.02 and below 0.005, by 1.5 (penalty: x1.5 / x0.5)
    assert adapt_lr(3e-4, kl=0.03, target=0.01, max_lr=4e-4) == pytest.approx(2e-4)
    assert adapt_lr(2e-4, kl=0.004, target=0.01, max_lr=4e-4) == pytest.approx(3e-4)
    assert adapt_lr(3e-4, kl=0.004, target=0.01, max_lr=4e-4) == 4e-4  # never above learner.lr
    assert adapt_lr(3e-4, kl=0.01, target=0.01, max_lr=4e-4) == 3e-4
    assert adapt_lr(1.2e-6, kl=1.0, target=0.01, max_lr=4e-4) == MIN_LR
    assert adapt_kl_coef(0.2, kl=0.03, target=0.01) == pytest.approx(0.3)
    assert adapt_kl_coef(0.2, kl=0.004, target=0.01) == pytest.approx(0.1)
    assert adapt_kl_coef(0.2, kl=0.01, target=0.01) == 0.2


def test_clipped_value_loss_by_hand_and_its_gradient() -> None:
    # step 0: V 2, V_old 0, target 3, clip 1: V_clip = 1; max((2-3)^2, (1-3)^2) = 4, and the
    # clipped branch is saturated: no gradient. Step 1: V 0 = V_old, target -0.5: 0.25.
    # loss = 0.5 * (4 + 0.25) / 2 = 1.0625; dL/dV1 = 0.5 * 2 * 0.5 / 2 = 0.25
    values = torch.tensor([2.0, 0.0], requires_grad=True)
    loss = clipped_value_loss(values=values, targets=torch.tensor([3.0, -0.5]),
                              old_values=torch.zeros(2), clip=1.0)
    assert loss.item() == pytest.approx(1.0625)
    loss.backward()
    assert values.grad.tolist() == pytest.approx([0.0, 0.25])
    # A radius nothing reaches is the plain squared error.
    plain = value_loss(values=values, targets=torch.tensor([3.0, -0.5]))
    wide = clipped_value_loss(values=values, targets=torch.tensor([3.0, -0.5]),
                              old_values=torch.zeros(2), clip=100.0)
    assert wide.item() == pytest.approx(plain.item())


def test_whitening_floor_keeps_a_reward_less_batch_small() -> None:
    # A = [1, -1, 3, -3] * 1e-4: mean 0, var (1 + 1 + 9 + 9) / 4 * 1e-8 = 5e-8, std 2.236e-4.
    a = torch.tensor([1.0, -1.0, 3.0, -3.0]) * 1e-4
    mean, var = 0.0, 5e-8
    whitened = normalized_advantages(a, mean=mean, variance=var)
    # 3e-4 / (2.236e-4 + 1e-8) = 1.3416: a reward-less batch scaled up to unit size
    assert whitened.abs().max().item() == pytest.approx(3e-4 / (math.sqrt(5e-8) + 1e-8), rel=1e-5)
    floored = normalized_advantages(a, mean=mean, variance=var, std_floor=1.0)
    assert floored.tolist() == pytest.approx((a / (1.0 + 1e-8)).tolist())  # stays ~3e-4
    # Above the floor, the floor changes nothing.
    big = torch.tensor([1.0, -1.0, 3.0, -3.0])
    assert torch.equal(normalized_advantages(big, mean=0.0, variance=5.0, std_floor=1e-3),
                       normalized_advantages(big, mean=0.0, variance=5.0))


def test_reward_normaliser_by_hand_and_across_fragments() -> None:
    # gamma 0.5, one stream, rewards 1, 0, 2 with an episode end after step 1:
    # R = 1, 0 + 0.5 * 1 = 0.5, then a new episode: 2. Mean 7/6, var 7/18, std 0.623610.
    norm = RewardNormaliser(gamma=0.5, floor=0.01)
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    done = torch.tensor([[False], [True], [False]])
    scaled, scale = norm(rewards, done=done, streams=[7])
    assert scale == pytest.approx(math.sqrt(7 / 18))
    assert scaled[:, 0].tolist() == pytest.approx([1 / scale, 0.0, 2 / scale])
    # The next fragment of stream 7 continues its return: R = 1 + 0.5 * 2 = 2; values
    # {1, 0.5, 2, 2}: mean 1.375, var 0.421875.
    _, scale = norm(torch.tensor([[1.0]]), done=torch.tensor([[False]]), streams=[7])
    assert scale == pytest.approx(math.sqrt(0.421875))
    # A reward-less start is divided by the floor, not blown up by a zero std.
    fresh = RewardNormaliser(gamma=0.5, floor=0.01)
    _, scale = fresh(torch.zeros(3, 2), done=torch.zeros(3, 2, dtype=torch.bool), streams=[0, 1])
    assert scale == 0.01


def test_vtrace_is_unchanged_by_a_reward_scale_with_a_truncation() -> None:
    """Why reward normalisation needs no change to V-trace: divide the rewards, the values,
    the bootstrap and the truncation values by c and the targets are divided by c.

    gamma 0.9, on-policy (rho = c = 1), r = [1, 0, 2], V = [0.5, 1, 1.5], bootstrap 2, step 1
    cut by a time limit with V(cut-off state) = 3. Next values [1, 3, 2]; deltas
    [1 + 0.9 - 0.5, 0 + 2.7 - 1, 2 + 1.8 - 1.5] = [1.4, 1.7, 2.3]; no carry across step 1:
    v_2 = 1.5 + 2.3 = 3.8, v_1 = 1 + 1.7 = 2.7, v_0 = 0.5 + 1.4 + 0.9 * 1.7 = 3.43;
    advantages [1 + 0.9 * 2.7 - 0.5, 0 + 0.9 * 3 - 1, 2 + 0.9 * 2 - 1.5] = [2.93, 1.7, 2.3].
    """
    def targets(c: float):
        zeros = torch.zeros(3, 1)
        return vtrace(behaviour_logp=zeros, target_logp=zeros,
                      rewards=torch.tensor([[1.0], [0.0], [2.0]]) / c,
                      discounts=torch.full((3, 1), 0.9),
                      values=torch.tensor([[0.5], [1.0], [1.5]]) / c,
                      bootstrap_value=torch.tensor([2.0]) / c,
                      truncated=torch.tensor([[False], [True], [False]]),
                      truncation_values=torch.tensor([[0.0], [3.0], [0.0]]) / c)

    plain, scaled = targets(1.0), targets(4.0)
    assert plain.vs[:, 0].tolist() == pytest.approx([3.43, 2.7, 3.8])
    assert plain.pg_advantages[:, 0].tolist() == pytest.approx([2.93, 1.7, 2.3])
    assert scaled.vs[:, 0].tolist() == pytest.approx([3.43 / 4, 2.7 / 4, 3.8 / 4])
    assert scaled.pg_advantages[:, 0].tolist() == pytest.approx([2.93 / 4, 1.7 / 4, 2.3 / 4])


# ---- the learner with each key on ------------------------------------------------------------
def _batch(seed: int = 0, **kw: object):
    return make_batch([make_fragment(T=8, E=4, seed=seed, **kw)])


def test_update_reports_its_size() -> None:
    """Every diagnostic of issue 28, with its hand-checkable relation."""
    cfg = _cfg(max_grad_norm=1e-3)
    learner = Learner(cfg, num_actions=A)
    m = learner.update(_batch())
    assert m[appo.KL] > 0  # off-policy fixture: the behaviour policy is not the net
    assert m[appo.LR] == cfg.learner.lr
    norm = m[appo.GRAD_NORM]
    assert norm > 1e-3  # so clipping acted: the gradients became norm * 1e-3 / (norm + 1e-6)
    assert m[appo.GRAD_NORM_CLIPPED] == pytest.approx(norm * 1e-3 / (norm + 1e-6), rel=1e-6)
    stepped = torch.cat([p.grad.reshape(-1) for p in learner.model.parameters()
                         if p.grad is not None]).norm().item()  # what Adam was given
    assert m[appo.GRAD_NORM_CLIPPED] == pytest.approx(stepped, rel=1e-4)
    assert m[appo.ADVANTAGE_STD] > 0 and math.isfinite(m[appo.ADVANTAGE_MEAN])
    assert m[appo.EXPLAINED_VARIANCE] <= 1.0
    for key in (appo.KL_COEF, appo.REWARD_NORM_SCALE):  # their stabilisers are off
        assert key not in m
    # Below the bound the optimiser steps with the norm itself.
    m = Learner(_cfg(), num_actions=A).update(_batch())
    assert m[appo.GRAD_NORM_CLIPPED] == pytest.approx(m[appo.GRAD_NORM])


def test_reward_scale_multiplies_the_whole_reward() -> None:
    # constant extrinsic reward 1, c_ext 10, no intrinsic term: the trained mean is 10 * scale
    scaled = Learner(_cfg(reward_scale=0.25), num_actions=A).update(_batch(reward=1.0))
    plain = Learner(_cfg(), num_actions=A).update(_batch(reward=1.0))
    cfg = _cfg()
    assert plain[appo.MEAN_REWARD] == pytest.approx(cfg.rewards.extrinsic_coef)
    assert scaled[appo.MEAN_REWARD] == pytest.approx(0.25 * cfg.rewards.extrinsic_coef)


def test_value_clip_changes_the_value_loss() -> None:
    # The fixture's acting values are 0 and the net's are not: with a radius nothing
    # reaches, the loss is the plain one; with a tiny radius the clipped branch dominates.
    plain = Learner(_cfg(), num_actions=A).update(_batch())
    wide = Learner(_cfg(value_clip=1e6), num_actions=A).update(_batch())
    tight = Learner(_cfg(value_clip=1e-6), num_actions=A).update(_batch())
    assert wide[appo.VALUE_LOSS] == pytest.approx(plain[appo.VALUE_LOSS])
    assert tight[appo.VALUE_LOSS] >= plain[appo.VALUE_LOSS]
    assert tight[appo.VALUE_LOSS] != pytest.approx(plain[appo.VALUE_LOSS])


@pytest.mark.parametrize("guard", ["lr", "penalty"])
def test_kl_guard_adapts_and_survives_a_checkpoint(guard: str) -> None:
    # A target far below the fixture's KL: after one update lr is 4e-4 / 1.5 (or the penalty
    # 0.2 * 1.5), and a learner restored from the checkpoint continues from there.
    cfg = _cfg(kl_target=1e-9, kl_guard=guard)
    learner = Learner(cfg, num_actions=A)
    first = learner.update(_batch(0))
    second = learner.update(_batch(1))
    if guard == "lr":
        assert first[appo.LR] == cfg.learner.lr
        assert second[appo.LR] == pytest.approx(cfg.learner.lr / 1.5)
        assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.learner.lr / 2.25)
    else:
        assert first[appo.KL_COEF] == pytest.approx(0.2)
        assert second[appo.KL_COEF] == pytest.approx(0.3)
        assert first[appo.LR] == second[appo.LR] == cfg.learner.lr
    restored = Learner(cfg, num_actions=A)
    restored.load_state(learner.state())
    assert (restored.lr, restored.kl_coef) == (learner.lr, learner.kl_coef)
    assert restored.optimizer.param_groups[0]["lr"] == learner.lr


def test_normalized_rewards_are_divided_by_the_kept_scale() -> None:
    cfg = _cfg(normalize_rewards=True)
    learner = Learner(cfg, num_actions=A)
    m = learner.update(_batch(reward=1.0))
    # every step pays c_ext = 10: the trained mean is 10 / the scale the update reports
    assert m[appo.MEAN_REWARD] == pytest.approx(cfg.rewards.extrinsic_coef
                                                / m[appo.REWARD_NORM_SCALE])
    assert m[appo.REWARD_NORM_SCALE] > 0.01
    restored = Learner(cfg, num_actions=A)
    restored.load_state(learner.state())
    assert restored.reward_normaliser.state() == learner.reward_normaliser.state()
    assert (restored.update(_batch(1, reward=1.0))[appo.REWARD_NORM_SCALE]
            == learner.update(_batch(1, reward=1.0))[appo.REWARD_NORM_SCALE])


def test_defaults_are_the_learner_the_pilots_chose() -> None:
    """Issue 28's choice (bench/results/pilots-s15.md): whitening floored at 1.0, value clip
    1.0; every other stabiliser off."""
    lc = OniConfig().learner
    assert (lc.preset, lc.normalize_advantages, lc.advantage_std_floor, lc.value_clip,
            lc.reward_scale, lc.normalize_rewards, lc.kl_target) == ("none", True, 1.0, 1.0,
                                                                    1.0, False, None)
    shipped = load_config(REPO / "configs" / "default.yaml").learner
    assert (shipped.normalize_advantages, shipped.advantage_std_floor,
            shipped.value_clip) == (True, 1.0, 1.0)


def test_the_default_update_is_whitened_with_the_floor_and_value_clipped() -> None:
    """The default learner's update equals the plain one with the two stabilisers set by hand,
    and differs from the plain one in both losses: the acting values (5) lie more than the clip
    radius (1) from the net's, so the clipped value loss binds; the advantages' std is below
    the floor, so whitening only centres them."""
    fragment = make_fragment(T=8, E=4, seed=0)
    i = fragment.schema.get_field_index("behaviour_value")
    fragment = fragment.set_column(i, fragment.schema.field(i),
                                   pa.array(np.full(fragment.num_rows, 5.0, np.float32)))
    default = OniConfig()
    default.learner.precision = "float32"
    by_hand = _cfg(normalize_advantages=True, advantage_std_floor=1.0, value_clip=1.0)
    got = Learner(default, num_actions=A).update(make_batch([fragment]))
    want = Learner(by_hand, num_actions=A).update(make_batch([fragment]))
    plain = Learner(_cfg(), num_actions=A).update(make_batch([fragment]))
    for key in (appo.POLICY_LOSS, appo.VALUE_LOSS):
        assert got[key] == pytest.approx(want[key], rel=1e-6)
        assert got[key] != pytest.approx(plain[key], rel=1e-3, abs=1e-6)
    assert got[appo.VALUE_LOSS] > plain[appo.VALUE_LOSS]  # max(clipped, unclipped) errors


def test_plain_preset_restores_the_learner_of_the_older_tables(tmp_path: Path) -> None:
    lc = load_config(REPO / "configs" / "default.yaml", ["learner.preset=plain"]).learner
    assert (lc.normalize_advantages, lc.advantage_std_floor, lc.value_clip) == (False, 0.0,
                                                                                None)
    # a preset's key given on the command line still wins
    lc = load_config(REPO / "configs" / "default.yaml",
                     ["learner.preset=plain", "learner.value_clip=2.0"]).learner
    assert (lc.normalize_advantages, lc.value_clip) == (False, 2.0)


# ---- the preset --------------------------------------------------------------------------
def test_oni_preset_resolves_at_load_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"  # a file's own learner values: the preset replaces them
    config.write_text("learner:\n  lr: 3.0e-4\n  entropy_coef: 0.01\n  gamma: 0.99\n")
    lc = load_config(config, ["learner.preset=oni"]).learner
    assert (lc.normalize_advantages, lc.advantage_std_floor, lc.lr, lc.entropy_coef,
            lc.value_clip, lc.max_grad_norm) == (True, 1e-3, 1e-4, 0.003, 1.0, 4.0)
    assert lc.gamma == 0.99  # not the preset's: the file's
    lc = load_config(config, ["learner.preset=oni", "learner.lr=2e-4"]).learner
    assert lc.lr == 2e-4 and lc.value_clip == 1.0
    assert load_config(config).learner.lr == 3e-4  # no preset: the file's
    # in a file too
    config.write_text("learner:\n  preset: oni\n  lr: 3.0e-4\n")
    assert load_config(config).learner.lr == 1e-4


def test_a_whitening_floor_without_whitening_is_refused() -> None:
    default = REPO / "configs" / "default.yaml"
    with pytest.raises(ConfigError, match=r"learner\.advantage_std_floor"):
        load_config(default, ["learner.normalize_advantages=false",
                              "learner.advantage_std_floor=0.1"])
    # the default floor is not one anybody set: whitening off alone loads
    assert load_config(default, ["learner.normalize_advantages=false"]).learner.value_clip == 1.0


def test_stabiliser_keys_are_validated() -> None:
    for bad in ("learner.reward_scale=0", "learner.value_clip=-1", "learner.kl_guard=skip",
                "learner.preset=sf2"):
        with pytest.raises(ConfigError, match=re.escape(bad.split("=")[0])):
            load_config(REPO / "configs" / "default.yaml", [bad])


def test_behaviour_values_travel_in_the_fragment() -> None:
    from actors.fragment import FragmentBuilder, FragmentMeta

    builder = FragmentBuilder(length=1, num_envs=2, crop_size=9)
    for t in range(2):
        builder.put_obs(t, glyph_crop=np.zeros((2, 9, 9), np.int16),
                        blstats=np.zeros((2, 27), np.float32),
                        message_bytes=np.zeros((2, 256), np.uint8), messages=["", ""],
                        episode_id=np.zeros(2, np.int64), step=np.zeros(2, np.int32),
                        msg_count=np.ones(2, np.int32))
    builder.put_step(0, action=np.zeros(2, np.int64), behaviour_logp=np.zeros(2, np.float32),
                     reward=np.zeros(2, np.float32), terminated=np.zeros(2, bool),
                     truncated=np.zeros(2, bool),
                     behaviour_value=np.array([1.5, -2.0], np.float32))
    fragment = builder.build(FragmentMeta(actor_id=0, fragment_id=0, policy_version=0,
                                          length=1, num_envs=2,
                                          initial_core_state=np.zeros((2, 4), np.float32)))
    assert make_batch([fragment]).behaviour_value.tolist() == [[1.5, -2.0]]


def test_the_worker_keeps_the_value_it_acted_with() -> None:
    """The fragment's behaviour_value is the acting net's value of each row's observation:
    the learner's own forward pass over the rows, with the same weights, gives it back."""
    from actors.rollout_worker import RolloutWorker

    cfg = load_config(REPO / "configs" / "corridor.yaml",
                      ["rollout.precision=float32", "learner.precision=float32"])
    worker = RolloutWorker(env=cfg.env, rollout=cfg.rollout, model=cfg.model, actor_id=0,
                           seed=0)
    learner = Learner(cfg, num_actions=worker.num_actions)
    worker.set_weights(learner.get_weights(), 0)
    fragment, _ = worker.sample()
    worker.close()
    batch = make_batch([fragment])
    rows = batch.rows
    with torch.no_grad():
        values = learner.model(rows.obs(), rows.first, rows.initial_core_state).values
    assert batch.behaviour_value.abs().sum() > 0
    assert torch.allclose(batch.behaviour_value, values[:-1], atol=1e-5)


def test_two_ranks_decide_alike_with_every_stabiliser_on(ray_session: None) -> None:
    """Data parallel: the KL guard's learning rate, the reward normalisation's statistics and
    the parameters stay identical on both ranks, and rank 0 shows the update's size in
    Prometheus."""
    import ray

    from cluster.components import learner_group

    cfg = _cfg(num_learners=2, normalize_rewards=True, kl_target=1e-4, value_clip=0.5,
               normalize_advantages=True, advantage_std_floor=0.1, reward_scale=0.5)
    group = learner_group(cfg, num_actions=A)
    try:
        for update in range(3):
            fragments = [make_fragment(T=6, E=2, seed=10 * update + i, fragment_id=i,
                                       actor_id=i) for i in range(4)]
            ray.get(group.update([ray.put(f) for f in fragments]))
        states = ray.get([a.state.remote() for a in group.actors])
        ours, theirs = (s["stabilisers"] for s in states)
        assert (ours["lr"], ours["kl_coef"]) == (theirs["lr"], theirs["kl_coef"])
        # One running std for the group (each rank carries only its own streams' returns).
        assert ours["reward_normaliser"]["stats"] == theirs["reward_normaliser"]["stats"]
        assert ours["reward_normaliser"]["stats"]["count"] == 3 * 4 * 6 * 2  # every step
        assert states[0]["stabilisers"]["lr"] < cfg.learner.lr  # the guard acted
        for k, v in states[0]["model"].items():
            assert torch.equal(v, states[1]["model"][k]), k
        exposition = ray.get(group.actors[0].metrics.remote()).decode()
        assert 'oniray_learner_update_stat{actor_id="0",role="learner",stat="kl"}' in exposition
    finally:
        group.shutdown()
