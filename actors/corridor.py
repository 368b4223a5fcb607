"""``oniray/Corridor-v0``: a small, fast environment with NLE's observation layout, for tests.

The agent starts at the west end of a one-row corridor and earns +1 for reaching the exit at
the east end. A key lies halfway; stepping on it prints "You see a key here." (a message a
judge should find helpful); walking into a wall prints "You bump into a wall.". Episodes are
truncated after ``max_steps``. Observations use NLE's keys and shapes (``glyphs`` 21x79,
``blstats`` with the agent's x, y at 0, 1, ``message`` as 256 NUL-padded bytes), so the
policy network, the fragment schema and the annotator treat it exactly like NetHack.

A random agent rarely reaches the exit within the step limit, a trained one always does: a
training run's return visibly improves within a few thousand steps.
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np

from actors.fragment import BLSTATS_SIZE, MESSAGE_SIZE

# NLE's StepStatus.TASK_SUCCESSFUL, which goal tasks (Staircase, Oracle) put in
# info["end_status"] when the goal is reached; the Corridor reports success the same way.
TASK_SUCCESSFUL = 2

ROWS, COLS = 21, 79
# Real NLE glyph ids, so embeddings behave as they would on NetHack.
GLYPH_STONE, GLYPH_WALL, GLYPH_FLOOR, GLYPH_AGENT, GLYPH_KEY, GLYPH_EXIT = (
    2359, 2360, 2378, 337, 2155, 2383,
)
MOVES = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0), 4: (0, 0)}  # west, east, north, south, wait

MSG_KEY = "You see a key here."
MSG_WALL = "You bump into a wall."
MSG_EXIT = "You reach the exit!"


class CorridorEnv(gym.Env):
    """A corridor of ``length`` cells on row 10 of an otherwise stony 21x79 map."""

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, length: int = 10, max_steps: int = 60) -> None:
        if not 3 <= length <= COLS - 2:
            raise ValueError(f"corridor length must be in [3, {COLS - 2}], got {length}")
        self.length, self.max_steps = length, max_steps
        self.row, self.col0 = ROWS // 2, 1
        self.observation_space = gym.spaces.Dict(
            {
                "glyphs": gym.spaces.Box(0, 5976, (ROWS, COLS), np.int16),
                "blstats": gym.spaces.Box(-(2**31), 2**31 - 1, (BLSTATS_SIZE,), np.int64),
                "message": gym.spaces.Box(0, 255, (MESSAGE_SIZE,), np.uint8),
            }
        )
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self._map = np.full((ROWS, COLS), GLYPH_STONE, np.int16)
        self._map[self.row - 1 : self.row + 2, self.col0 - 1 : self.col0 + length + 1] = GLYPH_WALL
        self._map[self.row, self.col0 : self.col0 + length] = GLYPH_FLOOR
        self._key_col = self.col0 + length // 2
        self._exit_col = self.col0 + length - 1
        self._map[self.row, self._key_col] = GLYPH_KEY
        self._map[self.row, self._exit_col] = GLYPH_EXIT
        self._pos = (self.row, self.col0)
        self._steps = 0

    def _obs(self, message: str) -> dict[str, np.ndarray]:
        glyphs = self._map.copy()
        glyphs[self._pos] = GLYPH_AGENT
        blstats = np.zeros(BLSTATS_SIZE, np.int64)
        blstats[0], blstats[1] = self._pos[1], self._pos[0]  # NLE: x (column), y (row)
        blstats[10] = blstats[11] = 10  # hit points, max hit points
        encoded = message.encode()[: MESSAGE_SIZE - 1]
        msg = np.zeros(MESSAGE_SIZE, np.uint8)
        msg[: len(encoded)] = np.frombuffer(encoded, np.uint8)
        return {"glyphs": glyphs, "blstats": blstats, "message": msg}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._pos, self._steps = (self.row, self.col0), 0
        return self._obs(""), {}

    def step(self, action: int):
        d_row, d_col = MOVES[int(action)]
        target = (self._pos[0] + d_row, self._pos[1] + d_col)
        self._steps += 1
        message = ""
        if self._map[target] in (GLYPH_WALL, GLYPH_STONE):
            message = MSG_WALL
        else:
            self._pos = target
            if target[1] == self._key_col:
                message = MSG_KEY
        reached = self._pos[1] == self._exit_col
        if reached:
            message = MSG_EXIT
        truncated = not reached and self._steps >= self.max_steps
        info = {"end_status": TASK_SUCCESSFUL} if reached else {}
        return self._obs(message), float(reached), reached, truncated, info


def register() -> None:
    """Make ``gymnasium.make("oniray/Corridor-v0")`` work (idempotent)."""
    if "oniray/Corridor-v0" not in gym.registry:
        gym.register("oniray/Corridor-v0", entry_point=CorridorEnv)
