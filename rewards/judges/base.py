"""The judge contract: label a batch of captions; compare pairs of captions.

Every backend (embedding, rules, openai, transformers, vllm) implements :class:`Judge`.
Backends that generate text subclass :class:`TextJudge` and implement only ``generate``:
prompt rendering (``rewards.prompts``) and strict parsing (``rewards.parse``) are shared,
so every text judge reads labels the same way.

An answer that cannot be parsed is never turned into a label: its ``label`` / ``preferred``
is ``None``, and the caller counts it (and may retry it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rewards.prompts import load_prompts

if TYPE_CHECKING:
    from rewards.config import JudgeConfig


@dataclass(frozen=True)
class Verdict:
    """The judge's answer to "is this caption helpful for the goal?"."""

    caption: str
    label: bool | None  # None: the answer could not be parsed, or there was none
    raw: str = ""  # the judge's text, kept for audit and debugging
    # False: the judge gave no answer at all (server down, HTTP error, garbage body). That is
    # an outage, not the caption's fault: the annotator waits instead of spending retries.
    answered: bool = True


@dataclass(frozen=True)
class Preference:
    """The judge's answer to "which of these two captions is better for the goal?"."""

    first: str
    second: str
    preferred: int | None  # 0 = first, 1 = second, -1 = tie, None = unparseable
    raw: str = ""


class Judge(ABC):
    """A labeller of captions. Implementations may batch, retry and time out internally."""

    name: str = "judge"

    @abstractmethod
    def label(self, captions: Sequence[str]) -> list[Verdict]:
        """One verdict per caption, in order."""

    @abstractmethod
    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        """One preference per (first, second) pair, in order, asked in that order only."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engines, sessions or threads."""


class TextJudge(Judge):
    """A judge that answers prompts with text; see ``rewards.prompts`` and ``rewards.parse``.

    Subclasses implement ``generate``; the shared ``label``/``compare`` (sanitise, render,
    generate, parse strictly, retry unparseable answers, count) live in
    ``rewards.judges.text``. A subclass may override ``render_label``/``render_compare`` to
    apply its chat template.
    """

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
        from rewards.judges.text import TextJudgeStats  # text imports this module

        self.cfg = cfg
        self.task = task
        self.prompts = load_prompts(cfg.prompts)
        self.prompts.goal(task)  # an unknown task fails here, not at the first caption
        self.counters = TextJudgeStats()

    @abstractmethod
    def generate(self, prompts: Sequence[str]) -> list[str | None]:
        """One completion per prompt, in order; None where the request failed for good."""

    def render_label(self, caption: str) -> str:
        """The prompt sent for one (already sanitised) caption."""
        return self.prompts.render_label_prompt(caption, task=self.task)

    def render_compare(self, first: str, second: str) -> str:
        """The prompt sent for one (already sanitised) pair, in that order."""
        return self.prompts.render_compare_prompt(first, second, task=self.task)

    def label(self, captions: Sequence[str]) -> list[Verdict]:
        from rewards.judges.text import label_captions

        return label_captions(self, captions)

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        from rewards.judges.text import compare_pairs

        return compare_pairs(self, pairs)

    def stats(self) -> dict[str, float]:
        """Counters since construction (requests, retries, parse failures, generate time)."""
        return self.counters.as_dict()
