"""The statistics behind ``bench compare``: Welch's t-test over seeds, paired tests over test images, Holm.

Two questions, two tests (docs/evaluation.md says when each applies and what it cannot tell):
- over seeds: would another seed give the same difference? Welch's unequal-variance t-test on the
  per-seed metric values, with its 95% confidence interval of the difference of means;
- over test images: with these trained models, is the top-1 difference more than the luck of which
  images are in the test set? Exact McNemar on one run per side, a paired bootstrap of per-image
  accuracy (seed-averaged) otherwise; both pair the sides image by image.

And two for "no change" and "enough seeds": two one-sided tests (TOST) of equivalence within a margin, over
seeds (Welch) and over test images (paired), and the half-width of the t interval of a mean, which
``bench sweep --until`` stops on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_SEED = 0  # a fixed seed: the same tables give the same intervals
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class TestResult:
    test: str  # "welch", "mcnemar" or "bootstrap"
    p_value: float  # two-sided; NaN when the test is undefined (no variance in either side)
    ci_low: float  # confidence interval of the difference (candidate - baseline)
    ci_high: float
    n: int  # seeds per side summed (welch) or paired test images


def _var(x: np.ndarray) -> float:
    """The sample variance, exactly 0 where every value is the same: numpy's two-pass mean leaves rounding noise
    (three 0.1s have a variance of 3e-34), on which a t-test would call identical values different."""
    return 0.0 if x.min() == x.max() else float(x.var(ddof=1))


def welch(a, b, confidence: float = 0.95) -> TestResult | None:
    """Welch's t-test of ``mean(b) - mean(a)``; None unless both sides have at least 2 values.

    The interval is ``diff ± t(df) * se`` with the Welch-Satterthwaite degrees of freedom, the interval
    whose complement the test rejects at ``1 - confidence``. When neither side varies the test is
    undefined: p and the interval are NaN, and nothing is called significant.
    """
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = b.mean() - a.mean()
    va, vb = _var(a) / len(a), _var(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return TestResult("welch", math.nan, math.nan, math.nan, len(a) + len(b))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    p = 2 * stats.t.sf(abs(diff) / se, df)
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    return TestResult("welch", float(p), float(diff - half), float(diff + half), len(a) + len(b))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired per-image hits: a binomial test on the discordant images."""
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    if a_only + b_only == 0:
        return 1.0
    return float(stats.binomtest(b_only, a_only + b_only, 0.5).pvalue)


def paired_bootstrap(per_image_diff: np.ndarray, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """``(p, low, high)`` of the mean of per-image differences, resampling test images with replacement.

    The mean of a resample depends only on how often each distinct difference is drawn, so resamples are
    drawn as multinomial counts over the distinct values: the same distribution as resampling the images
    one by one, at a cost independent of the test-set size. The interval is the percentile interval; p is
    twice the smaller share of resampled means on either side of zero, each share counted as ``(1 + k) / (1 + B)``
    of ``B`` resamples (the observed sample counts as one: a p from 10,000 resamples is never below about 2e-4,
    never the 0 that Holm would keep at 0 however many tests), capped at 1.
    """
    values, counts = np.unique(np.asarray(per_image_diff, dtype=np.float64), return_counts=True)
    n = int(counts.sum())
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=resamples)
    means = draws @ values / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    p = min(1.0, 2 * (1 + min(np.sum(means <= 0), np.sum(means >= 0))) / (1 + resamples))
    return float(p), float(low), float(high)


def paired_top1(correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95) -> TestResult:
    """Paired test of top-1 over the same test images; ``correct_*`` are ``(runs, images)`` boolean hits.

    One run per side: exact McNemar, with the bootstrap interval. More runs on either side: each image's
    accuracy averaged over that side's runs, then the paired bootstrap for both p and the interval.
    """
    correct_a, correct_b = np.atleast_2d(correct_a), np.atleast_2d(correct_b)
    diff = correct_b.mean(axis=0) - correct_a.mean(axis=0)
    p, low, high = paired_bootstrap(diff, confidence)
    if len(correct_a) == 1 and len(correct_b) == 1:
        return TestResult("mcnemar", mcnemar_exact(correct_a[0], correct_b[0]), low, high, diff.size)
    return TestResult("bootstrap", p, low, high, diff.size)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error rate); NaN p-values stay NaN and do not count."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    known = np.flatnonzero(~np.isnan(p))
    order = known[np.argsort(p[known], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


def mean_halfwidth(values, confidence: float = 0.95) -> float:
    """Half-width of the t-based confidence interval of the mean, ``t_{(1+c)/2, n-1} * s / sqrt(n)`` (``s`` the
    sample std); infinite below 2 finite values, since one value says nothing about the spread."""
    x = _finite(values)
    if len(x) < 2:
        return math.inf
    return halfwidth_at(math.sqrt(_var(x)), len(x), confidence)


def halfwidth_at(std: float, n: int, confidence: float = 0.95) -> float:
    """That half-width for a sample std ``std`` over ``n`` values: what ``n`` seeds would give at that spread."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests of ``-margin < diff < +margin`` (diff: candidate - baseline)."""

    test: str  # "seeds" (Welch) or "images" (paired over test images)
    diff: float
    margin: float
    p_value: float  # the larger of the two one-sided p-values: equivalent at alpha when p < alpha
    ci_low: float  # the 1 - 2 alpha interval of diff; p < alpha exactly when it lies inside (-margin, +margin)
    ci_high: float
    n: int  # seeds per side summed (seeds) or paired test images (images)


def tost(diff: float, se: float, df: float, margin: float, alpha: float, test: str, n: int) -> Equivalence:
    """TOST for a difference with a t-distributed error: H0 ``diff <= -margin`` rejected by a large
    ``(diff + margin) / se``, H0 ``diff >= +margin`` by a small ``(diff - margin) / se``; p is the larger of the
    two one-sided p-values. With ``se == 0`` the interval is the point ``diff`` itself: p is 0 inside the margin,
    1 outside (the limit of the test as the spread goes to zero). ``alpha`` below 0.5: the interval is the
    ``1 - 2 alpha`` one, which does not exist from there on."""
    if not 0 < alpha < 0.5:
        raise ValueError(f"TOST needs 0 < alpha < 0.5, got {alpha}")
    if se == 0:
        p = 0.0 if abs(diff) < margin else 1.0
        return Equivalence(test, float(diff), float(margin), p, float(diff), float(diff), n)
    p_lower = stats.t.sf((diff + margin) / se, df)
    p_upper = stats.t.cdf((diff - margin) / se, df)
    half = stats.t.ppf(1 - alpha, df) * se
    return Equivalence(test, float(diff), float(margin), float(max(p_lower, p_upper)), float(diff - half),
                       float(diff + half), n)


def tost_welch(a, b, margin: float, alpha: float = 0.05) -> Equivalence | None:
    """TOST over seeds of ``mean(b) - mean(a)`` with Welch's standard error and Welch-Satterthwaite degrees of
    freedom (as :func:`welch`); None unless both sides have at least 2 values."""
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = _var(a) / len(a), _var(b) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se else math.inf
    return tost(b.mean() - a.mean(), se, df, margin, alpha, "seeds", len(a) + len(b))


def tost_paired(per_image_diff, margin: float, alpha: float = 0.05) -> Equivalence | None:
    """TOST over test images of the mean per-image difference (candidate hit - baseline hit, each side's hits
    averaged over its runs): the paired t-test's standard error ``sd / sqrt(N)`` on ``N - 1`` degrees of
    freedom. On a test set of thousands of images this is the normal approximation, which the central limit
    theorem makes accurate for a mean of bounded differences; on a handful of images the t is the more careful.
    None below 2 images."""
    d = _finite(per_image_diff)
    if len(d) < 2:
        return None
    return tost(d.mean(), math.sqrt(_var(d) / len(d)), len(d) - 1, margin, alpha, "images", len(d))


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    return x[np.isfinite(x)]
