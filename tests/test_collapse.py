"""The bench's collapse flag (issue 28): success once at 0.30 or more, below half the peak at
the end. Hand-made curves, then the stored KeyRoom-S15 table it was defined on."""

from __future__ import annotations

import json
from pathlib import Path

from bench import learning_task
from bench.stats import collapse

REPO = Path(__file__).resolve().parents[1]


def test_collapse_rule_on_hand_made_curves() -> None:
    # learnt (peak 0.56) and lost: 0.01 < 0.28
    assert collapse([0.0, 0.2, 0.56, 0.3, 0.01]) == {
        "peak": 0.56, "final": 0.01, "low_after_peak": 0.01, "collapsed": True}
    # fell to 0 and climbed back to 0.50 >= 0.69 / 2: not a collapse at the end
    fell = collapse([0.1, 0.69, 0.0, 0.3, 0.5])
    assert not fell["collapsed"] and fell["low_after_peak"] == 0.0
    # never learnt (peak 0.29 < 0.30), whatever it ends at
    assert not collapse([0.0, 0.29, 0.0])["collapsed"]
    # exactly at the bars: peak 0.30 counts as learnt; final exactly half the peak is kept
    assert collapse([0.30, 0.14])["collapsed"]
    assert not collapse([0.30, 0.15])["collapsed"]
    # reports without a success rate (no episode yet) are skipped; no report: nothing to judge
    assert collapse([None, 0.4, None, 0.1])["collapsed"]
    assert collapse([]) == {"peak": None, "final": None, "low_after_peak": None,
                            "collapsed": False}


def test_the_s15_table_had_two_retrieval_seeds_collapse() -> None:
    """The issue's figures: seeds 1 and 2 of retrieval collapsed for good (0.56 -> 0.01, 0.38
    -> 0.04); seed 4 fell from 0.69 to 0.00 and ended at 0.50, which is not a collapse."""
    results = json.loads((REPO / "bench/results/learning-keyroom-s15.json").read_text())
    runs = [r for r in results["runs"].values() if r["arm"] == "retrieval"]
    row = learning_task.arm_table(sorted(runs, key=lambda r: r["seed"]))
    flags = {seed: c for seed, c in zip(row["seed_ids"], row["collapse_per_seed"], strict=True)}
    assert [s for s, c in flags.items() if c["collapsed"]] == [1, 2]
    assert (flags[1]["peak"], flags[1]["final"]) == (0.56, 0.01)
    assert (flags[2]["peak"], flags[2]["final"]) == (0.38, 0.04)
    assert (flags[4]["peak"], flags[4]["low_after_peak"], flags[4]["final"]) == (0.69, 0.0, 0.5)
    cell = learning_task._collapsed_cell(row)
    assert cell == "2/5 (seeds 1, 2)"
