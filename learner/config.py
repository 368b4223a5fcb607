"""Config section of the learner (``learner`` in the run's config), and what a learner reads.

``cluster.config`` nests :class:`LearnerConfig` under ``learner`` and validates every field at
load (see :mod:`actors.fields`); components never change the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from actors.config import EnvConfig, ModelConfig
from actors.fields import param
from rewards.config import RewardsConfig


@dataclass
class LearnerConfig:
    """APPO with V-trace targets, data-parallel over num_learners."""

    num_learners: int = param(1, "learners in the group (torch.distributed data parallel)", ge=1)
    batch_size: int = param(
        1024, "environment steps per update, summed over learners; a multiple of T * E", ge=1
    )
    epochs: int = param(1, "passes over each batch", ge=1)
    lr: float = param(4e-4, "Adam learning rate", gt=0)
    adam_eps: float = param(1e-6, "Adam epsilon", gt=0)
    gamma: float = param(0.999, "discount", ge=0, le=1)
    clip_ratio: float = param(0.1, "PPO clip: ratios outside [1-eps, 1+eps] get no gradient", gt=0)
    value_coef: float = param(0.5, "weight of the value loss", ge=0)
    entropy_coef: float = param(0.001, "weight of the entropy bonus", ge=0)
    max_grad_norm: float = param(4.0, "clip the global gradient norm to this", gt=0)
    normalize_advantages: bool = param(
        False, "scale the policy-gradient advantages of each update to mean 0, std 1 over the "
        "whole batch (all ranks), as Sample Factory's APPO does: an update's size then no "
        "longer follows the reward's scale. Off by default: while no reward arrives it turns "
        "the critic's noise into full-size policy steps (on KeyRoom-S15, extrinsic-only's "
        "entropy fell to 0.27 of 2.30 nats; docs/results.md)"
    )
    vtrace_rho_clip: float = param(1.0, "V-trace rho-bar", gt=0)
    vtrace_c_clip: float = param(1.0, "V-trace c-bar", gt=0)
    max_queued_batches: int = param(
        2, "batches waiting for the learner; rollouts pause beyond it (backpressure)", ge=1
    )
    backend: Literal["auto", "gloo", "nccl"] = param(
        "auto", "torch.distributed backend; auto = nccl with GPUs, else gloo"
    )
    num_cpus: float = param(1.0, "CPUs Ray reserves per learner", ge=0)
    num_gpus: float = param(0.0, "GPUs per learner", ge=0)
    resources: dict[str, float] = param(factory=dict, doc="custom Ray resources per learner")
    torch_threads: int = param(1, "torch intra-op threads in a learner", ge=1)
    precision: Literal["auto", "float32", "bfloat16"] = param(
        "auto", "the forward pass's arithmetic: bfloat16 (autocast; weights, Adam's state, "
        "V-trace and the losses stay float32) or float32; auto = bfloat16 only where the "
        "learner's device has it natively (a bf16 GPU, a CPU with AVX512-BF16 or AMX)"
    )
    max_restarts: int = param(
        3, "times per session the learner group is rebuilt from the newest checkpoint after a "
        "rank dies (the updates since that checkpoint are counted as lost); one more death "
        "stops the run", ge=0
    )


class _Seeded(Protocol):
    @property
    def seed(self) -> int: ...


class LearnerSections(Protocol):
    """The sections of a run's config that a learner reads (``cluster.config.OniConfig`` has
    them all; of ``run`` only the seed)."""

    @property
    def run(self) -> _Seeded: ...
    @property
    def env(self) -> EnvConfig: ...
    @property
    def model(self) -> ModelConfig: ...
    @property
    def learner(self) -> LearnerConfig: ...
    @property
    def rewards(self) -> RewardsConfig: ...
