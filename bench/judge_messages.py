"""Draw real NetHack messages for the judge's labelled sets (configs/judge_eval/).

Plays the real environments and writes every distinct message seen, with its count and the
envs it came from, as TSV (count, envs, message), most frequent first. The messages are then
labelled by hand; this script never labels anything.

* NLE tasks: a uniformly random agent over the task's actions, and, for variety, over the
  full keyboard (menus, prompts, items, spells).
* MiniHack key rooms: a scripted agent (walk to the key, pick it up, walk next to the door,
  apply the key towards it, answer yes, walk to the stairs) that takes a random action with
  probability ``--epsilon``, so both the goal's messages and its distractors appear.

    python -m bench.judge_messages --steps 4000 --out /tmp/messages.tsv
"""

from __future__ import annotations

import argparse
import collections
import random
import re
from collections.abc import Iterable
from pathlib import Path

import gymnasium as gym
import numpy as np

from actors.envs import decode_message

NLE_ENVS = ("NetHackScore-v0", "NetHackStaircase-v0", "NetHackEat-v0", "NetHackGold-v0",
            "NetHackChallenge-v0")
KEYROOM_ENVS = ("MiniHack-KeyRoom-Fixed-S5-v0", "MiniHack-KeyRoom-S5-v0",
                "MiniHack-KeyRoom-S15-v0", "MiniHack-KeyRoom-Dark-S5-v0")
# NetHack's direction keys, as the compass offsets (row, col) they move by.
_MOVES = {(-1, 0): "k", (1, 0): "j", (0, -1): "h", (0, 1): "l",
          (-1, 1): "u", (1, 1): "n", (1, -1): "b", (-1, -1): "y"}
_WALKABLE = set(".(>+#<{@")
_PICKED_KEY = re.compile(r"^[a-zA-Z] - an? .*key")  # "g - a key named The Master Key ..."


def play_random(env_id: str, steps: int, rng: random.Random, *, full_keyboard: bool,
                ) -> Iterable[str]:
    import nle  # noqa: F401 - registers the NetHack tasks
    from nle import nethack

    kwargs = {"actions": nethack.ACTIONS} if full_keyboard else {}
    env = gym.make(env_id, observation_keys=("message",), **kwargs).unwrapped
    obs, _ = env.reset(seed=rng.randrange(2**31))
    for _ in range(steps):
        yield decode_message(obs["message"])
        obs, _, done, truncated, _ = env.step(rng.randrange(env.action_space.n))
        if done or truncated:
            obs, _ = env.reset(seed=rng.randrange(2**31))
    env.close()


def _find(chars: np.ndarray, symbol: str) -> tuple[int, int] | None:
    where = np.argwhere(chars == ord(symbol))
    return (int(where[0][0]), int(where[0][1])) if len(where) else None


def _step_towards(chars: np.ndarray, start: tuple[int, int], goals: set[tuple[int, int]],
                  doors: set[tuple[int, int]] = frozenset()) -> str | None:
    """The first move of a shortest walk from start to any goal (breadth-first), or None."""
    frontier = collections.deque([start])
    first: dict[tuple[int, int], str | None] = {start: None}
    while frontier:
        pos = frontier.popleft()
        if pos in goals:
            return first[pos]
        for (dr, dc), key in _MOVES.items():
            nxt = (pos[0] + dr, pos[1] + dc)
            if nxt in first or not (0 <= nxt[0] < chars.shape[0] and 0 <= nxt[1] < chars.shape[1]):
                continue
            # NetHack forbids diagonal moves through doorways.
            if dr and dc and (pos in doors or nxt in doors or chr(chars[nxt]) in "+|-"):
                continue
            if chr(chars[nxt]) in _WALKABLE or nxt in goals:
                first[nxt] = first[pos] or key
                frontier.append(nxt)
    return None


def play_keyroom(env_id: str, steps: int, rng: random.Random, *, epsilon: float,
                 full_keyboard: bool = False) -> Iterable[str]:
    """The scripted key-room agent (module doc). MiniHack's apply action runs the whole
    unlock (apply, key, direction, y, open) inside one step; the messages of those inner
    NetHack steps are real too, so they are yielded as well."""
    import minihack  # noqa: F401 - registers the MiniHack tasks
    from nle import nethack

    kwargs = {"actions": nethack.ACTIONS} if full_keyboard else {}
    env = gym.make(env_id, observation_keys=("message", "chars", "blstats"), **kwargs).unwrapped
    index = {int(a): i for i, a in enumerate(env.actions)}
    # Random keys never include apply: MiniHack's unlock loop can spin forever on a door that
    # a random key sequence has left in a prompt. The script applies only next to the door.
    randoms = [i for i, a in enumerate(env.actions) if a != nethack.Command.APPLY]
    inner: list[str] = []
    raw_step = env.nethack.step

    def recording_step(action: int):  # the wrapper's own NetHack steps
        obs, done = raw_step(action)
        inner.append(decode_message(obs[env._message_index]))
        return obs, done

    env.nethack.step = recording_step
    obs, _ = env.reset(seed=rng.randrange(2**31))
    has_key = False
    for _ in range(steps):
        message = decode_message(obs["message"])
        yield message
        chars = obs["chars"]
        me = (int(obs["blstats"][1]), int(obs["blstats"][0]))
        has_key = has_key or bool(_PICKED_KEY.match(message))
        key: str | None = None
        if rng.random() < epsilon:
            pass
        elif not has_key and "You see here" in message and "key" in message:
            key = ","
        elif not has_key and (target := _find(chars, "(")) is not None:
            key = _step_towards(chars, me, {target})
        elif has_key and (door := _find(chars, "+")) is not None:
            # Next to the door, not diagonally (NetHack forbids diagonal moves into doorways).
            near = {(door[0] + dr, door[1] + dc) for dr, dc in _MOVES if not (dr and dc)}
            near = {p for p in near if chr(chars[p]) == "."} or near
            key = "a" if me in near else _step_towards(chars, me, near, {door})
        elif (stairs := _find(chars, ">")) is not None:
            key = _step_towards(chars, me, {stairs}, set())
        action = index[ord(key)] if key else rng.choice(randoms)
        inner.clear()
        obs, _, done, truncated, _ = env.step(action)
        yield from inner[:-1]  # the last inner step is the observation itself
        if done or truncated:
            obs, _ = env.reset(seed=rng.randrange(2**31))
            has_key = False
    env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="steps per env and agent")
    parser.add_argument("--epsilon", type=float, default=0.3, help="key rooms: random moves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keyroom", action="store_true", help="MiniHack key rooms only")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    counts: collections.Counter[str] = collections.Counter()
    sources: dict[str, set[str]] = collections.defaultdict(set)
    runs: list[tuple[str, Iterable[str]]] = []
    if args.keyroom:
        runs += [(e, play_keyroom(e, args.steps, rng, epsilon=args.epsilon))
                 for e in KEYROOM_ENVS]
        # A uniformly random agent on the full keyboard (no script: see play_keyroom).
        runs += [(e + "+keys", play_keyroom(e, args.steps, rng, epsilon=1.0,
                                             full_keyboard=True)) for e in KEYROOM_ENVS[:2]]
    else:
        runs += [(e, play_random(e, args.steps, rng, full_keyboard=False)) for e in NLE_ENVS]
        runs += [(e + "+keys", play_random(e, args.steps, rng, full_keyboard=True))
                 for e in NLE_ENVS[:2]]
    for env_id, messages in runs:
        for message in messages:
            if message.strip():
                counts[message] += 1
                sources[message].add(env_id)
    lines = [f"{n}\t{','.join(sorted(sources[m]))}\t{m}" for m, n in counts.most_common()]
    args.out.write_text("count\tenvs\tmessage\n" + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(counts)} distinct messages -> {args.out}")


if __name__ == "__main__":
    main()
