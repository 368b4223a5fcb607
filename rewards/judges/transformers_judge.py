"""TransformersJudge: a local Hugging Face causal LM answering ONI's prompts on CPU.

Consumes prompts rendered by :class:`~rewards.judges.text.TextJudge` (through the tokenizer's
chat template when it has one); emits the generated text only (never the echoed prompt, whose
own example tags would otherwise be parsed as the answer). Batched greedy decoding, or sampling
when ``cfg.temperature > 0``. Loads with ``local_files_only``: nothing is ever downloaded.

Constrained answers and log-probability labels share one forward pass per batch of prompts
(each ending in the answer's opening tag): the logits after the tag, read only at the choices'
tokens (:func:`~rewards.judges.text.constrained_probs`). ``choose`` walks them greedily (or
samples at ``cfg.temperature``), which is what logits restricted to the label tokens decode.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rewards.config import JudgeConfig
from rewards.judges.text import (
    TextJudge,
    TextJudgeStats,
    constrained_choice,
    constrained_probs,
    decision_depths,
)

# log P(token | prompt + prefix), as constrained_probs reads it.
LogprobFn = Callable[[tuple[int, ...], int], float]


@dataclass
class TransformersStats(TextJudgeStats):
    """The text judge's counters plus the prompts too long for the model's context."""

    prompts_too_long: int = 0  # failed alone (None), never cut: see _generate_batch


class TransformersJudge(TextJudge):
    """A text judge on ``AutoModelForCausalLM`` loaded from ``cfg.transformers.model``."""

    name = "transformers"
    supports_choices = True

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
        super().__init__(cfg, task)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = cfg.transformers.model
        model_dir = Path(model)
        if not model or not model_dir.is_dir():
            raise FileNotFoundError(
                f"transformers judge: rewards.judge.transformers.model must be a local model "
                f"directory, got {model!r}"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        # Left padding: generation continues from the last token of every row in the batch.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, dtype=torch.float32
        ).eval()
        self._has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self.counters: TransformersStats = TransformersStats()
        self._rng = random.Random(0)  # constrained sampling at temperature > 0, reproducible

    @property
    def use_chat(self) -> bool:
        """Chat prompts exactly when the model has a chat template (``cfg.api`` is not read)."""
        return self._has_chat_template

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The model's own chat template, rendered here: a model without one gets completion
        strings (``use_chat`` is off)."""
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[str | None]:
        out: list[str | None] = []
        size = self.cfg.batch_size
        budget = max_new_tokens or self.cfg.max_new_tokens
        for start in range(0, len(prompts), size):
            batch = list(prompts[start : start + size])
            out.extend(self._generate_batch(batch, budget, list(stop or ())))
        return out

    def choose(self, prompts: Sequence[str], choices: Sequence[str]) -> list[str | None]:
        """Greedy (or sampled) decoding restricted to the tokens that continue some choice:
        the same forward pass as :meth:`choice_probs`, walked token by token."""
        out: list[str | None] = []
        for batch in self._choice_logprobs(prompts, choices):
            for item in batch:
                if item is None:
                    out.append(None)
                    continue
                sequences, logprob = item
                index = constrained_choice(
                    sequences, logprob, temperature=self.cfg.temperature, rng=self._rng
                )
                out.append(choices[index])
        return out

    def choice_probs(
        self, prompts: Sequence[str], choices: Sequence[str]
    ) -> list[list[float] | None]:
        out: list[list[float] | None] = []
        for batch in self._choice_logprobs(prompts, choices):
            out.extend(None if item is None else constrained_probs(*item) for item in batch)
        return out

    def _encode(self, prompt: str) -> list[int]:
        # The chat template already holds the special tokens; adding BOS again would double it.
        return self.tokenizer(prompt, add_special_tokens=not self.use_chat)["input_ids"]

    def _choice_logprobs(
        self, prompts: Sequence[str], choices: Sequence[str]
    ) -> list[list[tuple[list[list[int]], LogprobFn] | None]]:
        """Per batch of ``cfg.batch_size`` prompts, one forward pass; per prompt, the choices'
        token ids and log P(token | prompt + prefix) for the tokens :func:`constrained_probs`
        reads (None for a prompt that does not fit the context)."""
        # Token ids of each choice on its own: the prompt ends in a tag (">") that no choice's
        # leading space merges with, so prompt ids + choice ids is how the text tokenises.
        sequences = [
            self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices
        ]
        depths = decision_depths(sequences)
        # The prefixes after which the model is asked something; the longest of them, on the
        # prompt, is all the forward pass needs (its logits hold every shorter prefix's).
        nodes = {tuple(seq[:d]) for seq, d in zip(sequences, depths, strict=True)}
        nodes |= {n[:j] for n in nodes for j in range(len(n))}
        tails = [n for n in nodes if not any(m != n and m[: len(n)] == n for m in nodes)]
        extra = max(len(t) for t in tails)
        size = self.cfg.batch_size
        return [
            self._score_batch(list(prompts[i : i + size]), sequences, tails, extra)
            for i in range(0, len(prompts), size)
        ]

    @torch.inference_mode()
    def _score_batch(
        self, prompts: list[str], sequences: list[list[int]], tails: list[tuple[int, ...]],
        extra: int,
    ) -> list[tuple[list[list[int]], LogprobFn] | None]:
        ids = [self._encode(p) for p in prompts]
        budget = self.max_positions - extra if self.max_positions else None
        fits = [i for i, x in enumerate(ids) if budget is None or len(x) <= budget]
        self.counters.prompts_too_long += len(prompts) - len(fits)
        rows = [(i, tail) for i in fits for tail in tails]
        out: list[tuple[list[list[int]], LogprobFn] | None] = [None] * len(prompts)
        if not rows:
            return out
        batch = self.tokenizer.pad(
            {"input_ids": [ids[i] + list(tail) for i, tail in rows]}, padding=True,
            return_tensors="pt",
        )
        mask = batch["attention_mask"]
        # Left padding: positions count real tokens only, as they would unpadded.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # Only the last positions' logits: the vocabulary projection of every prompt position
        # would cost more than the rest of the pass (49k x 576 per token on SmolLM2).
        keep = max(len(tail) for _, tail in rows) + 1
        logits = self.model(
            input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions,
            logits_to_keep=keep,
        ).logits
        width = logits.shape[1]
        # log P(. | prompt + node) for every node: the row whose tail extends that node, at
        # the node's last position.
        tables: dict[int, dict[tuple[int, ...], torch.Tensor]] = {i: {} for i in fits}
        for row, (i, tail) in enumerate(rows):
            for j in range(len(tail) + 1):
                node = tail[:j]
                if node not in tables[i]:
                    at = width - 1 - (len(tail) - j)
                    tables[i][node] = torch.log_softmax(logits[row, at].float(), dim=-1)
        for i in fits:
            table = tables[i]
            out[i] = (sequences, lambda node, tok, t=table: float(t[node][tok]))
        return out

    @torch.inference_mode()
    def _generate_batch(
        self, prompts: list[str], max_new_tokens: int, stop: list[str]
    ) -> list[str | None]:
        ids = [self._encode(p) for p in prompts]
        budget = self.max_positions - max_new_tokens if self.max_positions else None
        # A prompt that does not fit fails alone (None, counted as a request failure) rather
        # than being cut, which would drop the instructions or the caption itself.
        fits = [i for i, x in enumerate(ids) if budget is None or len(x) <= budget]
        self.counters.prompts_too_long += len(prompts) - len(fits)
        answers: list[str | None] = [None] * len(prompts)
        if not fits:
            return answers
        batch = self.tokenizer.pad(
            {"input_ids": [ids[i] for i in fits]}, padding=True, return_tensors="pt"
        )
        sample = self.cfg.temperature > 0
        generated = self.model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=self.cfg.temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=stop or None,
            tokenizer=self.tokenizer if stop else None,
        )
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for i, text in zip(fits, texts, strict=True):
            answers[i] = _cut(text, stop)
        return answers

def _cut(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first of ``stop`` (generation stops after the string, not before)."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(ends)] if ends else text
