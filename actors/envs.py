"""Environments by id, and the observation encoding the policy and the fragments use.

Three families of ids: NLE's NetHack tasks, every task the ``minihack`` package registers
(``MiniHack-...``, built by ``actors.minihack_envs``), and oniray's own test Corridor.

Consumes: an ``EnvConfig``. Emits: gymnasium environments restricted to the observation keys
the model uses (``glyphs``, ``blstats``, ``message``), and :class:`EncodedObs` — the glyph crop
around the agent, bottom-line stats as float32, message bytes and the decoded message — for a
vector of such observations.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator

from actors import corridor, minihack_envs
from actors.corridor import TASK_SUCCESSFUL
from actors.fragment import MAX_GLYPH

# NLE tasks oniray knows, by the id users may write (with or without "-v0").
NLE_TASKS = (
    "NetHackScore-v0",
    "NetHackStaircase-v0",
    "NetHackStaircasePet-v0",
    "NetHackOracle-v0",
    "NetHackGold-v0",
    "NetHackEat-v0",
    "NetHackScout-v0",
    "NetHackChallenge-v0",
)
OWN_TASKS = ("oniray/Corridor-v0",)
# NLE tasks with a goal that ends an episode with TASK_SUCCESSFUL; the others (score, gold,
# eat, scout, challenge) have none, so their success rate is undefined rather than 0.
NLE_GOAL_TASKS = ("NetHackStaircase-v0", "NetHackStaircasePet-v0", "NetHackOracle-v0")
OBSERVATION_KEYS = ("glyphs", "blstats", "message")
# NLE's StepStatus.ABORTED: the episode hit its step limit (max_episode_steps) alive.
ABORTED = -1


class UnknownEnvError(ValueError):
    pass


def canonical_env_id(env_id: str) -> str:
    """The registered id for what a user wrote, or :class:`UnknownEnvError` listing the known
    (MiniHack ids are summarised, not listed: there are 161)."""
    if minihack_envs.is_minihack(env_id):
        known_minihack = minihack_envs.registered_ids()
        for candidate in (env_id, f"{env_id}-v0"):
            if candidate in known_minihack:
                reason = minihack_envs.unavailable_reason(candidate)
                if reason:
                    raise UnknownEnvError(reason)
                return candidate
        raise UnknownEnvError(
            f"unknown environment id {env_id!r}: minihack registers no such task (known "
            f"MiniHack ids: {len(known_minihack)}, e.g. MiniHack-Room-5x5-v0, "
            f"MiniHack-KeyRoom-S5-v0, MiniHack-Corridor-R2-v0)"
        )
    known = NLE_TASKS + OWN_TASKS
    for candidate in (env_id, f"{env_id}-v0"):
        if candidate in known:
            return candidate
    raise UnknownEnvError(
        f"unknown environment id {env_id!r}; known: {', '.join(known)}, or any MiniHack-... id"
    )


def has_penalty_step(env_id: str) -> bool:
    """Whether the task takes NLE's ``penalty_step`` (NLE and MiniHack tasks do)."""
    return canonical_env_id(env_id) not in OWN_TASKS


def has_goal(env_id: str) -> bool:
    """Whether the task has a goal whose reaching ends an episode (so a success rate means
    something): Staircase, StaircasePet, Oracle, every MiniHack task and the Corridor."""
    env_id = canonical_env_id(env_id)
    return env_id in NLE_GOAL_TASKS or env_id in OWN_TASKS or minihack_envs.is_minihack(env_id)


def make_env(
    env_id: str, *, max_episode_steps: int | None = None, penalty_step: float | None = None
) -> gym.Env:
    """One environment whose observations hold exactly :data:`OBSERVATION_KEYS`."""
    env_id = canonical_env_id(env_id)
    if env_id in OWN_TASKS:
        corridor.register()
        kwargs = {} if max_episode_steps is None else {"max_steps": max_episode_steps}
        return gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped

    kwargs: dict = {"observation_keys": OBSERVATION_KEYS}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if penalty_step is not None:
        kwargs["penalty_step"] = penalty_step
    if minihack_envs.is_minihack(env_id):
        return minihack_envs.make(env_id, **kwargs)
    import nle  # noqa: F401 - registers the NetHack tasks with gymnasium

    # From the entry point, not gym.make: gym.make would keep max_episode_steps for its own
    # TimeLimit wrapper (dropped again by .unwrapped), never passing it to NLE; and
    # gymnasium's wrappers (order enforcing, passive checker) cost ~10% per step.
    spec = gym.spec(env_id)
    return load_env_creator(spec.entry_point)(**{**spec.kwargs, **kwargs})


def reset_seeded(env: gym.Env, rng: np.random.Generator) -> tuple[dict, dict]:
    """Reset ``env`` to an episode drawn from ``rng``: the same stream, the same episodes.

    ``env.reset(seed=...)`` seeds only gymnasium's RNG, which NLE never reads: NetHack draws
    its dungeon from its own core and disp RNGs, which NLE seeds from fresh randomness on
    every reset, and MiniHack's MiniGrid tasks draw their map from a MiniGrid env of their
    own. Unseeded, ``run.seed`` fixed the policy and the sampling but not the levels, so two
    runs with one seed played different dungeons. Here both are seeded from ``rng`` before
    each reset; NetHack's anti-TAS reseeding stays off, so an episode is a function of its
    seeds and actions. oniray's own tasks read ``reset(seed=...)``.
    """
    game = env.unwrapped
    core, disp, grid = (int(s) for s in rng.integers(0, 2**62, size=3))
    if not hasattr(game, "nethack"):
        return env.reset(seed=grid)
    minigrid_env = getattr(game, "minigrid_env", None)
    if minigrid_env is not None:
        # MiniHack's own seed() calls the removed gym Env.seed on it. Its reset draws the map
        # from this generator; setting it (rather than reset(seed=)) skips building a map
        # that MiniHack's reset would throw away.
        minigrid_env.unwrapped.np_random = np.random.default_rng(grid)
    from nle.env.base import NLE

    NLE.seed(game, core, disp, False)  # NLE's, past MiniGridHack.seed (see above)
    return env.reset()


def episode_succeeded(info: dict) -> bool:
    """Whether an episode that just ended reached its task's goal (False for NetHackScore).

    Read from ``info["end_status"]``, not the return: Staircase adds -0.01 for every step that
    does not advance the game clock, so reaching the stairs can still end with a negative return.
    """
    return int(info.get("end_status", 0)) == TASK_SUCCESSFUL


def episode_end(terminated: bool, truncated: bool, info: dict) -> tuple[bool, bool]:
    """``(terminated, truncated)`` with time limits reported as truncations.

    NLE (and MiniHack, built on it) checks its step limit before counting the step, so the
    step that reaches ``max_episode_steps`` comes back as ``terminated=True,
    truncated=False`` with ``end_status == ABORTED``. That end is a time limit, not a death or
    a goal: the learner must bootstrap there, so it is reported as gymnasium's ``truncated``.
    A death on the limit's step reports DEATH, not ABORTED, and stays a termination.
    """
    if terminated and int(info.get("end_status", 0)) == ABORTED:
        return False, True
    return terminated, truncated


def decode_message(message: np.ndarray) -> str:
    """NLE's NUL-padded message bytes as text (invalid UTF-8 replaced, never an error)."""
    raw = message.tobytes().split(b"\0", 1)[0]
    return raw.decode("utf-8", errors="replace").strip()


@dataclass
class EncodedObs:
    """A vector of E observations in the form the policy and the fragment take."""

    glyph_crop: np.ndarray  # int16 [E, C, C]
    blstats: np.ndarray  # float32 [E, 27]
    message_bytes: np.ndarray  # uint8 [E, 256]
    messages: list[str]  # E decoded messages

    def policy_inputs(self) -> dict[str, np.ndarray]:
        return {
            "glyph_crop": self.glyph_crop,
            "blstats": self.blstats,
            "message_bytes": self.message_bytes,
        }


class ObsEncoder:
    """Crops glyph maps around the agent; the crop pads beyond the map with MAX_GLYPH."""

    def __init__(self, crop_size: int) -> None:
        self.crop_size = crop_size
        self.radius = crop_size // 2

    def encode(self, observations: list[dict[str, np.ndarray]]) -> EncodedObs:
        # One pad and one gather for all E maps: a pad per env per step was 8-10% of a rollout
        # actor's time (bench/results/profile.json).
        r, c = self.radius, self.crop_size
        glyphs = np.stack([obs["glyphs"] for obs in observations])  # [E, H, W]
        blstats = np.stack([obs["blstats"] for obs in observations]).astype(np.float32)
        messages_raw = np.stack([obs["message"] for obs in observations])
        message_bytes = messages_raw.astype(np.uint8, copy=False)  # NLE's are uint8 already
        padded = np.pad(glyphs, ((0, 0), (r, r), (r, r)), constant_values=MAX_GLYPH)
        x = blstats[:, 0].astype(np.intp)  # the agent's column and row: (y, x) in padded
        y = blstats[:, 1].astype(np.intp)  # coordinates is the crop's top-left corner
        offsets = np.arange(c)
        crops = padded[np.arange(len(observations))[:, None, None],
                       (y[:, None] + offsets)[:, :, None],
                       (x[:, None] + offsets)[:, None, :]].astype(np.int16)
        messages = [decode_message(obs["message"]) for obs in observations]
        return EncodedObs(crops, blstats, message_bytes, messages)
