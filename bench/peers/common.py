"""What the peer benchmarks share: NetHack observations as oniray sees them, its network's
encoder, the two network sizes, and the steady-state rate of a step counter.

Imported by ``sample_factory_nethack.py`` and ``rllib_nethack.py`` inside the peers' own
virtualenvs, so it needs only torch, gymnasium, numpy and nle — never oniray's packages. The
shapes and constants mirror ``actors/envs.py``, ``actors/fragment.py`` and
``actors/model.py``; ``compare.py`` checks the resulting parameter counts against oniray's
``PolicyNet`` so a drift between the copies shows up as a failed check, not a skewed ratio.

Emits, per peer run, one line ``PEER_RESULT {json}`` on stdout (and the same JSON in a file
when asked): steady-state env steps/s from the framework's own counter, and the parameters.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

MAX_GLYPH = 5976  # NLE's MAX_GLYPH: ids are in [0, MAX_GLYPH]; the crop pads with it
BLSTATS_SIZE = 27
MESSAGE_SIZE = 256
CROP_SIZE = 9
OBS_KEYS = ("glyph_crop", "blstats", "message_bytes")
RESULT_PREFIX = "PEER_RESULT "


@dataclass(frozen=True)
class NetSize:
    """oniray's ``ModelConfig`` fields, with the same names."""

    glyph_embedding_dim: int
    crop_channels: int
    crop_conv_layers: int
    blstats_hidden: int
    message_hidden: int
    fused_hidden: int
    core_hidden: int

    def oniray_overrides(self) -> list[str]:
        return [f"model.{k}={v}" for k, v in asdict(self).items()]


NET_SIZES = {
    # oniray's default ModelConfig: the reference network (~1M parameters).
    "reference": NetSize(32, 16, 2, 64, 64, 256, 256),
    # Small enough that model compute is negligible: what is left is framework overhead.
    "tiny": NetSize(4, 4, 2, 16, 16, 16, 16),
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
    """``actors/model.py::PolicyNet.encode``: observations [N, ...] -> [N, fused_hidden]."""

    def __init__(self, size: NetSize) -> None:
        super().__init__()
        self.glyph_embedding = nn.Embedding(MAX_GLYPH + 1, size.glyph_embedding_dim)
        convs: list[nn.Module] = []
        channels = size.glyph_embedding_dim
        for _ in range(size.crop_conv_layers):
            convs += [nn.Conv2d(channels, size.crop_channels, 3, padding=1), nn.ELU()]
            channels = size.crop_channels
        self.crop_convs = nn.Sequential(*convs)
        self.blstats_mlp = nn.Sequential(nn.Linear(BLSTATS_SIZE, size.blstats_hidden), nn.ELU())
        self.message_mlp = nn.Sequential(nn.Linear(MESSAGE_SIZE, size.message_hidden), nn.ELU())
        fused_in = size.crop_channels * CROP_SIZE**2 + size.blstats_hidden + size.message_hidden
        self.fuse = nn.Sequential(nn.Linear(fused_in, size.fused_hidden), nn.ELU())
        self.out_size = size.fused_hidden

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        glyphs = self.glyph_embedding(obs["glyph_crop"].long())  # [N, C, C, D]
        crop = self.crop_convs(glyphs.permute(0, 3, 1, 2)).flatten(1)
        blstats = obs["blstats"].float()
        message = obs["message_bytes"].float() / 255.0
        parts = [crop, self.blstats_mlp(blstats.sign() * blstats.abs().log1p()),
                 self.message_mlp(message)]
        return self.fuse(torch.cat(parts, dim=1))


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
