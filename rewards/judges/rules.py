"""RulesJudge: a caption is helpful when one of a list of regexes matches it.

Consumes captions; emits verdicts and preferences without any model, instantly, so tests and
the toy corridor env can run the whole annotation path. The regexes are
``rewards.judge.rules.positive``, or the task's defaults from the prompt file when that is empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rewards.config import JudgeConfig
from rewards.judges.base import Judge, JudgeStats, Preference, Verdict
from rewards.parse import sanitize_caption
from rewards.prompts import load_prompts, regex_error


@dataclass
class RulesStats(JudgeStats):
    """The common counters plus the captions labelled helpful."""

    labels_helpful: int = 0


class RulesJudge(Judge):
    """Regex judge. compare: the caption that matches wins; both or neither is a tie."""

    name = "rules"

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
        patterns = list(cfg.rules.positive) or list(
            load_prompts(cfg.prompts).rules.get(task, ())
        )
        if not patterns:
            raise ValueError(
                f"rules judge: no regexes for task {task!r}: set rewards.judge.rules.positive "
                f"or add rules.{task} to {cfg.prompts}"
            )
        errors = [e for e in map(regex_error, patterns) if e]
        if errors:
            raise ValueError("rules judge: rewards.judge.rules.positive: " + "; ".join(errors))
        self._patterns = [re.compile(p) for p in patterns]
        self._max_chars = cfg.max_caption_chars
        self.counters = RulesStats()

    def helpful(self, caption: str) -> bool:
        clean = sanitize_caption(caption, self._max_chars)
        if not clean:
            self.counters.labels_empty += 1
            return False
        return any(p.search(clean) for p in self._patterns)

    def label(self, captions: Sequence[str]) -> list[Verdict]:
        verdicts = [Verdict(c, self.helpful(c), raw="rules") for c in captions]
        self.counters.labels += len(verdicts)
        self.counters.labels_helpful += sum(bool(v.label) for v in verdicts)
        return verdicts

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        self.counters.comparisons += len(pairs)
        out = []
        for first, second in pairs:
            a, b = self.helpful(first), self.helpful(second)
            out.append(Preference(first, second, preferred=-1 if a == b else (0 if a else 1)))
        return out

    def stats(self) -> RulesStats:
        return replace(self.counters)
