"""A small in-process rollout worker (a tiny policy network, a few short environments)."""

from __future__ import annotations

from actors.config import EnvConfig, ModelConfig, RolloutConfig
from actors.rollout_worker import RolloutWorker


def small_worker(env_id: str, *, envs: int = 4, length: int = 8) -> RolloutWorker:
    model = ModelConfig(glyph_embedding_dim=8, crop_channels=4, blstats_hidden=8,
                        message_hidden=8, fused_hidden=16, core_hidden=16)
    return RolloutWorker(
        env=EnvConfig(id=env_id),
        rollout=RolloutConfig(envs_per_actor=envs, fragment_length=length),
        model=model, actor_id=3, seed=0,
    )
