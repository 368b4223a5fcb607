"""TransformersJudge on the real instruction-tuned model (SmolLM2-135M-Instruct, made by
``make judge-model``): free text, constrained answers and log-probability labels.

A 135M model judges near chance: these tests prove the path (prompt, forced tag, label tokens,
parsing, counting), not the quality of its labels. The model is loaded once for the module;
each test sets the judge's config it needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from bench.tools import judge_model
from rewards.config import JudgeConfig, TransformersJudgeConfig
from rewards.judges import make_judge
from rewards.judges.text import LABEL_CHOICES, LABEL_OPEN
from rewards.judges.transformers_judge import TransformersJudge
from tests.helpers.captions import NETHACK_MESSAGES
from tests.helpers.tiny_lm import build_tiny_causal_lm

pytestmark = pytest.mark.system  # generates with a real LLM: tens of seconds a test

CAPTIONS = list(NETHACK_MESSAGES)
PAIRS = [(CAPTIONS[0], CAPTIONS[1]), (CAPTIONS[2], CAPTIONS[3])]


@pytest.fixture(scope="module")
def judge() -> TransformersJudge:
    if not judge_model.is_ready():
        pytest.skip(f"SKIPPED, NOT TESTED: no judge model at {judge_model.DEFAULT_DIR} "
                    "(run `make judge-model`)")
    # The backend alone (guard off): these tests are about the model's answers.
    model = TransformersJudgeConfig(model=str(judge_model.DEFAULT_DIR))
    cfg = JudgeConfig(backend="transformers", transformers=model, batch_size=8, max_retries=0,
                      guard=False)
    made = make_judge(cfg, env_id="NetHackScore-v0")
    assert isinstance(made, TransformersJudge) and made.use_chat
    return made


def configure(judge: TransformersJudge, **overrides: object) -> TransformersJudge:
    """The module's judge with fresh counters and ``overrides`` on its config."""
    judge.cfg = dataclasses.replace(judge.cfg, **overrides)  # type: ignore[arg-type]
    judge.counters = type(judge.counters)()
    return judge


def test_free_text_answers_are_counted_never_labels(judge: TransformersJudge) -> None:
    # The finding: unconstrained, the model writes no label tag within its budget.
    configure(judge, scoring="generate", constrained=False, max_new_tokens=24)
    prompt = judge.render_label(CAPTIONS[0])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    verdicts = judge.label([*CAPTIONS[:3], ""])
    assert [v.label for v in verdicts] == [None, None, None, False]
    # The answer is the generated text only: the prompt (which ends with label tags) is
    # never echoed back into it.
    assert all(v.raw and "Please rate this message" not in v.raw for v in verdicts[:3])
    stats = judge.stats()
    assert stats["labels_empty"] == 1
    assert stats["label_parse_failures"] == stats["label_unparseable"] == 3


def test_constrained_answers_always_parse(judge: TransformersJudge) -> None:
    configure(judge, scoring="generate", constrained=True)
    verdicts = judge.label(CAPTIONS)
    assert all(isinstance(v.label, bool) and v.answered for v in verdicts)
    assert all(v.raw in ("<label> FOO </label>", "<label> BAR </label>") for v in verdicts)
    prefs = judge.compare(PAIRS)
    assert all(p.preferred in (0, 1, -1) for p in prefs)
    stats = judge.stats()
    assert stats["label_parse_failures"] == stats["compare_parse_failures"] == 0
    assert stats["label_generations"] == len(CAPTIONS)  # one ask each: nothing retried

    # Greedy constrained decoding agrees with the probabilities it walks: FOO iff P(FOO) > 1/2.
    configure(judge, scoring="logprob", threshold=0.5)
    probs = [v.prob for v in judge.label(CAPTIONS)]
    assert [v.label for v in verdicts] == [p > 0.5 for p in probs]


def test_logprob_labels_are_thresholded_probabilities(judge: TransformersJudge) -> None:
    configure(judge, scoring="logprob", threshold=0.5)
    verdicts = judge.label(CAPTIONS)
    probs = [v.prob for v in verdicts]
    assert all(p is not None and 0.0 <= p <= 1.0 for p in probs)
    assert [v.label for v in verdicts] == [p > 0.5 for p in probs]
    assert judge.stats()["label_parse_failures"] == 0
    # The threshold is the cut: at the median probability, the labels split there.
    middle = sorted(probs)[len(probs) // 2]
    configure(judge, scoring="logprob", threshold=middle)
    assert [v.label for v in judge.label(CAPTIONS)] == [p > middle for p in probs]

    # Known answer: P(FOO) is the model's probability of " FOO"'s first token after the tag,
    # renormalised over FOO's and BAR's, from one unpadded forward pass (the judge's own pass
    # is batched and left-padded, so this also checks the padding and positions).
    ids = judge.tokenizer(judge.render_label(CAPTIONS[0]) + LABEL_OPEN,
                          add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        last = judge.model(input_ids=ids).logits[0, -1]
    first = [judge.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in LABEL_CHOICES]
    expected = torch.softmax(last[first], dim=-1)[0].item()
    assert probs[0] == pytest.approx(expected, abs=1e-4)

    configure(judge, scoring="logprob")
    prefs = judge.compare(PAIRS + [(b, a) for a, b in PAIRS])
    assert all(p.prob_first is not None and 0.0 <= p.prob_first <= 1.0 for p in prefs)
    assert all(p.preferred in (0, 1, -1) for p in prefs)
    assert judge.stats()["compare_parse_failures"] == 0


def test_thinking_aloud_comes_before_the_forced_tag(judge: TransformersJudge) -> None:
    configure(judge, scoring="generate", constrained=True, think_tokens=6)
    verdicts = judge.label(CAPTIONS[:2])
    for v in verdicts:
        assert isinstance(v.label, bool)
        thought, tag = v.raw.rsplit("<label>", 1)
        assert thought.strip() and tag in (" FOO </label>", " BAR </label>")
    assert judge.stats()["label_parse_failures"] == 0


def test_generation_budget_stop_and_batch_independence(judge: TransformersJudge) -> None:
    prompts = [judge.render_label(c) for c in CAPTIONS[:2]]
    configure(judge, batch_size=1)
    one = judge.generate(prompts, max_new_tokens=6)
    configure(judge, batch_size=4)
    assert judge.generate(prompts, max_new_tokens=6) == one
    for text in one:
        assert text and len(judge.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 6
    # Generation ends at a stop string, which is not returned.
    (full,) = judge.generate(prompts[:1], max_new_tokens=6)
    stop = full.split()[1]
    (cut,) = judge.generate(prompts[:1], max_new_tokens=6, stop=[stop])
    assert cut == full[: full.index(stop)]


def test_prompt_longer_than_the_context_fails_alone(judge: TransformersJudge) -> None:
    configure(judge, max_retries=0, max_new_tokens=4)
    saved = judge.max_positions
    judge.max_positions = len(judge.tokenizer(judge.render_label("x"))["input_ids"]) + 4 + 3
    try:
        answers = judge.generate([judge.render_label("x"), judge.render_label("x " * 200)])
        assert answers[0] is not None and answers[1] is None
        probs = judge.choice_probs(
            [judge.render_label("x") + LABEL_OPEN, judge.render_label("x " * 200) + LABEL_OPEN],
            LABEL_CHOICES,
        )
        assert probs[0] is not None and probs[1] is None
        assert judge.stats()["prompts_too_long"] >= 2
    finally:
        judge.max_positions = saved


def test_tiny_model_directory_is_vllm_shaped(tmp_path: Path) -> None:
    # The random tiny model is still what the annotation bench measures throughput on.
    tiny_lm = build_tiny_causal_lm(tmp_path / "tiny")
    config = json.loads((tiny_lm / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == 32
    assert config["vocab_size"] <= 1024
    assert (tiny_lm / "model.safetensors").is_file()
    tokenizer_config = json.loads((tiny_lm / "tokenizer_config.json").read_text())
    chat_template = tokenizer_config.get("chat_template") or (
        (tiny_lm / "chat_template.jinja").read_text()
    )
    assert "add_generation_prompt" in chat_template
