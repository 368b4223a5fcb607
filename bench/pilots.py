"""Which candidate learner wins the S15 pilots: issue 28's rule, applied to the stored runs.

    python bench/pilots.py bench/results/pilot-s15-*.json [--out bench/results/pilots-s15]
                           [--seeds 2]

Consumes: one arms-bench results JSON per candidate learner (``bench/learning.py --out ...``),
each holding that candidate's retrieval and extrinsic-only runs. Emits: ``<out>.md`` (one row
per candidate, the verdict under it) and ``<out>.json`` (the same figures, seed by seed).

The rule, stated before any pilot ran (docs/results.md, "Stabilisers"), in this order:

1. no retrieval seed collapses (``bench/stats.py::collapse``: success once >= 0.30, then
   below half the run's peak at its last report);
2. extrinsic-only keeps its policy's entropy: every seed's final entropy >= 1.5 nats (a
   uniform policy's is 2.30 here). "Final" is the mean over the reports of the run's last 5%
   of env steps, so that one noisy report does not decide;
3. among the candidates left, the one whose retrieval seeds exceed 50% success soonest (mean
   steps over seeds, a seed that never did counted at its whole budget, as the arms bench
   does); a tie goes to the higher final success.

Peaks, collapses and steps to 50% are read from the reports over a full window of episodes
(``bench/learning_task.py::judged_reports``). A candidate with fewer than ``--seeds`` finished
runs of either arm is reported, but not chosen, and nothing is chosen while it may still win:
the verdict says which runs are missing. One already out (tests 1 and 2 are final: more seeds
cannot undo a collapse) does not hold up the choice.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import learning_task, stats  # noqa: E402
from cluster.run_dir import atomic_write_text  # noqa: E402

MIN_ENTROPY = 1.5  # nats, the rule's floor for extrinsic-only's final entropy
FINAL_SHARE = 0.05  # "final": the reports in the last 5% of a run's env steps
SUCCESS = 0.5  # the rule's third test: steps to exceed 50% success


def final_entropy(curve: list[dict], share: float = FINAL_SHARE) -> float | None:
    """The policy's entropy (minus ``learner_entropy_loss``) averaged over the reports in the
    last ``share`` of the run's env steps; None where no report carries it."""
    points = [(p["env_steps"], -p["learner_entropy_loss"]) for p in curve
              if p.get("learner_entropy_loss") is not None]
    if not points:
        return None
    last = points[-1][0]
    tail = [h for steps, h in points if steps >= last * (1 - share)]
    return sum(tail) / len(tail)


def candidate(name: str, results: dict) -> dict[str, Any]:
    """One candidate's figures: per retrieval seed its peak, final success, collapse and
    steps to 50%; per extrinsic seed its final success and final entropy."""
    runs = [r for r in results["runs"].values() if r["arm"] in ("retrieval", "extrinsic")]
    by_arm = {arm: sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
              for arm in ("retrieval", "extrinsic")}
    retrieval = by_arm["retrieval"]
    extrinsic = by_arm["extrinsic"]
    # The arms bench's censoring: a seed that never got there counts at its whole budget.
    censored = learning_task.steps_to_threshold(retrieval, SUCCESS)
    return {
        "name": name,
        "settings": sorted({o for r in runs for o in r["settings"]["shared"]}),
        "commits": sorted({r.get("commit") or "?" for r in runs}),
        "retrieval": [_retrieval_seed(r, steps) for r, steps in zip(retrieval, censored,
                                                                     strict=True)],
        "extrinsic": [{
            "seed": r["seed"],
            "final_success": r["summary"].get("final_success_rate"),
            "final_entropy": final_entropy(r["curve"]),
        } for r in extrinsic],
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _retrieval_seed(run: dict[str, Any], censored_steps: float) -> dict[str, Any]:
    reports = learning_task.judged_reports(run)  # once: a stored run loads its config
    return {
        "seed": run["seed"],
        "final_success": run["summary"].get("final_success_rate"),
        **{k: v for k, v in stats.collapse([p.get("success_rate") for p in reports]).items()
           if k != "final"},
        "steps_to_50": learning_task.steps_to_exceed(reports, SUCCESS),
        "steps_to_50_censored": censored_steps,
    }


def judge(c: dict[str, Any], seeds: int) -> dict[str, Any]:
    """The rule's three tests for one candidate, and whether it has the runs to be chosen."""
    retrieval, extrinsic = c["retrieval"], c["extrinsic"]
    missing = [f"{arm} {seeds - len(c[arm])} seed(s)" for arm in ("retrieval", "extrinsic")
               if len(c[arm]) < seeds]
    entropies = [e["final_entropy"] for e in extrinsic]
    return {
        "complete": not missing,
        "missing": missing,
        "no_collapse": not any(r["collapsed"] for r in retrieval),
        "keeps_entropy": bool(entropies) and all(
            h is not None and h >= MIN_ENTROPY for h in entropies),
        "keeps_entropy_so_far": all(h is None or h >= MIN_ENTROPY for h in entropies),
        "mean_steps_to_50": _mean([r["steps_to_50_censored"] for r in retrieval]),
        "reached_50": sum(r["steps_to_50"] is not None for r in retrieval),
        "mean_final_success": _mean([r["final_success"] for r in retrieval
                                     if r["final_success"] is not None]),
    }


def _failed(v: dict[str, Any]) -> str:
    """The rule's first two tests a candidate has already failed on the runs it has."""
    failed = []
    if not v["no_collapse"]:
        failed.append("collapses a retrieval seed")
    if not v["keeps_entropy_so_far"]:
        failed.append("extrinsic-only's entropy below the floor")
    return ", ".join(failed)


def choose(candidates: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    """The rule over every candidate: the chosen one's name, or None and why not."""
    verdicts = {c["name"]: judge(c, seeds) for c in candidates}
    # A collapse or a lost entropy is final: more seeds cannot bring a candidate back, so the
    # choice waits only for the runs of the candidates still in.
    out = [f"{n} ({_failed(v)})" for n, v in verdicts.items() if _failed(v)]
    incomplete = [n for n, v in verdicts.items() if not v["complete"] and not _failed(v)]
    if incomplete:
        return {"chosen": None, "verdicts": verdicts,
                "why": "not every candidate still in has its runs: " + "; ".join(
                    f"{n} lacks {', '.join(verdicts[n]['missing'])}" for n in incomplete)
                + (f". Out already: {', '.join(out)}" if out else "")}
    left = [n for n, v in verdicts.items()
            if v["complete"] and v["no_collapse"] and v["keeps_entropy"]]
    if not left:
        return {"chosen": None, "verdicts": verdicts,
                "why": "every candidate collapses a retrieval seed or lets extrinsic-only's "
                       f"entropy fall below {MIN_ENTROPY} nats"}
    best = min(left, key=lambda n: (verdicts[n]["mean_steps_to_50"],
                                    -(verdicts[n]["mean_final_success"] or 0.0)))
    return {"chosen": best, "verdicts": verdicts,
            "why": f"{len(left)} of {len(verdicts)} pass tests 1 and 2; {best} reaches 50% "
                   "soonest" + (f". Out: {', '.join(out)}" if out else "")}


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        format(value, spec))


def _steps(value: float | None) -> str:
    return "never" if value is None else f"{value / 1e6:.2f} M"


def markdown(candidates: list[dict[str, Any]], decision: dict[str, Any], seeds: int) -> str:
    lines = [
        "# S15 pilots: the candidate learners against issue 28's rule",
        "",
        "Per candidate: its results file's retrieval and extrinsic-only runs (seed by seed). "
        "Collapse: success once >= 0.30, then below half the peak at the end (bench/stats.py). "
        f"Entropy: extrinsic-only's, in nats, the mean over the last {FINAL_SHARE:.0%} of each "
        f"run's steps (the rule wants >= {MIN_ENTROPY} in every seed). Steps to 50%: a seed "
        "that never got there counts at its whole budget in the mean.",
        "",
        "| candidate | retrieval final success | peak | collapsed | steps to 50% | "
        "extrinsic final success | extrinsic entropy | runs (of "
        f"{seeds} + {seeds}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in candidates:
        v = decision["verdicts"][c["name"]]
        r, e = c["retrieval"], c["extrinsic"]
        lines.append(
            f"| {c['name']} | {' / '.join(_fmt(x['final_success']) for x in r) or '-'} "
            f"| {' / '.join(_fmt(x['peak']) for x in r) or '-'} "
            f"| {sum(x['collapsed'] for x in r)}/{len(r)} "
            f"| {' / '.join(_steps(x['steps_to_50']) for x in r) or '-'} "
            f"| {' / '.join(_fmt(x['final_success']) for x in e) or '-'} "
            f"| {' / '.join(_fmt(x['final_entropy']) for x in e) or '-'} "
            f"| {len(r)} + {len(e)}"
            f"{'' if v['complete'] else ' (incomplete)'} |")
    lines += ["", f"**Verdict**: {decision['chosen'] or 'none chosen'}: {decision['why']}.", ""]
    lines += ["Each candidate's overrides (all its runs') and the commits its runs ran at:", ""]
    for c in candidates:
        lines.append(f"- **{c['name']}**: {', '.join(c['settings'])} (commits "
                     f"{', '.join(x[:7] for x in c['commits'])})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="one results JSON per candidate")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pilots-s15")
    parser.add_argument("--seeds", type=int, default=2, help="seeds each arm needs")
    args = parser.parse_args(argv)
    candidates = []
    for path in args.results:
        if not path.exists():
            parser.error(f"{path}: no such results file")
        name = path.stem.removeprefix("pilot-s15-")
        candidates.append(candidate(name, json.loads(path.read_text())))
    decision = choose(candidates, args.seeds)
    text = markdown(candidates, decision, args.seeds)
    atomic_write_text(args.out.with_suffix(".md"), text)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(
        {"candidates": candidates, **decision}, indent=1, default=str) + "\n")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
