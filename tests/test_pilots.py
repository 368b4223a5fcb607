"""Issue 28's pilot rule (bench/pilots.py) on hand-made results: which candidate it chooses,
and why the others fall. No training here: the pilots themselves are run by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import pilots

BUDGET = 4_000_000


def _run(arm: str, seed: int, successes: list[float], *, entropy: list[float] | None = None,
         shared: tuple[str, ...] = ("x=1",)) -> dict:
    """A stored run whose reports are 1 M steps apart (success per report, each over a full
    window of episodes), ending at BUDGET."""
    steps = [BUDGET * (i + 1) // len(successes) for i in range(len(successes))]
    curve = [{"env_steps": s, "episodes": 1000 * (i + 1), "success_rate": p}
             for i, (s, p) in enumerate(zip(steps, successes, strict=True))]
    for point, h in zip(curve, entropy or [], strict=False):
        point["learner_entropy_loss"] = -h
    return {"arm": arm, "seed": seed, "settings": {"shared": list(shared)}, "commit": "abc1234",
            "summary": {"final_success_rate": successes[-1], "env_steps": BUDGET},
            "curve": curve}


def _results(*runs: dict) -> dict:
    return {"runs": {f"{r['arm']}/seed={r['seed']}": r for r in runs}}


KEEPS = [2.2, 2.0, 1.9, 1.8]  # extrinsic-only's entropy, report by report: above the floor


def _candidate(name: str, seed0: list[float], seed1: list[float], *,
               entropy: list[float] = KEEPS) -> dict:
    """Two retrieval seeds' success curves; two extrinsic seeds that never succeed, the
    first keeping its entropy and the second following ``entropy``."""
    return pilots.candidate(name, _results(
        _run("retrieval", 0, seed0), _run("retrieval", 1, seed1),
        _run("extrinsic", 0, [0, 0, 0, 0], entropy=KEEPS),
        _run("extrinsic", 1, [0, 0, 0, 0], entropy=entropy)))


def test_final_entropy_is_the_mean_over_the_last_share_of_steps() -> None:
    curve = [{"env_steps": s, "learner_entropy_loss": -h}
             for s, h in ((100, 2.0), (940, 1.0), (960, 1.6), (1000, 1.8))]
    # the last 5% of 1,000 steps: reports at >= 950, so 1.6 and 1.8 (940 is outside)
    assert pilots.final_entropy(curve) == pytest.approx(1.7)
    assert pilots.final_entropy(curve, share=0.1) == pytest.approx((1.0 + 1.6 + 1.8) / 3)
    assert pilots.final_entropy([{"env_steps": 5, "success_rate": 0.1}]) is None


def test_the_rule_drops_collapse_then_entropy_then_takes_the_soonest() -> None:
    candidates = [
        # 1. collapses a retrieval seed (peak 0.6, final 0.2 < 0.3): out, though it is fastest
        _candidate("collapses", [0.6, 0.6, 0.4, 0.2], [0.6, 0.7, 0.7, 0.7]),
        # 2. extrinsic-only's second seed ends at 1.2 nats: out
        _candidate("deterministic", [0.2, 0.6, 0.7, 0.7], [0.2, 0.6, 0.7, 0.7],
                   entropy=[2.2, 1.8, 1.4, 1.2]),
        # 3. 50% at 2 M and never (counted at the 4 M budget): mean 3 M
        _candidate("slow", [0.1, 0.6, 0.7, 0.7], [0.1, 0.2, 0.3, 0.4]),
        # 4. 50% at 1 M and 3 M: mean 2 M, the soonest of those left
        _candidate("steady", [0.6, 0.6, 0.7, 0.7], [0.1, 0.2, 0.6, 0.7]),
    ]
    decision = pilots.choose(candidates, seeds=2)
    v = decision["verdicts"]
    assert not v["collapses"]["no_collapse"] and v["collapses"]["keeps_entropy"]
    assert v["deterministic"]["no_collapse"] and not v["deterministic"]["keeps_entropy"]
    assert v["slow"]["mean_steps_to_50"] == 3_000_000 and v["slow"]["reached_50"] == 1
    assert v["steady"]["mean_steps_to_50"] == 2_000_000 and v["steady"]["reached_50"] == 2
    assert decision["chosen"] == "steady"
    # without "steady", the slower candidate that passes both tests wins
    assert pilots.choose(candidates[:3], seeds=2)["chosen"] == "slow"
    # and with neither, nothing is chosen rather than the fastest failure
    none = pilots.choose(candidates[:2], seeds=2)
    assert none["chosen"] is None and "collapses a retrieval seed" in none["why"]


def test_a_candidate_without_its_runs_is_never_chosen(tmp_path: Path) -> None:
    full = _results(_run("retrieval", 0, [0.6, 0.7, 0.7, 0.7]),
                    _run("retrieval", 1, [0.6, 0.7, 0.7, 0.7]),
                    _run("extrinsic", 0, [0, 0, 0, 0], entropy=KEEPS),
                    _run("extrinsic", 1, [0, 0, 0, 0], entropy=KEEPS))
    partial = _results(_run("retrieval", 0, [0.6, 0.7, 0.7, 0.7]))
    paths = []
    for name, results in (("full", full), ("partial", partial)):
        path = tmp_path / f"pilot-s15-{name}.json"
        path.write_text(json.dumps(results))
        paths.append(path)
    out = tmp_path / "pilots"
    assert pilots.main([*map(str, paths), "--out", str(out)]) == 0
    decision = json.loads(out.with_suffix(".json").read_text())
    assert decision["chosen"] is None
    assert "partial lacks retrieval 1 seed(s), extrinsic 2 seed(s)" in decision["why"]
    assert decision["why"].startswith("not every candidate still in has its runs")
    table = out.with_suffix(".md").read_text()
    assert "| full | 0.70 / 0.70 | 0.70 / 0.70 | 0/2 | 1.00 M / 1.00 M | 0.00 / 0.00 | " \
           "1.80 / 1.80 | 2 + 2 |" in table
    assert "| partial | 0.70 | 0.70 | 0/1 | 1.00 M | - | - | 1 + 0 (incomplete) |" in table
    # a collapse is final: more seeds cannot bring a candidate back, and the verdict says so
    broken = pilots.candidate("broken", _results(_run("retrieval", 0, [0.6, 0.6, 0.2, 0.1])))
    waiting = pilots.choose([pilots.candidate("partial", partial), broken], seeds=2)
    assert waiting["chosen"] is None
    assert waiting["why"].endswith("Out already: broken (collapses a retrieval seed)")
    # so a candidate already out, its runs unfinished, does not hold up the choice
    decided = pilots.choose([pilots.candidate("full", full), broken], seeds=2)
    assert decided["chosen"] == "full"
    assert decided["why"].endswith("Out: broken (collapses a retrieval seed)")
    # the full candidate alone has its runs: it is chosen
    assert pilots.choose([pilots.candidate("full", full)], seeds=2)["chosen"] == "full"
