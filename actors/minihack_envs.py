"""MiniHack's tasks: which ids exist, which need more than an id, and building one.

Consumes: a ``MiniHack-...`` id. Emits: the ids the ``minihack`` package registers with
gymnasium, a one-line reason when an id cannot run from its id alone, and constructed
environments (``actors.envs.make_env`` dispatches here). MiniHack environments are NLE
environments: the same observation keys, ``penalty_step`` and ``info["end_status"]``.

Two things upstream does not do with today's packages, fixed here rather than worked around
by users:
- minihack 1.0.2 hands ``width`` and ``height`` to every MiniGrid level it converts, and
  minigrid 3's square ``CrossingEnv`` (LavaCrossing, SimpleCrossing) refuses them. Those
  levels are built from an oniray-registered copy of the MiniGrid id that drops them.
- minihack imports ``pkg_resources`` at import time (setuptools < 81 provides it, and
  pyproject.toml pins that); its deprecation warning is silenced here, once.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

PREFIX = "MiniHack-"
# Ids minihack registers as templates: they need a level description passed in code.
_NEEDS_DES_FILE = ("MiniHack-Navigation-Custom-v0", "MiniHack-Skill-Custom-v0")
_OWN_MINIGRID = "oniray/"  # namespace of the MiniGrid copies registered below


def is_minihack(env_id: str) -> bool:
    return env_id.startswith(PREFIX)


@functools.cache
def registered_ids() -> tuple[str, ...]:
    """Every ``MiniHack-...`` id the installed minihack registers, in registration order."""
    _import_minihack()
    return tuple(k for k in gym.registry if is_minihack(k))


def unavailable_reason(env_id: str) -> str | None:
    """Why a registered MiniHack id cannot run from its id alone, or None when it can."""
    if env_id in _NEEDS_DES_FILE:
        return (f"{env_id} is a template that needs a level description (des_file) passed "
                f"in code; pick one of the ready-made MiniHack tasks")
    if "Boxoban" in env_id:
        levels = _boxoban_levels_path()
        if not levels.is_dir():
            return (f"{env_id} needs the Boxoban maps in {levels} (minihack's "
                    f"scripts/download_boxoban_levels.py fetches them)")
    return None


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """A MiniHack environment built directly from its entry point (no gymnasium wrappers).

    Built this way, not with ``gym.make``: ``gym.make`` takes ``max_episode_steps`` for its
    own TimeLimit wrapper, which ``.unwrapped`` then drops, so the limit would never reach
    the environment.
    """
    _import_minihack()
    reason = unavailable_reason(env_id)
    if reason:
        raise ValueError(reason)
    spec = gym.spec(env_id)
    spec_kwargs = dict(spec.kwargs)
    name = spec_kwargs.get("env_name")
    if isinstance(name, str) and "Crossing" in name:
        spec_kwargs["env_name"] = _square_minigrid_id(name)
    return load_env_creator(spec.entry_point)(**{**spec_kwargs, **kwargs})


@functools.cache
def _import_minihack() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import minihack  # noqa: F401 - registers the MiniHack-* ids with gymnasium


def _boxoban_levels_path() -> Path:
    import minihack

    return Path(minihack.__file__).parent / "dat" / "boxoban-levels-master"


def _square_minigrid_id(minigrid_id: str) -> str:
    """An oniray copy of a square MiniGrid id that ignores the width and height minihack
    passes (registered on first use)."""
    import minigrid  # noqa: F401 - registers the MiniGrid-* ids (MultiRoom and these need it)

    own = f"{_OWN_MINIGRID}{minigrid_id}"
    if own not in gym.registry:
        original = gym.spec(minigrid_id)
        gym.register(own, entry_point=_square_minigrid,
                     kwargs={"entry_point": original.entry_point, **original.kwargs})
    return own


def _square_minigrid(*, entry_point: Any, width: int | None = None,
                     height: int | None = None, **kwargs: Any) -> gym.Env:
    """The factory behind the oniray MiniGrid copies: a square level's size is its grid_size,
    so the terminal's width and height that minihack passes do not apply."""
    del width, height
    return load_env_creator(entry_point)(**kwargs)
