"""Try a judge against hand labels before training with it (``oniray judge eval``).

Consumes a labels file (TSV with the header ``label<TAB>message``; label 1 = helpful for the
task's goal, 0 = not) and a built :class:`~rewards.judges.base.Judge`. Emits the judge's
verdicts on every message and on the project's canaries, and the figures that say whether
to trust it: accuracy, precision and recall on the helpful class, the canary false-positive
rate, parse failures and labels per second. Pure functions, no files written, no cluster/.

An unparseable verdict (``label is None``) is never counted as a label: it is wrong for
accuracy, a miss for recall when the message is helpful, and no prediction for precision.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewards.canary import CANARY_CAPTIONS, CanaryMonitor
from rewards.judges.base import Judge, Verdict

HEADER = ("label", "message")
HELPFUL, NOT_HELPFUL, UNPARSEABLE = "helpful", "not helpful", "unparseable"
# The text judges' counters of answers they could not read (rewards/judges/text.py).
PARSE_STATS = ("label_parse_failures", "label_unparseable")


class LabelsError(ValueError):
    """A malformed labels file; the message is one line naming the file, line and problem."""


@dataclass(frozen=True)
class LabelledMessage:
    message: str
    helpful: bool


def read_labels(path: str | Path) -> list[LabelledMessage]:
    """The labelled messages of a TSV file, in order; :class:`LabelsError` on the first
    problem. Blank lines are skipped; a message keeps its text exactly (digits, names)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.splitlines()
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        got = repr(lines[0]) if lines else "an empty file"
        raise LabelsError(f"{path}:1: the header must be 'label<TAB>message', got {got}")
    out = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise LabelsError(f"{path}:{number}: expected 2 tab-separated fields (label, "
                              f"message), got {len(fields)}: {line[:80]!r}")
        label, message = fields
        if label.strip() not in ("0", "1"):
            raise LabelsError(f"{path}:{number}: label must be 1 (helpful) or 0 (not), "
                              f"got {label!r}")
        if not message.strip():
            raise LabelsError(f"{path}:{number}: the message is empty")
        out.append(LabelledMessage(message, label.strip() == "1"))
    if not out:
        raise LabelsError(f"{path}: no labelled messages after the header")
    return out


@dataclass(frozen=True)
class Scores:
    """Agreement of verdicts with true labels, on the helpful class."""

    n: int
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int
    unparseable: int
    accuracy: float
    precision: float | None  # None: the judge called nothing helpful
    recall: float | None  # None: no message is labelled helpful


def score(truth: Sequence[bool], predicted: Sequence[bool | None]) -> Scores:
    """Accuracy over every message (an unparseable verdict is wrong); precision = TP / (TP +
    FP); recall = TP / messages labelled helpful (an unparseable one is a miss)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} verdicts")
    if not truth:
        raise ValueError("no labelled messages to score")
    pairs = list(zip(truth, predicted, strict=True))
    tp = sum(t and p is True for t, p in pairs)
    fp = sum(not t and p is True for t, p in pairs)
    tn = sum(not t and p is False for t, p in pairs)
    fn = sum(t and p is False for t, p in pairs)
    unparseable = sum(p is None for p in predicted)
    helpful = sum(truth)
    return Scores(
        n=len(truth), true_positives=tp, false_positives=fp, true_negatives=tn,
        false_negatives=fn, unparseable=unparseable, accuracy=(tp + tn) / len(truth),
        precision=tp / (tp + fp) if tp + fp else None,
        recall=tp / helpful if helpful else None,
    )


def verdict_name(label: bool | None) -> str:
    return UNPARSEABLE if label is None else HELPFUL if label else NOT_HELPFUL


def _parse_counts(judge: Judge) -> dict[str, float]:
    """The judge's counts of answers it could not read; 0 for a judge that reads none (the
    embedding and rules judges compute their verdicts)."""
    stats = judge.stats()
    return {k: stats.get(k, 0.0) for k in PARSE_STATS}


def label_all(judge: Judge, captions: Sequence[str], *, batch_size: int) -> list[Verdict]:
    """The judge's verdicts in batches of ``batch_size``, as the annotator asks for them."""
    verdicts: list[Verdict] = []
    for start in range(0, len(captions), batch_size):
        verdicts.extend(judge.label(captions[start : start + batch_size]))
    if len(verdicts) != len(captions):
        raise RuntimeError(f"{judge.name} gave {len(verdicts)} verdicts for {len(captions)}")
    return verdicts


def _entry(verdict: Verdict) -> dict[str, Any]:
    return {"caption": verdict.caption, "verdict": verdict_name(verdict.label),
            "probability": verdict.prob, "raw": verdict.raw}


def evaluate(
    judge: Judge, rows: Sequence[LabelledMessage], *, batch_size: int,
    canaries: Sequence[str] = CANARY_CAPTIONS,
) -> dict[str, Any]:
    """Label ``rows`` and ``canaries`` with ``judge``; the figures and every verdict, as a
    JSON-ready dict. labels/s times the labelled messages alone (not the canaries, not the
    judge's construction)."""
    before = _parse_counts(judge)
    start = time.perf_counter()
    verdicts = label_all(judge, [r.message for r in rows], batch_size=batch_size)
    seconds = time.perf_counter() - start
    after = _parse_counts(judge)
    scores = score([r.helpful for r in rows], [v.label for v in verdicts])
    # The canary monitor's own rate (false positives / parsed canary verdicts): one definition
    # for training's alarm and for this report. max_fpr=1: a report, not an alarm.
    monitor = CanaryMonitor(every=1, max_fpr=1.0, judge_name=judge.name, captions=canaries)
    canary_verdicts = label_all(judge, list(canaries), batch_size=batch_size)
    for verdict in canary_verdicts:
        monitor.record(verdict.caption, verdict.label)
    by_kind = {
        kind: {"answered": monitor.answered_by_kind[kind],
               "false_positives": monitor.false_positives_by_kind[kind],
               "fpr": monitor.fpr_of(kind) if monitor.answered_by_kind[kind] else None}
        for kind in monitor.kinds
    }
    return {
        "judge": judge.name,
        "metrics": {
            "n": scores.n,
            "helpful": sum(r.helpful for r in rows),
            "accuracy": scores.accuracy,
            "precision": scores.precision,
            "recall": scores.recall,
            "true_positives": scores.true_positives,
            "false_positives": scores.false_positives,
            "true_negatives": scores.true_negatives,
            "false_negatives": scores.false_negatives,
            "unparseable": scores.unparseable,
            # Answers the strict parser could not read, retries included (text judges).
            **{k: after[k] - before[k] for k in PARSE_STATS},
            "seconds": seconds,
            "labels_per_s": len(rows) / seconds if seconds > 0 else None,
        },
        "canary": {
            "n": len(canaries),
            "false_positives": monitor.false_positives,
            "unparseable": monitor.unparseable,
            "fpr": monitor.fpr if monitor.answered else None,
            "by_kind": by_kind,  # the kinds of rewards/canary.py, each with its own rate
            "captions": [_entry(v) for v in canary_verdicts],
        },
        "captions": [
            {**_entry(v), "label": int(r.helpful)}
            for r, v in zip(rows, verdicts, strict=True)
        ],
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The printed report of :func:`evaluate`'s result."""
    m, c = result["metrics"], result["canary"]
    rate = "n/a" if m["labels_per_s"] is None else f"{m['labels_per_s']:.1f}"
    return [
        f"messages: {m['n']} ({m['helpful']} labelled helpful)",
        f"accuracy: {_pct(m['accuracy'])}  precision: {_pct(m['precision'])}  "
        f"recall: {_pct(m['recall'])}  (helpful class; TP {m['true_positives']} "
        f"FP {m['false_positives']} TN {m['true_negatives']} FN {m['false_negatives']})",
        f"canary false-positive rate: {_pct(c['fpr'])} ({c['false_positives']} of {c['n']} "
        f"called helpful, {c['unparseable']} unparseable)"
        + "".join(f"; {kind} {_pct(k['fpr'])}" for kind, k in c["by_kind"].items()),
        f"parse failures: {m['label_parse_failures']:g} answers, {m['unparseable']} messages "
        f"left unparseable",
        f"labels/s: {rate} ({m['n']} messages in {m['seconds']:.1f} s)",
    ]
