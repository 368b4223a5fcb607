"""The judge contract: label a batch of captions; compare pairs of captions; count.

Every backend (embedding, rules, openai, transformers, vllm) implements :class:`Judge`.
Backends that generate text subclass :class:`rewards.judges.text.TextJudge` and implement
only ``generate``: prompt rendering and strict parsing are shared, so every text judge reads
labels the same way.

An answer that cannot be parsed is never turned into a label: its ``label`` / ``preferred``
is ``None``, and the caller counts it (and may retry it).

Counters: ``stats()`` returns a :class:`JudgeStats` (every judge has one), which each backend
extends with its own fields; the annotator exports it flat, as ``judge_<name>``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

S = TypeVar("S", bound="JudgeStats")


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


def counts_by_kind(prefix: str) -> Any:
    """A :class:`JudgeStats` field holding counts by kind ({kind: n}); flat, each kind is the
    entry ``<prefix><kind>`` (kinds that never happened have none)."""
    return dataclasses.field(default_factory=dict, metadata={"prefix": prefix})


@dataclass
class JudgeStats(Mapping[str, float]):
    """Counters of one judge since construction, common to every backend; backends extend it
    with fields of their own. Typed attributes for code, and a read-only flat mapping
    {name: float} for metrics (the annotator exports it as ``judge_<name>``)."""

    labels: int = 0  # captions asked to label
    labels_empty: int = 0  # empty after sanitising: labelled not helpful without asking
    comparisons: int = 0  # caption pairs asked to compare

    def as_dict(self) -> dict[str, float]:
        """Every field as a float; a :func:`counts_by_kind` field as one entry per kind; a
        field holding another judge's stats (the guard's backend) as its entries."""
        out: dict[str, float] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if "prefix" in field.metadata:
                out |= {f"{field.metadata['prefix']}{k}": float(v) for k, v in value.items()}
            elif isinstance(value, JudgeStats):
                out |= value.as_dict()
            else:
                out[field.name] = float(value)
        return out

    def extend(self, cls: type[S], **fields: Any) -> S:
        """These counters as a ``cls`` (a subclass), with ``fields`` set besides."""
        mine = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return cls(**mine, **fields)

    def __getitem__(self, key: str) -> float:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())


class Judge(ABC):
    """A labeller of captions. Implementations may batch, retry and time out internally."""

    name: str = "judge"

    @abstractmethod
    def label(self, captions: Sequence[str]) -> list[Verdict]:
        """One verdict per caption, in order."""

    @abstractmethod
    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        """One preference per (first, second) pair, in order, asked in that order only."""

    def stats(self) -> JudgeStats:
        """A snapshot of the counters since construction. Every backend overrides it; a judge
        that counts nothing (a test double) reports zeros."""
        return JudgeStats()

    @property
    def answer_mode(self) -> str | None:
        """How a text judge gets its answers (``free``, ``constrained``, ``logprob``: see
        ``rewards.judges.text``); None for a judge that computes its verdicts."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engines, sessions or threads."""
