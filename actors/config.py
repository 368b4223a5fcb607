"""Config sections of the acting side: the environments, the rollout actors, the policy network.

``cluster.config`` nests them under ``env``, ``rollout`` and ``model`` in the run's config and
validates every field at load (see :mod:`actors.fields`); components never change the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from actors.fields import param


@dataclass
class EnvConfig:
    """The environments the rollout actors step."""

    id: str = param(
        "NetHackScore-v0", "NLE task id (NetHackScore-v0, NetHackStaircase-v0, ...), any id "
        "the minihack package registers (MiniHack-Room-5x5-v0, MiniHack-KeyRoom-S15-v0, ...) "
        "or oniray/Corridor-v0, the small test environment"
    )
    crop_size: int = param(9, "side of the glyph crop around the agent (odd)", ge=3)
    max_episode_steps: int | None = param(
        None, "truncate episodes after this many steps; null = the task's default", ge=1
    )
    penalty_step: float | None = param(
        None, "NLE and MiniHack tasks: reward for each step that does not advance the game "
        "clock (menus, walking into walls); null = NLE's default -0.01, 0 = no penalty", le=0
    )


@dataclass
class RolloutConfig:
    """Rollout actors: who steps the environments and how fragments are shaped."""

    num_actors: int = param(2, "rollout actors (Ray actors)", ge=1)
    envs_per_actor: int = param(
        32, "E: environments stepped together by one actor. 32, not 8: one policy call per "
        "step serves 32 envs, so its fixed cost is spread 4x wider (1.40x the steps/s of 8 on "
        "the key room, 1.45x on NetHackScore, on 2 cores, and the key-room bench learns as much "
        "per minute: docs/scaling.md#before-and-after-issue-18); at 32 one actor's fragment is "
        "a whole batch of 1,024 steps", ge=1
    )
    fragment_length: int = param(32, "T: steps per fragment", ge=1)
    max_policy_lag: int = param(
        8, "drop fragments acted by a policy this many versions older than the learner's", ge=0
    )
    fragments_in_flight: int = param(
        1, "sample calls outstanding per actor; bounds object-store use", ge=1
    )
    num_cpus: float = param(1.0, "CPUs Ray reserves per rollout actor", ge=0)
    resources: dict[str, float] = param(
        factory=dict, doc="custom Ray resources per rollout actor (cluster placement)"
    )
    torch_threads: int = param(1, "torch intra-op threads in a rollout actor", ge=1)
    precision: Literal["auto", "float32", "bfloat16"] = param(
        "auto", "the policy's inference arithmetic: bfloat16 (autocast; weights and the core "
        "state stay float32) or float32; auto = bfloat16 only on a CPU with AVX512-BF16 or "
        "AMX, where it is native (emulated it is slower than float32)"
    )
    max_restarts: int = param(
        3, "rollout actors restarted after dying, in total per session; one more death stops "
        "the run with a checkpoint", ge=0
    )


@dataclass
class ModelConfig:
    """The policy network (defaults: the reference network of the benchmarks, ~1M params)."""

    glyph_embedding_dim: int = param(32, "size of a glyph id's embedding", ge=1)
    crop_channels: int = param(16, "channels of the crop's convolutions", ge=1)
    crop_conv_layers: int = param(2, "3x3 convolutions over the crop", ge=1)
    blstats_hidden: int = param(64, "units of the bottom-line stats layer", ge=1)
    message_hidden: int = param(64, "units of the message-bytes layer; 0 = ignore messages", ge=0)
    fused_hidden: int = param(256, "units after concatenating the encoders", ge=1)
    core_hidden: int = param(256, "GRU state size", ge=1)
