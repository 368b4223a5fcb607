"""MiniHack tasks: ids, goals for the judge, and real rollouts through the Ray rollout actors."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from actors import minihack_envs
from actors.envs import UnknownEnvError, canonical_env_id, episode_end, has_goal, make_env
from actors.fragment import MAX_GLYPH, step_rows, validate_fragment
from actors.model import PolicyNet
from actors.rollout_worker import RolloutWorker
from actors.versioned import VersionedRef
from cluster.components import rollout_actor
from cluster.config import ConfigError, load_config
from rewards.prompts import MINIHACK_GENERIC_TASK, load_prompts, task_for_env

SMALL_MODEL = [
    "model.glyph_embedding_dim=8", "model.crop_channels=4", "model.blstats_hidden=8",
    "model.message_hidden=8", "model.fused_hidden=16", "model.core_hidden=16",
]


def minihack_config(env_id: str, *extra: str):
    return load_config("configs/corridor.yaml", [
        f"env.id={env_id}", "env.penalty_step=-0.001", "rollout.envs_per_actor=2",
        "rollout.fragment_length=16", "learner.batch_size=128", *SMALL_MODEL, *extra,
    ])


def test_every_registered_id_runs_or_says_why_not() -> None:
    ids = minihack_envs.registered_ids()
    assert len(ids) == 161  # minihack 1.0.2
    refused = {}
    for env_id in ids:
        try:
            assert canonical_env_id(env_id) == env_id
        except UnknownEnvError as exc:
            refused[env_id] = str(exc)
    # Two templates need a level description; Boxoban needs maps that are downloaded apart.
    expected = {"MiniHack-Navigation-Custom-v0", "MiniHack-Skill-Custom-v0"}
    if not minihack_envs._boxoban_levels_path().is_dir():
        expected |= {"MiniHack-Boxoban-Hard-v0", "MiniHack-Boxoban-Medium-v0",
                     "MiniHack-Boxoban-Unfiltered-v0"}
        assert "download_boxoban_levels" in refused["MiniHack-Boxoban-Hard-v0"]
    assert set(refused) == expected, refused
    assert "des_file" in refused["MiniHack-Skill-Custom-v0"]
    assert canonical_env_id("MiniHack-Room-5x5") == "MiniHack-Room-5x5-v0"
    assert all(has_goal(i) for i in ids if i not in refused)
    assert not has_goal("NetHackScore-v0") and has_goal("NetHackStaircase-v0")


def test_config_accepts_minihack_ids_and_names_typos() -> None:
    cfg = minihack_config("MiniHack-KeyRoom-S15")
    assert cfg.env.id == "MiniHack-KeyRoom-S15" and cfg.env.penalty_step == -0.001
    with pytest.raises(ConfigError, match=r"'env\.id' = 'MiniHack-KeyRom-S15'.*no such task"):
        minihack_config("MiniHack-KeyRom-S15")


@pytest.mark.parametrize(
    ("env_id", "task"),
    [
        ("MiniHack-KeyRoom-S15-v0", "minihack_keyroom"),
        ("MiniHack-KeyRoom-Dark-S5-v0", "minihack_keyroom"),
        ("MiniHack-Room-5x5-v0", "minihack_room"),
        ("MiniHack-MultiRoom-N4-v0", "minihack_room"),
        ("MiniHack-Corridor-R3-v0", "minihack_corridor"),
        ("MiniHack-MazeWalk-9x9-v0", "minihack_maze"),
        ("MiniHack-River-Narrow-v0", "minihack_river"),
        ("MiniHack-MultiRoom-N2-Lava-v0", "minihack_lava"),  # lava before rooms
        ("MiniHack-Quest-Hard-v0", "minihack_quest"),
        ("MiniHack-Wear-Fixed-v0", "minihack_skill"),
        ("MiniHack-Memento-F2-v0", MINIHACK_GENERIC_TASK),
    ],
)
def test_minihack_families_map_to_goals(env_id: str, task: str) -> None:
    assert task_for_env(env_id) == task


def test_every_minihack_id_has_a_goal_that_names_its_task() -> None:
    prompts = load_prompts()
    for env_id in minihack_envs.registered_ids():
        assert task_for_env(env_id) in prompts.goals, env_id
    assert "key" in prompts.goal("minihack_keyroom") and "locked" in prompts.goal(
        "minihack_keyroom")
    # No MiniHack message is a few-shot example: the judge is not tuned to the task.
    texts = [e.text for e in prompts.examples]
    assert not any("Master Key" in t or "key named" in t for t in texts)


def test_minigrid_crossings_build_despite_minihack_passing_width() -> None:
    # minihack 1.0.2 passes width/height to MiniGrid's square CrossingEnv, which refuses them.
    for env_id in ("MiniHack-LavaCrossingS9N1-v0", "MiniHack-SimpleCrossingS9N1-v0"):
        env = make_env(env_id)
        obs, _ = env.reset(seed=0)
        assert obs["glyphs"].shape == (21, 79)
        env.step(0)
        env.close()


def test_episode_limit_and_penalty_reach_the_environment() -> None:
    # gym.make would keep max_episode_steps for its own wrapper: the env must get it.
    env = make_env("MiniHack-Room-15x15-v0", max_episode_steps=7, penalty_step=-0.5)
    env.reset(seed=0)
    assert env._max_episode_steps == 7 and env.penalty_step == -0.5
    env.close()
    nle = make_env("NetHackScore-v0", max_episode_steps=5)
    nle.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, term, trunc, _ = nle.step(nle.action_space.sample())
        steps, done = steps + 1, term or trunc
    assert steps <= 5
    nle.close()


@pytest.mark.parametrize("env_id", ["MiniHack-KeyRoom-S15-v0", "NetHackScore-v0"])
def test_a_step_limit_is_a_truncation_not_a_termination(env_id: str) -> None:
    # NLE itself says terminated=True, truncated=False at its step limit (end_status ABORTED):
    # episode_end turns that into a truncation, the one place oniray reads it.
    env = make_env(env_id, max_episode_steps=6, penalty_step=0.0)
    env.reset(seed=0)
    for step in range(1, 7):
        # 'wait' ('s' = search, action 0 is 'more'/noop-like): nothing ends a room by itself
        _, _, term, trunc, info = env.step(0)
        if step < 6:
            assert not (term or trunc), step
    assert (term, trunc) == (True, False)  # what NLE reports
    assert episode_end(term, trunc, info) == (False, True)
    assert episode_end(True, False, {"end_status": 1}) == (True, False)  # a death stays one
    env.close()


def test_the_worker_values_the_observation_a_time_limit_cut_off() -> None:
    cfg = minihack_config("MiniHack-Room-15x15-v0", "env.max_episode_steps=5",
                          "env.penalty_step=0", "rollout.fragment_length=12",
                          "learner.batch_size=120")
    worker = RolloutWorker(env=cfg.env, rollout=cfg.rollout, model=cfg.model, actor_id=0,
                           seed=0)
    worker.set_weights({k: v.numpy() for k, v in worker.policy.state_dict().items()}, 0)
    x = step_rows(worker.sample()[0])
    truncated = np.array(x.column("truncated").to_pylist()).reshape(12, 2)
    terminated = np.array(x.column("terminated").to_pylist()).reshape(12, 2)
    value = np.array(x.column("truncation_value").to_pylist()).reshape(12, 2)
    worker.close()
    # 5-step episodes in a 15x15 room: steps 4 and 9 of both envs are time limits.
    assert truncated[[4, 9]].all() and truncated.sum() == 4 and not terminated.any()
    assert (value[truncated] != 0).all() and (value[~truncated] == 0).all()


def test_success_on_a_room_is_the_goal_status() -> None:
    """Room-5x5 pays 1 exactly when the stairs are reached: with no step penalty, success
    (read from end_status) and a positive return must agree episode by episode."""
    cfg = minihack_config("MiniHack-Room-5x5-v0", "env.max_episode_steps=25",
                          "env.penalty_step=0", "rollout.envs_per_actor=4")
    worker = RolloutWorker(env=cfg.env, rollout=cfg.rollout, model=cfg.model, actor_id=0,
                           seed=0)
    returns, successes = [], []
    for _ in range(15):
        stats = worker.sample(random_policy=True)[1]
        returns += stats.episode_returns
        successes += stats.episode_successes
    worker.close()
    assert len(returns) > 5
    assert successes == [r > 0 for r in returns] and any(successes) and not all(successes)


@pytest.mark.parametrize(
    "env_id", ["MiniHack-KeyRoom-S5-v0", "MiniHack-Room-5x5-v0", "MiniHack-Corridor-R2-v0"]
)
def test_rollout_actor_steps_minihack_into_valid_fragments(ray_session, env_id: str) -> None:
    cfg = minihack_config(env_id, "env.max_episode_steps=20", "rewards.annotator.enabled=true",
                          "rewards.model.kind=retrieval")
    actor = rollout_actor(cfg, actor_id=1, extract_captions=True)
    try:
        info = ray.get(actor.info.remote())
        expected_actions = make_env(env_id).action_space.n
        assert info["num_actions"] == expected_actions
        net = PolicyNet(cfg.model, crop_size=cfg.env.crop_size, num_actions=expected_actions)
        weights = ray.put({k: v.numpy() for k, v in net.state_dict().items()})
        messages: set[str] = set()
        episodes = 0
        for i in range(3):  # 3 x 16 steps: every 20-step episode ends at least once
            fragment_ref, stats_ref, captions_ref = actor.sample.remote(VersionedRef(4, weights))
            fragment, stats, captions = ray.get([fragment_ref, stats_ref, captions_ref])
            meta = validate_fragment(fragment)
            assert (meta.fragment_id, meta.policy_version, meta.num_envs) == (i, 4, 2)
            rows = step_rows(fragment)
            actions = rows.column("action").to_numpy()
            assert ((actions >= 0) & (actions < expected_actions)).all()
            crops = np.asarray(rows.column("glyph_crop").to_numpy_ndarray())
            centre = crops[:, cfg.env.crop_size // 2, cfg.env.crop_size // 2]
            assert (centre != MAX_GLYPH).all()  # the agent stands inside the map
            messages |= set(captions.to_pylist())
            episodes += len(stats.episode_returns)
            assert len(stats.episode_successes) == len(stats.episode_returns)
        assert episodes >= 2
        assert any(m for m in messages)  # MiniHack prints messages into the message column
    finally:
        ray.get(actor.shutdown.remote())
        ray.kill(actor)
