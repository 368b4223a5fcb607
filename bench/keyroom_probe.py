"""What a MiniHack key room asks of the agent, mechanically, and how the judge sees its messages.

    python bench/keyroom_probe.py [--episodes 100] [--out bench/results/keyroom-probe.md]

No training. Plays the real environments (built as oniray's actors build them, with the
bench's step penalty):
- one scripted solution of MiniHack-KeyRoom-S5-v0, printing each step's action, reward and
  the message the agent sees: walk onto the key, PICKUP, bump the locked door, APPLY, walk
  through the door onto the stairs;
- a uniformly random agent on S5 and S15: success, key pickups and every distinct message
  (with the number of episodes it appears in);
- a scripted walk to the key and PICKUP, then random actions: how often the rest of the task
  (find the door, APPLY next to it, reach the stairs) happens by chance;
and labels each distinct message with the embedding judge (guarded, key-room goal) under the
default judge settings and under ``--judge-set`` overrides.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.envs import decode_message, make_env  # noqa: E402
from cluster.run_dir import atomic_write_text  # noqa: E402

PENALTY = -0.001  # the probe's recorded results (keyroom-probe.md) used it
# MiniHack's key-room actions: the 8 compass directions, then PICKUP (,) and APPLY (a).
MOVES = {(0, -1): 0, (1, 0): 1, (0, 1): 2, (-1, 0): 3, (1, -1): 4, (1, 1): 5, (-1, 1): 6,
         (-1, -1): 7}
PICKUP, APPLY = 8, 9
FLOOR = b".(<>@"


class Probe:
    """An environment with the full map at hand (the agent sees only a crop of glyphs)."""

    def __init__(self, env_id: str) -> None:
        self.env = make_env(env_id, penalty_step=PENALTY)
        self.u = self.env.unwrapped
        self.log: list[str] = []

    def _obs(self, key: str) -> np.ndarray:
        return self.u.last_observation[self.u._observation_keys.index(key)]

    def chars(self) -> np.ndarray:
        return self._obs("chars")

    def pos(self) -> tuple[int, int]:
        b = self._obs("blstats")
        return int(b[0]), int(b[1])

    def find(self, ch: str) -> list[tuple[int, int]]:
        ys, xs = np.where(self.chars() == ord(ch))
        return [(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]

    def path(self, goal, through: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Shortest walk (BFS over the map's characters) to the first cell ``goal`` accepts;
        doorways only at ``through`` and never diagonally."""
        c, start = self.chars(), self.pos()
        prev: dict = {start: None}
        queue = collections.deque([start])
        while queue:
            p = queue.popleft()
            if goal(p):
                out = []
                while prev[p] is not None:
                    out.append(p)
                    p = prev[p]
                return out[::-1]
            for dx, dy in MOVES:
                n = (p[0] + dx, p[1] + dy)
                if n in prev or not (0 <= n[1] < c.shape[0] and 0 <= n[0] < c.shape[1]):
                    continue
                doorway = n == through or p == through
                if not (c[n[1], n[0]] in FLOOR or n == through) or (doorway and dx and dy):
                    continue
                prev[n] = p
                queue.append(n)
        return []

    def step(self, action: int, why: str) -> tuple[str, bool, dict]:
        obs, reward, term, trunc, info = self.env.step(action)
        message = decode_message(obs["message"])
        self.log.append(f"| {why} | {self.u.actions[action]!r} | {reward:+.3f} | {message!r} |")
        return message, term or trunc, info

    def walk(self, cells: list[tuple[int, int]], why: str) -> tuple[bool, dict]:
        done, info = False, {}
        for cell in cells:
            x, y = self.pos()
            _, done, info = self.step(MOVES[(cell[0] - x, cell[1] - y)], why)
            if done:
                break
        return done, info


def scripted_solution(env_id: str, seed: int) -> list[str]:
    p = Probe(env_id)
    p.env.reset(seed=seed)
    key = (p.find("(") or [p.pos()])[0]
    p.walk(p.path(lambda c: c == key), "walk to the key")
    p.step(PICKUP, "PICKUP")
    door = p.find("+")[0]
    p.walk(p.path(lambda c: abs(c[0] - door[0]) + abs(c[1] - door[1]) == 1), "walk to the door")
    x, y = p.pos()
    p.step(MOVES[(door[0] - x, door[1] - y)], "bump the door")
    p.step(APPLY, "APPLY (MiniHack unlocks and opens)")
    p.step(APPLY, "APPLY again")
    direction = MOVES[(door[0] - x, door[1] - y)]
    p.step(direction, "into the doorway")
    p.step(direction, "into the sub-room")  # its inside is seen only from the doorway on
    _, info = p.walk(p.path(lambda c: p.chars()[c[1], c[0]] == ord(">"), through=door),
                     "walk to the stairs")
    p.log.append(f"\nend status {info.get('end_status')} (2 = task successful)")
    return p.log


def census(env_id: str, episodes: int, *, key_first: bool) -> dict:
    """Random play (after a scripted walk to the key and PICKUP when ``key_first``)."""
    p = Probe(env_id)
    rng = np.random.default_rng(0)
    per_episode: collections.Counter[str] = collections.Counter()
    successes = pickups = 0
    for episode in range(episodes):
        p.env.reset(seed=episode)
        p.log.clear()
        done, info, seen = False, {}, set()
        if key_first:
            key = (p.find("(") or [p.pos()])[0]
            done, info = p.walk(p.path(lambda c, key=key: c == key), "key")
            message, done, info = p.step(PICKUP, "pickup")
            seen.add(message)
        while not done:
            obs, _, term, trunc, info = p.env.step(int(rng.integers(len(p.u.actions))))
            done = term or trunc
            if message := decode_message(obs["message"]):
                seen.add(message)
        per_episode.update(seen)
        successes += int(info.get("end_status", 0)) == 2
        pickups += any(" - a key named " in m for m in seen)
    return {"episodes": episodes, "successes": successes, "key_pickups": pickups,
            "messages": dict(per_episode.most_common())}


def judge_labels(messages: list[str], overrides: list[str]) -> dict[str, tuple[bool, str]]:
    from cluster.config import load_config
    from rewards.judges import make_judge

    cfg = load_config(REPO / "configs" / "minihack" / "keyroom.yaml", overrides)
    judge = make_judge(cfg.rewards.judge, env_id="MiniHack-KeyRoom-S15-v0")
    return {v.caption: (bool(v.label), v.raw) for v in judge.label(messages)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--judge-set", nargs="*", default=[
        "rewards.judge.embedding.goal_sentences=true",
        "rewards.judge.embedding.negatives=unhelpful_everywhere"])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/keyroom-probe.md")
    args = parser.parse_args()
    lines = ["# MiniHack key rooms, mechanically (`python bench/keyroom_probe.py`)", "",
             f"Step penalty {PENALTY}. Actions: 8 compass moves, PICKUP, APPLY.", "",
             "## A scripted solution of MiniHack-KeyRoom-S5-v0 (seed 1)", "",
             "| step | action | reward | message the agent sees |", "|---|---|---|---|",
             *scripted_solution("MiniHack-KeyRoom-S5-v0", 1), ""]
    runs = {}
    for env_id, key_first in (("MiniHack-KeyRoom-S5-v0", False), ("MiniHack-KeyRoom-S15-v0",
                              False), ("MiniHack-KeyRoom-S15-v0", True),
                              ("MiniHack-KeyRoom-S5-v0", True)):
        r = census(env_id, args.episodes, key_first=key_first)
        runs[(env_id, key_first)] = r
        how = "scripted key pickup, then random" if key_first else "random"
        lines.append(f"- {env_id}, {how}: success {r['successes']}/{r['episodes']}, episodes "
                     f"with a key pickup {r['key_pickups']}")
        print(lines[-1], flush=True)
    messages: collections.Counter[str] = collections.Counter()
    for r in runs.values():
        messages.update(r["messages"])
    distinct = [m for m, _ in messages.most_common()]
    default = judge_labels(distinct, [])
    chosen = judge_labels(distinct, args.judge_set)
    lines += ["", "## Distinct messages and the embedding judge's labels (key-room goal)", "",
              f"Default judge; and with {' '.join(args.judge_set)}. The guard redacts object "
              "names before the judge sees them.", "",
              "| message | episodes it appears in (all probes) | default | chosen |",
              "|---|---|---|---|"]
    for m in distinct:
        cells = [f"{'helpful' if lab[0] else 'not'} ({lab[1]})" for lab in (default[m],
                                                                            chosen[m])]
        lines.append(f"| {m} | {messages[m]} | {cells[0]} | {cells[1]} |")
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
