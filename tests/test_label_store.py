"""The label store: append-only, atomic parts, reload after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewards.judges.base import Preference, Verdict
from rewards.label_store import LabelStore

REPO = Path(__file__).resolve().parents[1]


def test_round_trip_first_label_wins_and_unparseable_is_never_stored(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    added = store.add(
        [Verdict("You kill the newt!", True), Verdict("It's a wall.", False), Verdict("?", None)],
        judge="rules",
    )
    assert added == 2
    assert store.add([Verdict("It's a wall.", True)]) == 0  # append-only: no relabelling
    store.add_preferences(
        [Preference("a", "b", 0), Preference("c", "d", -1), Preference("e", "f", None)]
    )
    assert store.flush() == 4
    assert store.flush() == 0  # nothing new: no empty part file

    again = LabelStore(tmp_path)
    assert len(again) == 2 and "?" not in again
    assert again.get("You kill the newt!") is True and again.get("It's a wall.") is False
    assert again.get("never seen") is None
    assert again.labels().column("judge").to_pylist() == ["rules", "rules"]
    assert again.preferences().column("preferred").to_pylist() == [0, -1]
    assert again.compared_pairs() == {frozenset("ab"), frozenset("cd")}


def test_probabilities_round_trip_and_stores_without_them_still_load(tmp_path: Path) -> None:
    # A store written before the probability columns existed: its parts lack them.
    old_labels = pa.table({"caption": ["old"], "label": [True], "judge": ["rules"],
                           "time": [1.0]})
    pq.write_table(old_labels, tmp_path / "labels-0000000000-00000000.parquet")
    old_prefs = pa.table({"first": ["old"], "second": ["x"],
                          "preferred": pa.array([1], pa.int8()), "judge": ["rules"],
                          "time": [1.0]})
    pq.write_table(old_prefs, tmp_path / "prefs-0000000001-00000000.parquet")

    store = LabelStore(tmp_path)
    assert store.get("old") is True and store.num_preferences == 1
    store.add([Verdict("sure", True, prob=0.875), Verdict("hard", False),
               Verdict("bad answer", None, prob=0.5)])  # unparseable: never stored
    store.add_preferences([Preference("sure", "hard", 0, prob_first=0.625),
                           Preference("hard", "old", -1)])
    store.flush()

    again = LabelStore(tmp_path)
    labels = again.labels()
    assert labels.column_names == ["caption", "label", "prob", "judge", "time"]
    assert labels.column("caption").to_pylist() == ["old", "sure", "hard"]
    assert labels.column("prob").to_pylist() == [None, 0.875, None]
    prefs = again.preferences()
    assert prefs.column("prob_first").to_pylist() == [None, 0.625, None]
    assert prefs.column("preferred").to_pylist() == [1, 0, -1]
    # Compaction keeps them (it rewrites every row through the same schema).
    again._compact("labels", again.labels())
    assert LabelStore(tmp_path).labels().column("prob").to_pylist() == [None, 0.875, None]


@pytest.mark.parametrize("prob", [float("nan"), 1.5, -0.1])
def test_a_judge_probability_outside_0_1_is_refused_not_stored(
    tmp_path: Path, prob: float
) -> None:
    store = LabelStore(tmp_path)
    with pytest.raises(ValueError, match=r"Verdict.prob=.* for 'x' is not a probability"):
        store.add([Verdict("x", True, prob=prob)])
    with pytest.raises(ValueError, match=r"Preference.prob_first=.* for 'x'"):
        store.add_preferences([Preference("x", "y", 0, prob_first=prob)])
    assert len(store) == 0 and store.num_preferences == 0


def test_unflushed_labels_are_visible_but_not_durable(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.add([Verdict("x", True)])
    assert "x" in store and store.labels().num_rows == 1
    assert len(LabelStore(tmp_path)) == 0


def test_parts_are_compacted_as_they_pile_up_without_loss(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    counts = []
    for i in range(150):
        store.add([Verdict(f"caption {i}", i % 3 == 0)])
        if i % 2:
            store.add_preferences([Preference(f"caption {i}", f"caption {i - 1}", 0)])
        store.flush()
        counts.append(len(list(tmp_path.glob("labels-*.parquet"))))
    assert max(counts) == 64 and counts[64] == 1  # the 65th part is merged with the rest
    assert len(list(tmp_path.glob("prefs-*.parquet"))) <= 64
    reopened = LabelStore(tmp_path)
    assert len(reopened) == 150 and reopened.get("caption 3") is True
    assert reopened.labels().column("caption").to_pylist() == [f"caption {i}" for i in range(150)]
    assert reopened.num_preferences == 75
    reopened.add([Verdict("one more", True)])
    reopened.flush()
    assert len(LabelStore(tmp_path)) == 151


_WRITER = textwrap.dedent(
    """
    import sys
    from rewards.judges.base import Verdict
    from rewards.label_store import LabelStore

    store = LabelStore(sys.argv[1])
    i = 0
    while True:
        store.add([Verdict(f"round {i} caption {j}", j % 2 == 0) for j in range(50)])
        store.flush()
        print(i, flush=True)  # printed only once round i is durable
        i += 1
    """
)


def test_survives_kill_9_of_an_appending_writer(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert writer.stdout is not None
    try:
        rounds = [int(writer.stdout.readline()) for _ in range(30)]
    finally:
        writer.send_signal(signal.SIGKILL)  # most likely mid-way through round 30's flush
        writer.wait()
    # A writer killed inside pq.write_table leaves a torn temp file; plant one to be sure.
    (tmp_path / ".tmp-labels-9999999999-deadbeef.parquet").write_bytes(b"PAR1\x00\x15torn")

    store = LabelStore(tmp_path)

    assert store.torn_files_removed >= 1
    assert not list(tmp_path.glob(".tmp-*"))
    for i in rounds:
        for j in range(50):
            assert store.get(f"round {i} caption {j}") is (j % 2 == 0)
    on_disk = [
        c for p in sorted(tmp_path.glob("labels-*.parquet"))
        for c in pq.read_table(p).column("caption").to_pylist()
    ]  # fmt: skip
    assert len(on_disk) == len(set(on_disk)) == len(store)
    assert len(store) % 50 == 0  # a round is a whole part or absent
