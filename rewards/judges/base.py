"""The judge contract: label a batch of captions; compare pairs of captions.

Every backend (embedding, rules, openai, transformers, vllm) implements :class:`Judge`.
Backends that generate text subclass :class:`rewards.judges.text.TextJudge` and implement
only ``generate``: prompt rendering and strict parsing are shared, so every text judge reads
labels the same way.

An answer that cannot be parsed is never turned into a label: its ``label`` / ``preferred``
is ``None``, and the caller counts it (and may retry it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """The judge's answer to "is this caption helpful for the goal?"."""

    caption: str
    label: bool | None  # None: the answer could not be parsed, or there was none
    raw: str = ""  # the judge's text, kept for audit and debugging
    # False: the judge gave no answer at all (server down, HTTP error, garbage body). That is
    # an outage, not the caption's fault: the annotator waits instead of spending retries.
    answered: bool = True
    # P(helpful) where the backend gives one (log-probability scoring, embedding similarity);
    # None where it gives only a verdict. ``label`` is then ``prob > rewards.judge.threshold``.
    prob: float | None = None


@dataclass(frozen=True)
class Preference:
    """The judge's answer to "which of these two captions is better for the goal?"."""

    first: str
    second: str
    preferred: int | None  # 0 = first, 1 = second, -1 = tie, None = unparseable
    raw: str = ""
    # P(first is better than second) where the backend gives one (log-probability scoring);
    # None otherwise.
    prob_first: float | None = None


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
