"""The label store: every judge label and preference, persistent and append-only.

Consumes: :class:`rewards.judges.base.Verdict` and :class:`Preference` lists from the annotator.
Emits: ``labels()`` / ``preferences()`` Arrow tables for reward-model training, and ``get`` /
``in`` lookups so the annotator never asks the judge about a caption twice, even after a
restart.

On disk a store is a directory of Parquet part files, one per :meth:`LabelStore.flush`,
merged into one whenever there are more than ``_COMPACT_ABOVE_PARTS`` of a kind:

    labels-<seq>-<id>.parquet   caption string, label bool, prob float64 (P(helpful), null
                                where the judge gave only a verdict), judge string,
                                time float64 (unix s)
    prefs-<seq>-<id>.parquet    first string, second string, preferred int8 (0, 1, -1 = tie),
                                prob_first float64 (P(first better), null where the judge gave
                                only a verdict), judge string, time float64

Parts written before the probability columns existed load with them null.

A part is written under a temporary name in the same directory, fsynced, renamed into place with
``os.replace`` and the directory fsynced, so a reader sees a part whole or not at all. A writer
killed mid-flush leaves only a ``.tmp-*`` file, which the next open deletes. Labels are
append-only: the first label of a caption wins, later ones are ignored, so a crash between
writing a compacted part and deleting its sources only leaves duplicates that reload drops.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rewards.judges.base import Preference, Verdict

LABEL_SCHEMA = pa.schema(
    [
        pa.field("caption", pa.string(), nullable=False),
        pa.field("label", pa.bool_(), nullable=False),
        pa.field("prob", pa.float64(), nullable=True),
        pa.field("judge", pa.string(), nullable=False),
        pa.field("time", pa.float64(), nullable=False),
    ]
)
PREFERENCE_SCHEMA = pa.schema(
    [
        pa.field("first", pa.string(), nullable=False),
        pa.field("second", pa.string(), nullable=False),
        pa.field("preferred", pa.int8(), nullable=False),
        pa.field("prob_first", pa.float64(), nullable=True),
        pa.field("judge", pa.string(), nullable=False),
        pa.field("time", pa.float64(), nullable=False),
    ]
)
# One row of each kind, in schema order.
LabelRow = tuple[str, bool, float | None, str, float]
PreferenceRow = tuple[str, str, int, float | None, str, float]
_TMP_PREFIX = ".tmp-"
_COMPACT_ABOVE_PARTS = 64  # one part per flush; then merged, so a long run stays a few files


class LabelStore:
    """Labels and preferences of one run, loaded from ``directory`` and appended to it.

    Thread-safe: the annotator's step thread adds while its actor's methods read and flush.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._labels: dict[str, bool] = {}
        self._label_rows: list[LabelRow] = []  # every stored label, in order
        self._pending_labels = 0  # trailing rows of _label_rows not yet on disk
        self._prefs: list[PreferenceRow] = []
        self._pending_prefs = 0
        self._seq = 0
        self.torn_files_removed = 0
        self._load()

    # -- reading ---------------------------------------------------------------------------

    def get(self, caption: str) -> bool | None:
        """The caption's label, or None if it has none."""
        with self._lock:
            return self._labels.get(caption)

    def __contains__(self, caption: object) -> bool:
        with self._lock:
            return caption in self._labels

    def __len__(self) -> int:
        with self._lock:
            return len(self._labels)

    @property
    def num_preferences(self) -> int:
        with self._lock:
            return len(self._prefs)

    def labels(self) -> pa.Table:
        """Every label, flushed or not, one row per caption, in the order they were added."""
        with self._lock:
            rows = list(self._label_rows)
        return _table(rows, LABEL_SCHEMA)

    def preferences(self) -> pa.Table:
        """Every parsed preference, flushed or not, in the order they were added."""
        with self._lock:
            rows = list(self._prefs)
        return _table(rows, PREFERENCE_SCHEMA)

    def compared_pairs(self) -> set[frozenset[str]]:
        """Unordered caption pairs that already have a preference (to avoid asking again)."""
        with self._lock:
            return {frozenset((a, b)) for a, b, *_ in self._prefs}

    # -- writing ---------------------------------------------------------------------------

    def add(self, verdicts: Iterable[Verdict], *, judge: str = "") -> int:
        """Store the parsed verdicts of captions that have no label yet, each with its
        probability where it has one; return how many.

        An unparseable verdict (``label is None``) is never stored: the caller counts it.
        """
        now = time.time()
        added = 0
        with self._lock:
            for v in verdicts:
                if v.label is None or v.caption in self._labels:
                    continue
                prob = _checked_prob(v.prob, "Verdict.prob", v.caption)
                self._labels[v.caption] = bool(v.label)
                self._label_rows.append((v.caption, bool(v.label), prob, judge, now))
                self._pending_labels += 1
                added += 1
        return added

    def add_preferences(self, preferences: Iterable[Preference], *, judge: str = "") -> int:
        """Store the parsed preferences (``preferred`` in 0, 1, -1), each with its
        ``prob_first`` where it has one; return how many."""
        now = time.time()
        added = 0
        with self._lock:
            for p in preferences:
                if p.preferred not in (0, 1, -1):
                    continue
                prob = _checked_prob(p.prob_first, "Preference.prob_first", p.first)
                self._prefs.append((p.first, p.second, int(p.preferred), prob, judge, now))
                self._pending_prefs += 1
                added += 1
        return added

    def flush(self) -> int:
        """Write everything added since the last flush as new part files; return rows written."""
        with self._lock:
            labels = self._label_rows[len(self._label_rows) - self._pending_labels :]
            prefs = self._prefs[len(self._prefs) - self._pending_prefs :]
            # Holding the lock through the write keeps parts in add order; a flush of a few
            # thousand rows takes milliseconds, far below a judge batch.
            if labels:
                self._write_part("labels", _table(labels, LABEL_SCHEMA))
                self._pending_labels = 0
            if prefs:
                self._write_part("prefs", _table(prefs, PREFERENCE_SCHEMA))
                self._pending_prefs = 0
            if self._part_count["labels"] > _COMPACT_ABOVE_PARTS:
                self._compact("labels", _table(self._label_rows, LABEL_SCHEMA))
            if self._part_count["prefs"] > _COMPACT_ABOVE_PARTS:
                self._compact("prefs", _table(self._prefs, PREFERENCE_SCHEMA))
        return len(labels) + len(prefs)

    # -- disk ------------------------------------------------------------------------------

    def _parts(self, kind: str) -> list[Path]:
        # Names start with a zero-padded sequence number, so name order is write order.
        return sorted(self.directory.glob(f"{kind}-*.parquet"))

    def _load(self) -> None:
        for tmp in self.directory.glob(_TMP_PREFIX + "*"):
            tmp.unlink(missing_ok=True)  # a writer died before its rename: never a valid part
            self.torn_files_removed += 1
        label_parts, pref_parts = self._parts("labels"), self._parts("prefs")
        for path in [*label_parts, *pref_parts]:
            self._seq = max(self._seq, int(path.name.split("-")[1]) + 1)
        for path in label_parts:
            for row in pq.read_table(path, schema=LABEL_SCHEMA).to_pylist():
                if row["caption"] not in self._labels:
                    self._labels[row["caption"]] = row["label"]
                    self._label_rows.append(
                        (row["caption"], row["label"], row["prob"], row["judge"], row["time"])
                    )
        seen_prefs: set[PreferenceRow] = set()
        for path in pref_parts:
            for row in pq.read_table(path, schema=PREFERENCE_SCHEMA).to_pylist():
                key = (row["first"], row["second"], row["preferred"], row["prob_first"],
                       row["judge"], row["time"])
                if key not in seen_prefs:  # only a compaction cut short makes duplicates
                    seen_prefs.add(key)
                    self._prefs.append(key)
        self._part_count = {"labels": len(label_parts), "prefs": len(pref_parts)}

    def _compact(self, kind: str, table: pa.Table) -> None:
        """Replace every part of ``kind`` by one holding ``table`` (all rows, in order).

        Rewriting everything costs O(rows) once per ``_COMPACT_ABOVE_PARTS`` flushes, and a run
        of days keeps a handful of files, not one per second.
        """
        parts = self._parts(kind)
        self._write_part(kind, table)  # the merged part lands first: no instant loses a label
        for path in parts:
            path.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        self._part_count[kind] = 1

    def _write_part(self, kind: str, table: pa.Table) -> None:
        name = f"{kind}-{self._seq:010d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.directory / f"{_TMP_PREFIX}{name}"
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / name)
        _fsync_dir(self.directory)  # the rename itself must survive a power cut
        self._seq += 1
        self._part_count[kind] += 1


def _checked_prob(prob: float | None, name: str, caption: str) -> float | None:
    """A probability fit to be a training target, or None. Anything else is a judge bug, and
    stored it would poison every later fit (a NaN target makes every loss NaN)."""
    if prob is None:
        return None
    if not math.isfinite(prob) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"{name}={prob!r} for {caption!r} is not a probability in [0, 1]")
    return float(prob)


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(list(col), type=f.type) for col, f in zip(columns, schema, strict=True)],
        schema=schema,
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
