"""The numeric precision of the policy network's matrix products: float32 or bfloat16.

``rollout.precision`` (the actors' inference) and ``learner.precision`` (the learner's forward
pass) take ``auto``, ``float32`` or ``bfloat16``. bfloat16 runs the network under
``torch.autocast``: convolutions, linear layers and the GRU compute in bfloat16 while the
weights, the optimiser's state, the core state carried between steps, V-trace and the losses
stay float32. It pays only on hardware with bfloat16 arithmetic: a GPU that supports it, or a
CPU with AVX512-BF16 or AMX. Elsewhere torch emulates it, and emulation is slower than float32
(on an AVX2-only EPYC here: inference 2.6x, a learner update 10.7x slower; docs/scaling.md).
``auto`` picks bfloat16 only where the hardware has it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
# CPU flags (Linux /proc/cpuinfo) that mean bfloat16 matrix arithmetic in hardware.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (empty where /proc/cpuinfo is missing: macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_in_hardware(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (emulated bfloat16 is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & BF16_CPU_FLAGS)


def resolve(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``: ``auto`` is bfloat16 only where the
    hardware has it. An explicit ``bfloat16`` is obeyed, with a warning where it is emulated."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    native = bf16_in_hardware(device)
    if precision == "auto":
        return torch.bfloat16 if native else torch.float32
    if precision == "bfloat16" and not native:
        log.warning("precision=bfloat16 on %s without bfloat16 hardware: torch emulates it, "
                    "slower than float32 (use auto or float32)", device)
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def compute_in(dtype: torch.dtype, device: torch.device) -> contextlib.AbstractContextManager:
    """Run the network's products in ``dtype`` inside the block (float32: a no-op context,
    nothing added to the rollout step's hot path)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
