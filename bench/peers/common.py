"""What the peer benchmarks share: NetHack observations as oniray sees them, oniray's own
observation encoder (imported, not copied), the two network sizes, and the steady-state rate
of a step counter.

Imported by ``sample_factory_nethack.py`` and ``rllib_nethack.py`` inside the peers' own
virtualenvs, which hold torch, gymnasium, numpy, pyarrow and nle but not oniray: the
checkout's ``actors`` package is put on the path, and the peers build their networks from
``actors/model.py::PolicyNet`` itself, so what they run cannot drift from what oniray trains.
The observation wrapper mirrors ``actors/envs.py`` (constants from ``actors/fragment.py``);
``compare.py`` checks the resulting parameter counts against oniray's ``PolicyNet``.

Emits, per peer run, one line ``PEER_RESULT {json}`` on stdout (and the same JSON in a file
when asked): steady-state env steps/s from the framework's own counter, and the parameters.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from torch import nn

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # a peer's venv has no oniray installed: use the checkout's
    sys.path.append(str(REPO))

from actors.config import EnvConfig, ModelConfig  # noqa: E402
from actors.fragment import BLSTATS_SIZE, MAX_GLYPH, MESSAGE_SIZE  # noqa: E402
from actors.model import PolicyNet  # noqa: E402

CROP_SIZE = EnvConfig().crop_size  # oniray's default crop
RESULT_PREFIX = "PEER_RESULT "


class NetSize(ModelConfig):
    """oniray's ``ModelConfig``, which the peers' networks are sized by."""

    def oniray_overrides(self) -> list[str]:
        return [f"model.{k}={v}" for k, v in asdict(self).items()]


NET_SIZES = {
    # oniray's default ModelConfig: the reference network (~1M parameters).
    "reference": NetSize(),
    # Small enough that model compute is negligible: what is left is framework overhead.
    "tiny": NetSize(glyph_embedding_dim=4, crop_channels=4, crop_conv_layers=2, blstats_hidden=16,
                    message_hidden=16, fused_hidden=16, core_hidden=16),
}


class CroppedNetHack(gym.Wrapper):
    """An NLE task whose observations are oniray's policy inputs (``actors/envs.py``).

    ``glyph_crop`` int16 [9, 9] around the agent (padded with MAX_GLYPH), ``blstats`` float32
    [27], ``message_bytes`` uint8 [256]. The wrapped env is unwrapped, as oniray's is:
    gymnasium's checker wrappers cost ~10% per step and NLE enforces its own step limit.
    """

    def __init__(self, env_id: str = "NetHackScore-v0") -> None:
        import nle  # noqa: F401 - registers the NetHack tasks with gymnasium

        inner = gym.make(env_id, observation_keys=("glyphs", "blstats", "message"),
                         disable_env_checker=True).unwrapped
        super().__init__(inner)
        self.radius = CROP_SIZE // 2
        self.observation_space = gym.spaces.Dict({
            "glyph_crop": gym.spaces.Box(0, MAX_GLYPH, (CROP_SIZE, CROP_SIZE), np.int16),
            "blstats": gym.spaces.Box(-np.inf, np.inf, (BLSTATS_SIZE,), np.float32),
            "message_bytes": gym.spaces.Box(0, 255, (MESSAGE_SIZE,), np.uint8),
        })

    def _encode(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, y = int(obs["blstats"][0]), int(obs["blstats"][1])
        padded = np.pad(obs["glyphs"], self.radius, constant_values=MAX_GLYPH)
        return {
            "glyph_crop": padded[y : y + CROP_SIZE, x : x + CROP_SIZE].astype(np.int16),
            "blstats": obs["blstats"].astype(np.float32),
            "message_bytes": obs["message"],
        }

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict]:
        obs, info = self.env.reset(**kwargs)
        return self._encode(obs), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._encode(obs), float(reward), terminated, truncated, info


class Encoder(nn.Module):
    """oniray's observation encoder, observations [N, ...] -> [N, fused_hidden]: the layers
    ``PolicyNet`` builds and its ``encode``, without the recurrent core and the heads (each
    peer brings its framework's own)."""

    forward = PolicyNet.encode  # the very code oniray runs, on the layers below

    def __init__(self, size: NetSize) -> None:
        super().__init__()
        net = PolicyNet(size, crop_size=CROP_SIZE, num_actions=1)
        for name, layer in net.named_children():
            if name not in ("core", "policy_head", "value_head"):
                self.add_module(name, layer)
        self.message_mlp = net.message_mlp  # None (no layer) when message_hidden is 0
        self.out_size = size.fused_hidden


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class RateWindow:
    """Steady-state rate of a monotone counter: (last - first) / time over the samples taken
    after ``warmup_s``, so start-up (process spawn, env resets, first compiles) is excluded.
    Samples before the counter first moves are ignored too (a framework that reports late
    would otherwise have its silence counted as zero, or as a missing value)."""

    def __init__(self, warmup_s: float) -> None:
        self.warmup_s, self.started = warmup_s, time.monotonic()
        self.samples: list[tuple[float, int]] = []

    def add(self, count: int) -> None:
        self.samples.append((time.monotonic() - self.started, int(count)))

    def rate(self) -> float:
        steady = self._steady()
        if len(steady) < 2 or steady[-1][0] <= steady[0][0]:
            return float("nan")
        (t0, n0), (t1, n1) = steady[0], steady[-1]
        return (n1 - n0) / (t1 - t0)

    def window(self) -> tuple[float, float]:
        steady = self._steady()
        return (steady[0][0], steady[-1][0]) if steady else (float("nan"), float("nan"))

    def _steady(self) -> list[tuple[float, int]]:
        return [s for s in self.samples if s[0] >= self.warmup_s and s[1] > 0]


def emit(result: dict[str, Any], out: str | None) -> None:
    line = json.dumps(result)
    if out:
        Path(out).write_text(line + "\n")
    print(RESULT_PREFIX + line, flush=True)
