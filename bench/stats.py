"""Statistics for few-seed learning claims: what the learning benches report per arm and per pair.

Consumes per-seed scores (final success rate, steps to a threshold). Emits

- ``t_band``: the mean with a 95% Student-t interval over seeds. With n seeds the multiplier is
  t(0.975, n - 1): 2.78 at 5 seeds and 4.30 at 3, where the normal 1.96 would make the
  interval 30% (5 seeds) to 55% (3 seeds) too narrow;
- ``iqm_interval``: the interquartile mean with a 95% percentile-bootstrap interval, and
  ``improvement``: the probability that a run of arm X beats a run of arm Y (ties count half)
  with its bootstrap interval, both from ``rliable`` (Agarwal et al. 2021, "Deep RL at the
  Edge of the Statistical Precipice"), the reporting the field now expects of few-seed claims;
- ``welch``: Welch's t statistic and its two-sided p-value for two arms' means.

One task per table, so the stratified bootstrap is a plain bootstrap over seeds. Resampling
uses a fixed seed: the same runs give the same report.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

# arch's bootstrap loops in Python (~2 s per 1,000 resamples here): 2,000 keeps a report under
# a minute; percentile intervals move by about 0.01 against 20,000.
BOOTSTRAP_REPS = 2_000
CONFIDENCE = 0.95


def kept(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def t_multiplier(n: int) -> float:
    """The two-sided 95% Student-t quantile for n seeds (0 when n < 2: no spread to scale)."""
    return float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) if n >= 2 else 0.0


def t_band(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and 95% Student-t half-width over seeds; NaN when there are none."""
    xs = kept(values)
    if not xs:
        return float("nan"), float("nan")
    if len(xs) < 2:
        return xs[0], 0.0
    return statistics.fmean(xs), t_multiplier(len(xs)) * statistics.stdev(xs) / math.sqrt(len(xs))


def _bootstrap(scores: dict[str, np.ndarray], func) -> tuple[dict, dict]:
    from rliable import library as rly

    # rliable 1.2 draws its resamples from numpy's global RNG (np.random.choice in its
    # update_indices), not from the random_state it hands arch: the same runs gave different
    # intervals from one report to the next. Seed the global RNG here and put it back after.
    outside = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():  # arch deprecates the RandomState rliable hands it
            warnings.simplefilter("ignore", FutureWarning)
            return rly.get_interval_estimates(
                scores, func, reps=BOOTSTRAP_REPS, confidence_interval_size=CONFIDENCE,
                random_state=np.random.RandomState(0),
            )
    finally:
        np.random.set_state(outside)


def iqm_interval(values: Sequence[float | None]) -> tuple[float, float, float] | None:
    """Interquartile mean and its 95% bootstrap interval ``(iqm, low, high)``; None under 2."""
    xs = kept(values)
    if len(xs) < 2:
        return None
    from rliable import metrics

    def iqm(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores)])

    points, intervals = _bootstrap({"x": np.array(xs)[:, None]}, iqm)
    return float(points["x"][0]), float(intervals["x"][0, 0]), float(intervals["x"][1, 0])


def improvement(
    x: Sequence[float | None], y: Sequence[float | None]
) -> tuple[float, float, float] | None:
    """P(a run of X scores higher than a run of Y), ties half, with its 95% bootstrap interval
    ``(p, low, high)``: above 0.5 with the interval clear of it is a claim that X is better."""
    xs, ys = kept(x), kept(y)
    if len(xs) < 2 or len(ys) < 2:
        return None
    from rliable import metrics

    def poi(scores_x: np.ndarray, scores_y: np.ndarray) -> np.ndarray:
        return np.array([metrics.probability_of_improvement(scores_x, scores_y)])

    # rliable resamples the runs of each arm independently: a pair of arms is one "algorithm".
    points, intervals = _bootstrap(
        {"pair": (np.array(xs)[:, None], np.array(ys)[:, None])}, poi
    )
    return float(points["pair"][0]), float(intervals["pair"][0, 0]), float(intervals["pair"][1, 0])


def welch(x: Sequence[float | None], y: Sequence[float | None]) -> tuple[float, float] | None:
    """Welch's t (X - Y) and its two-sided p-value; None without two values a side or any
    spread (identical seeds: no test to make)."""
    xs, ys = kept(x), kept(y)
    if len(xs) < 2 or len(ys) < 2 or (statistics.stdev(xs) == 0 and statistics.stdev(ys) == 0):
        return None
    with warnings.catch_warnings():  # one side without spread: scipy warns, the t is right
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.ttest_ind(xs, ys, equal_var=False)
    return float(result.statistic), float(result.pvalue)


# A collapse (issue 28): a seed that learnt the task and then lost it. "Learnt": success over
# the last episodes (``run.summary_window_episodes``, 100) reached COLLAPSE_LEARNT at some
# report; "lost": at the end it is below COLLAPSE_SHARE of the run's peak.
COLLAPSE_LEARNT = 0.30
COLLAPSE_SHARE = 0.5


def collapse(successes: Sequence[float | None]) -> dict[str, float | bool | None]:
    """One run's success curve (report by report) judged for a collapse.

    Returns its ``peak``, ``final`` (the last report), ``low_after_peak`` (the lowest report
    from the peak on) and ``collapsed``: peak >= 0.30 and final < peak / 2. A run that fell
    below half its peak and climbed back before the end did not collapse by this rule;
    ``low_after_peak`` still shows the fall.
    """
    curve = kept(successes)
    if not curve:
        return {"peak": None, "final": None, "low_after_peak": None, "collapsed": False}
    peak_at = int(np.argmax(curve))
    peak, final = curve[peak_at], curve[-1]
    return {"peak": peak, "final": final, "low_after_peak": min(curve[peak_at:]),
            "collapsed": peak >= COLLAPSE_LEARNT and final < COLLAPSE_SHARE * peak}
