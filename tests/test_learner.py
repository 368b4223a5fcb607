"""The APPO learner without Ray: known answers, value learning, weights and checkpoints."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from cluster.config import OniConfig
from learner import appo
from learner.appo import Learner
from learner.batch import Batch, fragment_tensors, make_batch
from learner.vtrace import vtrace
from tests.helpers.fragments import make_fragment
from tests.helpers.learner_cfg import plain_learner_config

A = 23


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _cfg(**learner: float) -> OniConfig:
    # Known answers of APPO's own loss; tests/test_stabilisers.py checks each stabiliser
    # against it.
    return plain_learner_config(**learner)


def _params(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.model.named_parameters()}


def _on_policy(learner: Learner, fragment: pa.RecordBatch) -> pa.RecordBatch:
    """The fragment with behaviour_logp replaced by the learner's own log-probabilities."""
    x = fragment_tensors(fragment)
    with torch.no_grad():
        out = learner.model(x.obs(), x.first, x.initial_core_state)
    logp = torch.log_softmax(out.logits, -1).gather(-1, x.action[..., None]).squeeze(-1)
    column = pa.array(logp.reshape(-1).numpy())
    i = fragment.schema.get_field_index("behaviour_logp")
    return fragment.set_column(i, fragment.schema.field(i), column)


def test_on_policy_update_known_answers() -> None:
    """On-policy data: ratios are 1, V-trace targets are the n-step returns of the model's own
    values, and Adam's first step moves every parameter by at most lr (by ~lr where the
    gradient is not tiny), as RLlib's known-answer tests check."""
    cfg = _cfg(lr=1e-3, gamma=0.9)
    cfg.rewards.extrinsic_coef = 0.5
    learner = Learner(cfg, num_actions=A)
    fragment = _on_policy(learner, make_fragment(T=8, E=4, seed=0))
    x = fragment_tensors(fragment)
    with torch.no_grad():
        values = learner.model(x.obs(), x.first, x.initial_core_state).values
    # n-step returns: bootstrap from row T, cut at terminated, restarted from the actor's
    # value of the cut-off observation at truncated, reward * c_ext.
    assert x.truncated[:8].any() and x.terminated[:8].any()  # both kinds of end are here
    ret, returns = values[8], torch.empty(8, 4)
    for t in reversed(range(8)):
        future = torch.where(x.terminated[t], 0.0, ret)
        future = torch.where(x.truncated[t], x.truncation_value[t], future)
        ret = 0.5 * x.reward[t] + 0.9 * future
        returns[t] = ret
    before = _params(learner)

    m = learner.update(make_batch([fragment]))

    assert m[appo.MEAN_RATIO] == pytest.approx(1.0, abs=1e-5)
    assert m[appo.CLIP_FRACTION] == 0.0
    assert m[appo.MEAN_VTRACE_TARGET] == pytest.approx(returns.mean().item(), rel=1e-5)
    assert m[appo.VALUE_LOSS] == pytest.approx(
        0.5 * (values[:8] - returns).pow(2).mean().item(), rel=1e-5
    )
    assert m[appo.MEAN_REWARD] == pytest.approx(0.5 * x.reward[:8].mean().item(), rel=1e-6)
    assert m[appo.ENV_STEPS] == 32 and m[appo.ENV_STEPS_TRAINED] == 32
    assert m[appo.POLICY_VERSION] == 1 == learner.policy_version
    moves = torch.cat([(p - before[k]).abs().flatten() for k, p in _params(learner).items()])
    assert moves.max().item() == pytest.approx(1e-3, rel=1e-3)
    assert (moves <= 1e-3 * (1 + 1e-4)).all()


@pytest.mark.parametrize("normalize", [False, True])
def test_normalized_advantages_leave_an_on_policy_surrogate_at_zero(normalize: bool) -> None:
    """On-policy every ratio is 1, so the surrogate is -mean(A): zero once the advantages are
    normalized (mean 0), -mean of V-trace's advantages without; and normalized, the policy
    gradient no longer grows with the reward's scale."""
    cfg = _cfg(normalize_advantages=normalize)
    cfg.rewards.extrinsic_coef = 10.0
    learner = Learner(cfg, num_actions=A)
    fragment = _on_policy(learner, make_fragment(T=8, E=4, seed=0))
    batch = make_batch([fragment])
    raw = -_advantages(learner, batch).mean().item()
    assert abs(raw) > 1e-3  # the check below would pass vacuously otherwise

    m = learner.update(batch)

    assert m[appo.POLICY_LOSS] == pytest.approx(0.0 if normalize else raw, abs=1e-6, rel=1e-5)


def _advantages(learner: Learner, batch: Batch) -> torch.Tensor:
    """V-trace's policy-gradient advantages of the batch under the learner's current weights."""
    rewards = learner._rewards(batch, judged=None, novelty=None)
    rows = batch.rows
    with torch.no_grad():
        out = learner.model(rows.obs(), rows.first, rows.initial_core_state)
    T, lc = batch.length, learner.cfg.learner
    logp = torch.log_softmax(out.logits[:T], -1).gather(-1, batch.action[..., None]).squeeze(-1)
    return vtrace(
        behaviour_logp=batch.behaviour_logp, target_logp=logp, rewards=rewards,
        discounts=lc.gamma * (~batch.terminated).float(), values=out.values[:T],
        bootstrap_value=out.values[T], truncated=batch.truncated,
        truncation_values=batch.truncation_value, rho_clip=lc.vtrace_rho_clip,
        c_clip=lc.vtrace_c_clip, pg_rho_clip=lc.vtrace_rho_clip,
    ).pg_advantages


def test_values_move_towards_the_returns() -> None:
    # Every episode is 4 steps of reward 1 (and the step is in blstats), so the value of
    # episode step k is 1 + 0.9 + ... = (1 - 0.9 ** (4 - k)) / 0.1.
    cfg = _cfg(lr=1e-3, gamma=0.9)
    cfg.rewards.extrinsic_coef = 1.0
    learner = Learner(cfg, num_actions=A)

    def fragment(seed: int) -> pa.RecordBatch:
        return make_fragment(T=12, E=8, seed=seed, episode_length=4, reward=1.0)

    held_out = fragment_tensors(fragment(10_000))
    true_values = (1 - 0.9 ** (4 - held_out.step[:12].float())) / 0.1

    def error() -> float:
        with torch.no_grad():
            out = learner.model(held_out.obs(), held_out.first, held_out.initial_core_state)
        return (out.values[:12] - true_values).pow(2).mean().item()

    start = error()
    for seed in range(40):
        learner.update(make_batch([fragment(seed)]))
    assert error() < 0.2 * start, (start, error())


def test_intrinsic_terms_are_combined_with_counts_of_the_next_observation_and_masked() -> None:
    cfg = _cfg()
    cfg.rewards.extrinsic_coef, cfg.rewards.intrinsic_coef = 0.0, 2.0
    cfg.rewards.count_exponent = 1.0
    learner = Learner(cfg, num_actions=A)
    fragment = make_fragment(T=8, E=4, seed=1)
    x = fragment_tensors(fragment)
    # r_t = 2 * 1 / msg_count[t + 1], and 0 where step t ended its episode.
    done = (x.terminated | x.truncated)[:8]
    assert 0 < done.sum() < done.numel()  # the mask matters in this fragment
    want = (2.0 / x.msg_count[1:].float() * (~done).float()).mean().item()
    m = learner.update(make_batch([fragment]), judged=torch.ones(8, 4))
    assert m[appo.MEAN_REWARD] == pytest.approx(want, rel=1e-6)
    # RND's term is masked by the same rule: 0.5 more where the step did not end an episode.
    cfg.rewards.rnd.coef = 0.5
    both = Learner(cfg, num_actions=A).update(
        make_batch([fragment]), judged=torch.ones(8, 4), novelty=torch.ones(8, 4)
    )
    want = ((2.0 / x.msg_count[1:].float() + 0.5) * (~done).float()).mean().item()
    assert both[appo.MEAN_REWARD] == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match=r"judged is \(9, 4\), expected \(8, 4\)"):
        learner.update(make_batch([fragment]), judged=torch.ones(9, 4))


def test_one_version_per_update_whatever_the_epochs() -> None:
    learner = Learner(_cfg(epochs=3), num_actions=A)
    fragments = [make_fragment(T=4, E=2, seed=2), make_fragment(T=4, E=2, seed=3)]
    before = _params(learner)
    learner.update(make_batch(fragments))
    assert learner.policy_version == 1 and learner.env_steps_trained == 16
    # Three Adam steps: some parameter moved by more than one step's lr can.
    moves = torch.cat([(p - before[k]).abs().flatten() for k, p in _params(learner).items()])
    assert moves.max().item() > 1.5 * 4e-4


def test_weights_are_published_as_copies() -> None:
    learner = Learner(_cfg(), num_actions=A)
    weights = learner.get_weights()
    snapshot = {k: v.copy() for k, v in weights.items()}
    learner.update(make_batch([make_fragment(T=4, E=2, seed=4)]))
    assert all((weights[k] == snapshot[k]).all() for k in weights)  # untouched by training
    other = Learner(_cfg(), num_actions=A)
    other.set_weights(learner.get_weights())
    for k, v in other.model.state_dict().items():
        assert torch.equal(v, learner.model.state_dict()[k]), k


def test_checkpoint_round_trip_continues_identically(tmp_path) -> None:
    cfg = _cfg()
    learner = Learner(cfg, num_actions=A)
    learner.update(make_batch([make_fragment(T=4, E=2, seed=5)]))
    torch.save(learner.state(), tmp_path / "ckpt.pt")

    restored = Learner(cfg, num_actions=A)
    restored.load_state(torch.load(tmp_path / "ckpt.pt", weights_only=False))
    assert restored.policy_version == 1 and restored.env_steps_trained == 8
    # The same next update from the same state (Adam moments included) -> same parameters.
    nxt = make_fragment(T=4, E=2, seed=6)
    learner.update(make_batch([nxt]))
    restored.update(make_batch([nxt]))
    for k, v in _params(learner).items():
        assert torch.equal(v, _params(restored)[k]), k
