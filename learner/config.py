"""Config section of the learner (``learner`` in the run's config), and what a learner reads.

``cluster.config`` nests :class:`LearnerConfig` under ``learner`` and validates every field at
load (see :mod:`actors.fields`); components never change the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from actors.config import EnvConfig, ModelConfig
from actors.fields import param
from rewards.config import RewardsConfig

# Named learner settings, applied at config load (``cluster.config.load_config``): a preset's
# keys replace the defaults' and the config files' values; a key given on the command line
# still wins. ``oni``: the learner of ONI's own code (a Sample Factory 1 fork).
# ``plain``: the learner before issue 28 chose the stabilised defaults (no whitening, no value
# clipping); every table in docs/results.md made before 2026-12-08 ran with it.
LEARNER_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "oni": {"normalize_advantages": True, "advantage_std_floor": 1e-3, "lr": 1e-4,
            "entropy_coef": 0.003, "value_clip": 1.0, "max_grad_norm": 4.0},
    "plain": {"normalize_advantages": False, "advantage_std_floor": 0.0, "value_clip": None},
}


def _preset_doc() -> str:
    named = "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in keys.items())
                      for name, keys in LEARNER_PRESETS.items() if keys)
    return ("named learner settings applied at load over the config files' values (a key "
            f"set on the command line still wins): none = nothing; {named}")


@dataclass
class LearnerConfig:
    """APPO with V-trace targets, data-parallel over num_learners."""

    preset: Literal["none", "oni", "plain"] = param("none", _preset_doc())

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
    # ---- stabilisers (docs/results.md#stabilisers) ----------------------------------------
    # Defaults: the learner issue 28's pilots chose on MiniHack-KeyRoom-S15 by a rule stated
    # before they ran (bench/results/pilots-s15.md): whitening with its std floored at 1.0,
    # and value clipping at 1.0. With the plain learner (no whitening, no clip:
    # learner.preset=plain) 2 of the table's 5 retrieval seeds collapsed for good (peak 0.56 ->
    # final 0.01, 0.38 -> 0.04); plain whitening made the reward-less extrinsic-only policy
    # nearly deterministic (2.30 -> 0.27 nats).
    normalize_advantages: bool = param(
        True, "scale the policy-gradient advantages of each update to mean 0 and std 1 over "
        "the whole batch (all ranks), as Sample Factory's APPO does, dividing by "
        "max(std, advantage_std_floor): an update's size then no longer follows the reward's "
        "scale once a reward arrives, while a reward-less batch (the critic's noise) stays small"
    )
    advantage_std_floor: float = param(
        1.0, "with normalize_advantages: divide by max(std, this) instead of the std, so a "
        "batch whose advantages are all near zero (no reward yet: the critic's noise) is not "
        "scaled up to unit size; 0 = plain whitening (on KeyRoom-S15 it turned extrinsic-only "
        "nearly deterministic, 0.27 of 2.30 nats). In the advantages' own units (those of the "
        "reward the learner trains on, after reward_scale and normalize_rewards); ignored "
        "when normalize_advantages is off", ge=0
    )
    reward_scale: float = param(
        1.0, "multiply the whole combined reward (extrinsic and intrinsic alike, so their "
        "ratio is unchanged) by this before V-trace: sets the units of the values, the "
        "advantages and value_clip", gt=0
    )
    normalize_rewards: bool = param(
        False, "divide each batch's reward by the running std of the discounted return "
        "(Dungeons & Data's NetHack APPO): one positive scalar per update, the same on every "
        "rank, so V-trace and the truncation bootstrap need no change (every value, the "
        "cut-off states' included, is learnt in the same scaled units); the statistics are "
        "kept in the checkpoint"
    )
    reward_norm_std_floor: float = param(
        0.01, "normalize_rewards: divide by max(running std, this), so near-reward-less "
        "batches are not blown up; in reward units. On a sparse task use about 1: after a "
        "long reward-less stretch the running std is near 0, and the first success would be "
        "multiplied by up to 1 / this", gt=0
    )
    value_clip: float | None = param(
        1.0, "PPO's clipped value loss: the value may move at most this far from the value "
        "the acting policy gave the step before the loss stops pulling it (the larger of the "
        "clipped and unclipped squared errors is minimised); in the trained reward's units; "
        "null = off. It keeps one batch's first large reward from dragging the critic (and "
        "with it every advantage) far in one update", gt=0
    )
    kl_target: float | None = param(
        None, "the KL guard's target KL(behaviour || current) per update (measured from the "
        "update's own forward pass, averaged over every rank's batch); null = no guard", gt=0
    )
    kl_guard: Literal["lr", "penalty"] = param(
        "lr", "how the KL guard acts when kl_target is set: lr = Sample Factory's kl_adaptive "
        "(learning rate / 1.5 when KL > 2 x target, x 1.5 when KL < target / 2, within "
        "[1e-6, learner.lr]); penalty = RLlib APPO's KL loss (kl_coef x KL added to the loss, "
        "the coefficient x 1.5 / x 0.5 by the same rule)"
    )
    kl_coef: float = param(
        0.2, "kl_guard=penalty: the KL penalty's starting coefficient (it then adapts)", ge=0
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
