"""The config the learner's known-answer tests start from."""

from __future__ import annotations

from cluster.config import OniConfig
from learner.config import LEARNER_PRESETS


def plain_learner_config(**learner: object) -> OniConfig:
    """The default config with the plain learner (no whitening, no value clip: APPO's own
    loss, whose answers the tests compute by hand) and ``learner``'s keys set over it.

    float32 is pinned: on a CPU with AVX512-BF16, precision=auto would compute the forward
    pass in bfloat16 (tests/test_precision.py tests that path against float32)."""
    cfg = OniConfig()
    cfg.learner.precision = "float32"
    for key, value in {**LEARNER_PRESETS["plain"], **learner}.items():
        setattr(cfg.learner, key, value)
    return cfg
