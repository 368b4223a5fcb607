"""TransformersJudge: a local Hugging Face causal LM answering ONI's prompts on CPU.

Consumes prompts rendered by :class:`~rewards.judges.text.TextJudge` (through the tokenizer's
chat template when it has one); emits the generated text only (never the echoed prompt, whose
own example tags would otherwise be parsed as the answer). Batched greedy decoding, or sampling
when ``cfg.temperature > 0``. Loads with ``local_files_only``: nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from rewards.config import JudgeConfig
from rewards.judges.text import TextJudge


class TransformersJudge(TextJudge):
    """A text judge on ``AutoModelForCausalLM`` loaded from the directory ``cfg.model``."""

    name = "transformers"

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
        super().__init__(cfg, task)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(cfg.model)
        if not cfg.model or not model_dir.is_dir():
            raise FileNotFoundError(
                f"transformers judge: rewards.judge.model must be a local model directory, "
                f"got {cfg.model!r}"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        # Left padding: generation continues from the last token of every row in the batch.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, torch_dtype=torch.float32
        ).eval()
        self.use_chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self.prompts_too_long = 0

    def render_label(self, caption: str) -> str:
        if not self.use_chat:
            return super().render_label(caption)
        return self._chat(self.prompts.render_label_messages(caption, task=self.task))

    def render_compare(self, first: str, second: str) -> str:
        if not self.use_chat:
            return super().render_compare(first, second)
        return self._chat(self.prompts.render_compare_messages(first, second, task=self.task))

    def _chat(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def generate(self, prompts: Sequence[str]) -> list[str | None]:
        out: list[str | None] = []
        size = self.cfg.batch_size
        for start in range(0, len(prompts), size):
            out.extend(self._generate_batch(list(prompts[start : start + size])))
        return out

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[str]) -> list[str | None]:
        # The chat template already holds the special tokens; adding BOS again would double it.
        special = not self.use_chat
        ids = [self.tokenizer(p, add_special_tokens=special)["input_ids"] for p in prompts]
        budget = self.max_positions - self.cfg.max_new_tokens if self.max_positions else None
        # A prompt that does not fit fails alone (None, counted as a request failure) rather
        # than being cut, which would drop the instructions or the caption itself.
        fits = [i for i, x in enumerate(ids) if budget is None or len(x) <= budget]
        self.prompts_too_long += len(prompts) - len(fits)
        answers: list[str | None] = [None] * len(prompts)
        if not fits:
            return answers
        batch = self.tokenizer.pad(
            {"input_ids": [ids[i] for i in fits]}, padding=True, return_tensors="pt"
        )
        sample = self.cfg.temperature > 0
        generated = self.model.generate(
            **batch,
            max_new_tokens=self.cfg.max_new_tokens,
            do_sample=sample,
            temperature=self.cfg.temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for i, text in zip(fits, texts, strict=True):
            answers[i] = text
        return answers

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "prompts_too_long": float(self.prompts_too_long)}
