"""Text judges: the base class of the backends that answer prompts with text, and their
shared logic: sanitise, render, generate, parse strictly, retry, count.

Consumes a :class:`TextJudge` (its ``generate`` and ``render_*``) and captions or caption
pairs. Emits one Verdict / Preference per input, in order. An answer that cannot be parsed is
asked again, up to ``cfg.max_retries`` times, and is otherwise returned as None and counted:
it never becomes a label.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, TypeVar

from rewards.judges.base import Judge, Preference, Verdict
from rewards.parse import parse_label, parse_preference, sanitize_caption
from rewards.prompts import load_prompts

if TYPE_CHECKING:
    from rewards.config import JudgeConfig

T = TypeVar("T")


@dataclass
class TextJudgeStats:
    """Counters of one text judge since construction."""

    labels: int = 0  # captions asked to label
    labels_empty: int = 0  # empty after sanitising: labelled not helpful without asking
    label_generations: int = 0  # prompts sent, retries included
    label_request_failures: int = 0  # generate returned None
    label_parse_failures: int = 0  # answers without a readable final <label> tag
    label_unparseable: int = 0  # captions still unparsed after every retry
    comparisons: int = 0
    comparisons_empty: int = 0  # both captions empty: a tie without asking
    compare_generations: int = 0
    compare_request_failures: int = 0
    compare_parse_failures: int = 0
    compare_unparseable: int = 0
    generate_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


class TextJudge(Judge):
    """A judge that answers prompts with text; see ``rewards.prompts`` and ``rewards.parse``.

    Subclasses implement ``generate``; the shared ``label``/``compare`` (sanitise, render,
    generate, parse strictly, retry unparseable answers, count) are the functions below. A
    subclass may override ``render_label``/``render_compare`` to apply its chat template.
    """

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
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
        return label_captions(self, captions)

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        return compare_pairs(self, pairs)

    def stats(self) -> dict[str, float]:
        """Counters since construction (requests, retries, parse failures, generate time)."""
        return self.counters.as_dict()


def _ask(
    judge: TextJudge,
    prompts: list[str],
    parse: Callable[[str | None], T | None],
    *,
    kind: str,
) -> list[tuple[T | None, str | None]]:
    """(parsed, raw) per prompt; re-asks the unparsed ones up to ``max_retries`` times. raw is
    None where no attempt got an answer (the request failed every time)."""
    stats = judge.counters
    results: list[tuple[T | None, str | None]] = [(None, None)] * len(prompts)
    pending = list(range(len(prompts)))
    for _ in range(1 + judge.cfg.max_retries):
        if not pending:
            break
        start = time.perf_counter()
        answers = judge.generate([prompts[i] for i in pending])
        stats.generate_seconds += time.perf_counter() - start
        if len(answers) != len(pending):
            raise RuntimeError(
                f"{judge.name}.generate returned {len(answers)} answers for {len(pending)} prompts"
            )
        _add(stats, f"{kind}_generations", len(pending))
        still = []
        for i, answer in zip(pending, answers, strict=True):
            if answer is None:
                _add(stats, f"{kind}_request_failures", 1)
                still.append(i)
                continue
            parsed = parse(answer)
            results[i] = (parsed, answer)
            if parsed is None:
                _add(stats, f"{kind}_parse_failures", 1)
                still.append(i)
        pending = still
    _add(stats, f"{kind}_unparseable", len(pending))
    return results


def _add(stats: TextJudgeStats, name: str, n: int) -> None:
    setattr(stats, name, getattr(stats, name) + n)


def label_captions(judge: TextJudge, captions: Sequence[str]) -> list[Verdict]:
    """One verdict per caption. Empty captions are not sent: they are labelled not helpful."""
    limit = judge.cfg.max_caption_chars
    clean = [sanitize_caption(c, limit) for c in captions]
    judge.counters.labels += len(captions)
    asked = [i for i, c in enumerate(clean) if c]
    judge.counters.labels_empty += len(captions) - len(asked)
    answers = _ask(judge, [judge.render_label(clean[i]) for i in asked], parse_label, kind="label")
    verdicts = [Verdict(caption=c, label=False, raw="") for c in captions]
    for i, (label, raw) in zip(asked, answers, strict=True):
        verdicts[i] = Verdict(caption=captions[i], label=label, raw=raw or "",
                              answered=raw is not None)
    return verdicts


def compare_pairs(judge: TextJudge, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
    """One preference per pair, asked in the given order only. Two empty captions are a tie
    without asking; one empty caption is still asked (the prompt allows empty descriptions)."""
    limit = judge.cfg.max_caption_chars
    clean = [(sanitize_caption(a, limit), sanitize_caption(b, limit)) for a, b in pairs]
    judge.counters.comparisons += len(pairs)
    asked = [i for i, (a, b) in enumerate(clean) if a or b]
    judge.counters.comparisons_empty += len(pairs) - len(asked)
    prompts = [judge.render_compare(*clean[i]) for i in asked]
    answers = _ask(judge, prompts, parse_preference, kind="compare")
    prefs = [Preference(first=a, second=b, preferred=-1) for a, b in pairs]
    for i, (preferred, raw) in zip(asked, answers, strict=True):
        prefs[i] = Preference(pairs[i][0], pairs[i][1], preferred=preferred, raw=raw or "")
    return prefs


def _swap(preferred: int) -> int:
    return {0: 1, 1: 0}.get(preferred, preferred)


def compare_both_orders(judge: Judge, pairs: Sequence[tuple[str, str]]) -> list[int | None]:
    """Ask every pair as (a, b) and as (b, a), in one batch, to cancel the judge's position
    bias (LLMs favour one slot). Agreement -> that answer (0 = a, 1 = b, -1 = tie);
    disagreement -> -1; None when either order was unparseable."""
    pairs = list(pairs)
    prefs = judge.compare(pairs + [(b, a) for a, b in pairs])
    out: list[int | None] = []
    for forward, backward in zip(prefs[: len(pairs)], prefs[len(pairs) :], strict=True):
        if forward.preferred is None or backward.preferred is None:
            out.append(None)
        elif forward.preferred == _swap(backward.preferred):
            out.append(forward.preferred)
        else:
            out.append(-1)
    return out
