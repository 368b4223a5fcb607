"""RulesJudge: a caption is helpful when one of a list of regexes matches it.

Consumes captions; emits verdicts and preferences without any model, instantly, so tests and
the toy corridor env can run the whole annotation path. The regexes are
``JudgeConfig.rules_positive``, or the task's defaults from the prompt file when that is empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rewards.config import JudgeConfig
from rewards.judges.base import Judge, Preference, Verdict
from rewards.parse import sanitize_caption
from rewards.prompts import load_prompts, regex_error


class RulesJudge(Judge):
    """Regex judge. compare: the caption that matches wins; both or neither is a tie."""

    name = "rules"

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
        patterns = list(cfg.rules_positive) or list(load_prompts(cfg.prompts).rules.get(task, ()))
        if not patterns:
            raise ValueError(
                f"rules judge: no regexes for task {task!r}: set rewards.judge.rules_positive "
                f"or add rules.{task} to {cfg.prompts}"
            )
        errors = [e for e in map(regex_error, patterns) if e]
        if errors:
            raise ValueError("rules judge: rewards.judge.rules_positive: " + "; ".join(errors))
        self._patterns = [re.compile(p) for p in patterns]
        self._max_chars = cfg.max_caption_chars
        self._counts = {"labels": 0, "labels_empty": 0, "labels_helpful": 0, "comparisons": 0}

    def helpful(self, caption: str) -> bool:
        clean = sanitize_caption(caption, self._max_chars)
        if not clean:
            self._counts["labels_empty"] += 1
            return False
        return any(p.search(clean) for p in self._patterns)

    def label(self, captions: Sequence[str]) -> list[Verdict]:
        verdicts = [Verdict(c, self.helpful(c), raw="rules") for c in captions]
        self._counts["labels"] += len(verdicts)
        self._counts["labels_helpful"] += sum(bool(v.label) for v in verdicts)
        return verdicts

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        self._counts["comparisons"] += len(pairs)
        out = []
        for first, second in pairs:
            a, b = self.helpful(first), self.helpful(second)
            out.append(Preference(first, second, preferred=-1 if a == b else (0 if a else 1)))
        return out

    def stats(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._counts.items()}
