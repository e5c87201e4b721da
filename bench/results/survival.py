"""Statistics of times to a target when some runs never reach it: they are right-censored (at their total training
time, "not reached by then"), not missing, and not slow runs with a made-up time.

- :func:`logrank`: the log-rank (Mantel-Cox) test of two groups' time-to-target distributions;
- :func:`km_median`: the median of the Kaplan-Meier estimate, the median that respects censoring;
- :func:`olympic_mean`: MLPerf Training's score over repeated runs (with at least 5, the fastest and the slowest
  dropped), a run that never reached counting as the slowest; :func:`mlperf_valid`: at most one such run.

docs/evaluation.md ("Time to target") says why these and what they cannot tell.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy import stats

OLYMPIC_MIN_RUNS = 5  # MLPerf: the fastest and the slowest run are dropped from at least this many


def _arrays(times, reached) -> tuple[np.ndarray, np.ndarray]:
    t, e = np.asarray(times, dtype=np.float64), np.asarray(reached, dtype=bool)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError("times and reached must be 1-d and of one length")
    return t, e


def logrank(times_a, reached_a, times_b, reached_b) -> tuple[float, float]:
    """``(chi2, p)`` of the two-sided log-rank test that both groups reach the target on one time distribution.

    At each distinct time ``t`` at which some run reached the target, with ``n`` runs still at risk (not yet
    reached and not censored before ``t``; a run censored at ``t`` is still at risk there), ``n_b`` of them in
    group b, and ``d`` reaching at ``t``: group b expects ``n_b * d / n`` of the ``d`` with hypergeometric
    variance ``n_b (n - n_b) d (n - d) / (n^2 (n - 1))``. ``chi2 = (O_b - E_b)^2 / V`` summed over those times,
    on 1 degree of freedom. NaN (and p NaN) when V is 0: no run reached, or nothing to tell the groups apart by.
    """
    ta, ea = _arrays(times_a, reached_a)
    tb, eb = _arrays(times_b, reached_b)
    t, e = np.concatenate([ta, tb]), np.concatenate([ea, eb])
    in_b = np.concatenate([np.zeros(len(ta), bool), np.ones(len(tb), bool)])
    observed = expected = variance = 0.0
    for time in np.unique(t[e]):
        at_risk = t >= time
        n, n_b = int(at_risk.sum()), int((at_risk & in_b).sum())
        now = (t == time) & e
        d, d_b = int(now.sum()), int((now & in_b).sum())
        observed += d_b
        expected += n_b * d / n
        if n > 1:
            variance += n_b * (n - n_b) * d * (n - d) / (n * n * (n - 1))
    if variance <= 0:
        return math.nan, math.nan
    chi2 = (observed - expected) ** 2 / variance
    return float(chi2), float(stats.chi2.sf(chi2, df=1))


def km_curve(times, reached) -> list[tuple[float, Fraction]]:
    """The Kaplan-Meier estimate of "not yet reached": ``(t, S(t))`` at each time a run reached the target, S as
    an exact fraction (so S = 1/2 is recognised exactly)."""
    t, e = _arrays(times, reached)
    survival, curve = Fraction(1), []
    for time in np.unique(t[e]):
        n = int((t >= time).sum())
        d = int(((t == time) & e).sum())
        survival *= Fraction(n - d, n)
        curve.append((float(time), survival))
    return curve


def km_median(times, reached) -> float:
    """The median time to target under censoring: the first time the Kaplan-Meier curve falls below 1/2; where
    it sits exactly at 1/2, the midpoint to the next reaching time (so, without censoring, ``numpy.median``).
    NaN when the curve never gets below 1/2 or ends at 1/2 (half the runs reached it, the rest stopped short):
    half or more may never reach it. R's ``survival`` takes the midpoint to the last stopping time there, a time
    no run was seen to reach the target at; bench names none."""
    curve = km_curve(times, reached)
    for i, (time, survival) in enumerate(curve):
        if survival < Fraction(1, 2):
            return time
        if survival == Fraction(1, 2):
            return (time + curve[i + 1][0]) / 2 if i + 1 < len(curve) else math.nan
    return math.nan


def olympic_mean(times, reached) -> tuple[float, int]:
    """``(mean, runs averaged)``: MLPerf's score. A run that never reached counts as the slowest (infinite time);
    with at least :data:`OLYMPIC_MIN_RUNS` runs the fastest and the slowest are dropped, with fewer every run is
    averaged. NaN when a run that never reached is among those averaged (for MLPerf: the result is invalid)."""
    t, e = _arrays(times, reached)
    ordered = np.sort(np.where(e, t, np.inf))
    if len(ordered) >= OLYMPIC_MIN_RUNS:
        ordered = ordered[1:-1]
    if not len(ordered) or np.isinf(ordered).any():
        return math.nan, len(ordered)
    return float(ordered.mean()), len(ordered)


def mlperf_valid(reached) -> bool:
    """MLPerf Training: a result is invalid when more than one of its runs failed to reach the target."""
    return int(np.sum(~np.asarray(reached, dtype=bool))) <= 1
