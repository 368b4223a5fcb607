"""The judge guard in front of the transformers backend, on the real instruction-tuned model
(SmolLM2-135M-Instruct, ``make judge-model``); the check itself is tests/helpers/guard_check.py.
The same check on the vLLM engine is in tests/test_judge_vllm.py, on that module's engine.
The model judges near chance, so nothing here asserts its labels for real messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.tools import judge_model
from rewards.config import JudgeConfig, TransformersJudgeConfig
from rewards.judges import TextJudge
from tests.helpers.guard_check import RecordsPrompts, check_guarded

pytestmark = [pytest.mark.slow, pytest.mark.system]


def _model_dir() -> Path:
    if not judge_model.is_ready():
        pytest.skip(f"SKIPPED, NOT TESTED: no judge model at {judge_model.DEFAULT_DIR}; "
                    "build it with `make judge-model`")
    return judge_model.DEFAULT_DIR


def _cfg(**overrides: Any) -> JudgeConfig:
    base: dict[str, Any] = {"max_new_tokens": 4, "max_retries": 0, "batch_size": 4,
                            "temperature": 0.0,
                            "transformers": TransformersJudgeConfig(model=str(_model_dir()))}
    return JudgeConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def transformers_judge() -> Iterator[TextJudge]:
    from rewards.judges.transformers_judge import TransformersJudge

    class Recording(RecordsPrompts, TransformersJudge):
        pass

    judge = Recording(_cfg(backend="transformers"), "score")
    yield judge
    judge.close()


def test_transformers_backend_behind_the_guard(transformers_judge: TextJudge) -> None:
    check_guarded(transformers_judge)
