"""Environments by id, the observation encoding and the rollout worker (real NLE, no Ray)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from actors.config import EnvConfig, ModelConfig, RolloutConfig
from actors.corridor import GLYPH_AGENT, CorridorEnv
from actors.envs import (
    OBSERVATION_KEYS,
    ObsEncoder,
    UnknownEnvError,
    canonical_env_id,
    episode_succeeded,
    make_env,
    reset_seeded,
)
from actors.fragment import MAX_GLYPH, step_rows, validate_fragment
from actors.model import PolicyNet
from actors.rollout_worker import RolloutWorker
from tests.helpers.rollouts import small_worker


@pytest.mark.parametrize("env_id", ["NetHackScore-v0", "NetHackStaircase", "NetHackOracle-v0"])
def test_nle_tasks_step_with_limited_keys(env_id: str) -> None:
    env = make_env(env_id)
    obs, _ = env.reset(seed=0)
    assert set(obs) == set(OBSERVATION_KEYS)
    for _ in range(20):
        obs, reward, term, trunc, _ = env.step(env.action_space.sample())
        assert np.isfinite(reward)
        if term or trunc:
            obs, _ = env.reset()
    env.close()


def test_the_time_penalty_is_configurable() -> None:
    default, off = make_env("NetHackStaircase"), make_env("NetHackStaircase", penalty_step=0.0)
    penalties = []
    for env in (default, off):
        env.reset(seed=0)
        # "More" on a screen with no --More-- takes no game time: NLE's frozen step.
        penalties.append(env.step(0)[1])
        env.close()
    assert penalties == [-0.01, 0.0]


def test_unknown_env_id_is_a_clear_error() -> None:
    with pytest.raises(UnknownEnvError, match=r"unknown environment id 'NetHackScroe'.*known:"):
        canonical_env_id("NetHackScroe")


def test_crop_is_centred_on_the_agent_and_padded() -> None:
    env = CorridorEnv(length=6)
    obs, _ = env.reset()
    enc = ObsEncoder(9).encode([obs])
    assert enc.glyph_crop.shape == (1, 9, 9)
    assert enc.glyph_crop[0, 4, 4] == GLYPH_AGENT
    # The agent sits at column 1: the crop's leftmost columns fall outside the map.
    assert (enc.glyph_crop[0, :, :3] == MAX_GLYPH).all()
    assert enc.blstats.dtype == np.float32 and enc.messages == [""]


def test_batched_crops_equal_one_crop_per_env_at_every_position() -> None:
    # The encoder crops all E maps at once; the slow reference crops one map at a time.
    rng = np.random.default_rng(0)
    observations = []
    for x, y in [(0, 0), (78, 20), (40, 10), (3, 19), (77, 1)]:  # corners, middle, edges
        blstats = rng.integers(0, 50, 27)
        blstats[:2] = x, y
        observations.append({"glyphs": rng.integers(0, MAX_GLYPH, (21, 79)).astype(np.int16),
                             "blstats": blstats, "message": np.zeros(256, np.uint8)})
    enc = ObsEncoder(9).encode(observations)
    for i, obs in enumerate(observations):
        x, y = int(obs["blstats"][0]), int(obs["blstats"][1])
        padded = np.pad(obs["glyphs"], 4, constant_values=MAX_GLYPH)
        np.testing.assert_array_equal(enc.glyph_crop[i], padded[y : y + 9, x : x + 9])
    assert enc.glyph_crop.dtype == np.int16 and enc.blstats.dtype == np.float32


def test_nethack_crop_centre_is_the_agent() -> None:
    env = make_env("NetHackScore-v0")
    obs, _ = env.reset(seed=1)
    enc = ObsEncoder(9).encode([obs])
    x, y = int(obs["blstats"][0]), int(obs["blstats"][1])
    assert enc.glyph_crop[0, 4, 4] == obs["glyphs"][y, x]
    env.close()


def test_corridor_rewards_reaching_the_exit() -> None:
    env = CorridorEnv(length=5)
    env.reset()
    messages, total, term = [], 0.0, False
    while not term:
        obs, reward, term, trunc, _ = env.step(1)  # east
        total += reward
        messages.append(bytes(obs["message"]).split(b"\0")[0].decode())
        assert not trunc
    assert total == 1.0 and "You see a key here." in messages and messages[-1].endswith("exit!")


def test_success_is_the_goal_status_not_the_sign_of_the_return() -> None:
    from nle.env.tasks import NetHackStaircase

    success = NetHackStaircase.StepStatus.TASK_SUCCESSFUL
    assert episode_succeeded({"end_status": success})
    assert not episode_succeeded({"end_status": NetHackStaircase.StepStatus.DEATH})
    assert not episode_succeeded({})  # NetHackScore's truncation: no goal
    env = CorridorEnv(length=3)
    env.reset()
    infos = [env.step(1)[4] for _ in range(2)]  # east, east: the exit
    assert [episode_succeeded(i) for i in infos] == [False, True]


def test_worker_reports_which_episodes_reached_the_goal() -> None:
    worker = small_worker("oniray/Corridor-v0", envs=8, length=16)
    returns, successes = [], []
    for _ in range(20):
        stats = worker.sample(random_policy=True)[1]
        returns += stats.episode_returns
        successes += stats.episode_successes
    assert len(successes) == len(returns) > 0
    # The Corridor pays 1 exactly at the goal, so here the two must agree episode by episode.
    assert successes == [r > 0 for r in returns] and any(successes) and not all(successes)


def test_worker_fragments_follow_the_contract_and_carry_over() -> None:
    worker = small_worker("oniray/Corridor-v0", envs=4, length=8)
    net = PolicyNet(worker.policy.cfg if hasattr(worker.policy, "cfg") else ModelConfig(
        glyph_embedding_dim=8, crop_channels=4, blstats_hidden=8, message_hidden=8,
        fused_hidden=16, core_hidden=16), crop_size=9, num_actions=worker.num_actions)
    worker.set_weights({k: v.numpy() for k, v in net.state_dict().items()}, version=5)
    fragments = [worker.sample()[0] for _ in range(12)]
    per_episode: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for i, fragment in enumerate(fragments):
        meta = validate_fragment(fragment)
        assert (meta.actor_id, meta.fragment_id, meta.policy_version) == (3, i, 5)
        assert meta.initial_core_state.shape == (4, 16)
        if i:  # the bootstrap rows of one fragment are the first rows of the next
            prev = fragments[i - 1]
            for col in ("glyph_crop", "episode_id", "step", "msg_count", "message"):
                assert prev.slice(8 * 4).column(col).equals(fragment.slice(0, 4).column(col))
        steps = step_rows(fragment).to_pydict()
        for ep, msg, count, step in zip(steps["episode_id"], steps["message"],
                                        steps["msg_count"], steps["step"], strict=True):
            if step == 0:
                assert ep not in per_episode  # a new episode id at every reset
            per_episode[ep][msg] += 1
            assert count == per_episode[ep][msg]  # msg_count counts within the episode
    assert len(per_episode) > 4  # episodes ended and new ones started
    assert all(ep >> 32 == 3 for ep in per_episode)


def test_worker_refuses_to_act_without_weights() -> None:
    worker = small_worker("oniray/Corridor-v0")
    with pytest.raises(RuntimeError, match="set_weights"):
        worker.sample()
    fragment, stats = worker.sample(random_policy=True)
    assert stats.env_steps == 8 * 4
    np.testing.assert_allclose(step_rows(fragment).column("behaviour_logp").to_numpy(),
                               -np.log(5), rtol=1e-6)


def _episode_fingerprints(env_id: str, level_seed: int, episodes: int = 3) -> list[bytes]:
    """The glyphs of each episode's first observation and of the one after 12 fixed steps."""
    env = make_env(env_id, max_episode_steps=50)
    rng = np.random.default_rng(level_seed)
    prints = []
    for _ in range(episodes):
        obs, _ = reset_seeded(env, rng)
        first = obs["glyphs"].tobytes()
        for action in [1, 2, 3, 4] * 3:
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        prints.append(first + obs["glyphs"].tobytes())
    env.close()
    return prints


@pytest.mark.parametrize("env_id", ["NetHackScore-v0", "MiniHack-KeyRoom-S15-v0",
                                    "MiniHack-MultiRoom-N4-v0"])
def test_a_level_seed_fixes_the_dungeon_and_the_game(env_id: str) -> None:
    # NetHack draws its dungeon (and MiniGrid tasks their map) from RNGs that
    # reset(seed=...) never touches: without reset_seeded these differ between calls.
    first = _episode_fingerprints(env_id, level_seed=5)
    assert _episode_fingerprints(env_id, level_seed=5) == first
    assert len(set(first)) == len(first), "each episode of one stream is a new level"
    other = _episode_fingerprints(env_id, level_seed=6)
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_one_worker_seed_plays_the_same_levels_twice() -> None:
    def first_glyphs(seed: int) -> list[np.ndarray]:
        worker = RolloutWorker(env=EnvConfig(id="MiniHack-MultiRoom-N4-v0"),
                               rollout=RolloutConfig(envs_per_actor=3, fragment_length=8),
                               model=ModelConfig(), actor_id=0, seed=seed)
        # The crop around the agent and its position (blstats x, y) on the map.
        glyphs = [np.concatenate([worker.obs.glyph_crop[e].ravel(), worker.obs.blstats[e, :2]])
                  for e in range(worker.num_envs)]
        worker.close()
        return glyphs

    once, twice, other = first_glyphs(11), first_glyphs(11), first_glyphs(12)
    assert all(np.array_equal(a, b) for a, b in zip(once, twice, strict=True))
    assert not np.array_equal(once[0], once[1]), "each env of a worker plays its own level"
    assert any(not np.array_equal(a, b) for a, b in zip(once, other, strict=True))
