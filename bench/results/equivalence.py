"""``bench compare --equivalence METRIC:MARGIN``: evidence that a change left a metric alone, within ±MARGIN.

"Not significant" is not that evidence: with 3 seeds a side almost nothing is. Equivalence is shown by two one-sided
tests (TOST, :func:`bench.results.stats.tost`): the difference is shown above -MARGIN and below +MARGIN, each at
``alpha``, which is the same as its ``1 - 2 alpha`` interval lying inside ``(-MARGIN, +MARGIN)``.

- Over seeds (Welch's standard error and degrees of freedom) where both sides have at least 2 seeds: would
  other seeds also give a difference within the margin?
- Over test images, for zero-shot top-1, where every run of both sides kept ``predictions.npy`` on the same test
  images: the paired per-image difference (each side's hits averaged over its runs).

Where both apply, both must show equivalence (an intersection-union test, which keeps the level ``alpha``
without any correction): the cell reports the test with the larger p, the one that decides. ``--correct holm``
adjusts these p-values across every equivalence test of the command.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ..errors import BenchError
from .columns import is_accuracy
from .compare import PAIRED_METRIC, Comparison, check_measured, display_diff, run_hits
from .metric_units import check_margin, parse_metric_number
from .stats import Equivalence, holm, tost_paired, tost_welch

NAMES = {"seeds": "TOST over seeds", "images": "paired TOST over images"}


def parse_equivalence(specs) -> dict[str, float]:
    """``METRIC:MARGIN`` options as ``{metric: margin}``; the margin in the metric's own unit (accuracies are
    fractions: 0.005 is half a point)."""
    out = {}
    for spec in specs or ():
        metric, margin = parse_metric_number("--equivalence", spec, "MARGIN", "zeroshot_top1:0.005 (half a point)")
        check_margin("--equivalence", spec, metric, margin, "MARGIN")
        if metric in out:
            raise BenchError(f"--equivalence names {metric} twice; give one margin per metric")
        out[metric] = margin
    return out


def add_equivalence(result: Comparison, margins: dict[str, float], alpha: float, correct: str = "none") -> Comparison:
    """``result`` with the equivalence columns for each metric in ``margins``: each test's p and interval
    (``eq_seeds_*``, ``eq_images_*``), the deciding ``equivalence_test`` and ``equivalence_p`` (Holm-adjusted in
    ``equivalence_p_adjusted`` under ``correct="holm"``), ``equivalent`` (True, False, or None where no test
    applies) and the cells ``equivalence`` and ``equivalence_ci`` (text)."""
    rows = result.rows.copy()
    metrics = set(rows["metric"]) if len(rows) else set()
    missing = [m for m in margins if m not in metrics]
    if missing:
        raise BenchError(f"--equivalence {missing[0]}: not a metric of this comparison; compared: "
                         f"{', '.join(dict.fromkeys(rows['metric'])) if len(rows) else 'none'}")
    for metric in margins:
        check_measured("--equivalence", metric, rows[rows["metric"] == metric])
    found = {}
    starts = [start for *_, start in result.pairs]
    for (base, side, r, start), end in zip(result.pairs, [*starts[1:], len(rows)]):  # a pair's rows, one a metric
        for offset in range(start, end):
            metric = rows.at[offset, "metric"]
            if metric not in margins:
                continue
            seeds = tost_welch(r[f"{metric}_values_a"], r[f"{metric}_values_b"], margins[metric], alpha)
            images = _paired(base, r["run_ids_a"], side, r["run_ids_b"], margins[metric], alpha) \
                if metric == PAIRED_METRIC else None
            found[offset] = (margins[metric], seeds, images)
    columns = {name: pd.Series(np.nan, index=rows.index, dtype=object) for name in
               ("equivalence_margin", "eq_seeds_p", "eq_seeds_ci_low", "eq_seeds_ci_high", "eq_images_p",
                "eq_images_ci_low", "eq_images_ci_high", "equivalence_test", "equivalence_p")}
    for offset, (margin, seeds, images) in found.items():
        columns["equivalence_margin"][offset] = margin
        for prefix, test in (("eq_seeds", seeds), ("eq_images", images)):
            if test is not None:
                columns[f"{prefix}_p"][offset] = test.p_value
                columns[f"{prefix}_ci_low"][offset], columns[f"{prefix}_ci_high"][offset] = test.ci_low, test.ci_high
        deciding = max((t for t in (seeds, images) if t is not None), key=lambda t: t.p_value, default=None)
        if deciding is not None:
            columns["equivalence_test"][offset], columns["equivalence_p"][offset] = deciding.test, deciding.p_value
    for name, values in columns.items():
        rows[name] = values if name == "equivalence_test" else pd.to_numeric(values)
    p = rows["equivalence_p"].to_numpy(dtype=np.float64)
    rows["equivalence_p_adjusted"] = holm(p) if correct == "holm" else p
    rows["equivalent"] = pd.Series([None if math.isnan(q) else bool(q < alpha) for q in rows["equivalence_p_adjusted"]],
                                   index=rows.index, dtype=object)
    level = f"{100 * (1 - 2 * alpha):g}%"
    rows["equivalence_ci_label"] = f"equivalence: {level} CI"
    rows["equivalence_ci"] = [_interval(r, level) for r in rows.itertuples()]
    rows["equivalence"] = [_cell(r, correct) for r in rows.itertuples()]
    return dataclasses.replace(result, rows=rows)  # the rest (time to target, warnings, ...) as it was


def _paired(base, ids_a, side, ids_b, margin: float, alpha: float) -> Equivalence | None:
    # bench compare has warned already about files that are damaged, not the run's, or of other test images
    (hits_a, _), (hits_b, _) = run_hits(base, ids_a, []), run_hits(side, ids_b, [])
    if hits_a is None or hits_b is None or not np.array_equal(hits_a[0], hits_b[0]):
        return None
    return tost_paired(hits_b[1].mean(axis=0) - hits_a[1].mean(axis=0), margin, alpha)


def _margin(metric: str, margin: float) -> str:
    return f"±{display_diff(metric, margin):.2f} pp" if is_accuracy(metric) else f"±{margin:g}"


def _interval(r, level: str) -> str:
    if isinstance(r.equivalence_test, float) or r.equivalence_test is None:
        return ""
    prefix = f"eq_{r.equivalence_test}"
    low, high = getattr(r, f"{prefix}_ci_low"), getattr(r, f"{prefix}_ci_high")
    unit = " pp" if is_accuracy(r.metric) else ""
    return f"[{display_diff(r.metric, low):+.2f}, {display_diff(r.metric, high):+.2f}]{unit}"


def _cell(r, correct: str) -> str:
    if math.isnan(r.equivalence_margin):
        return ""
    within = f"within {_margin(r.metric, r.equivalence_margin)}"
    if r.equivalent is None:
        return f"not shown equivalent {within} (n/a: {_untested(r)})"
    p = r.equivalence_p_adjusted
    shown = "<0.001" if p < 0.001 else f"{p:.3f}"
    label = "Holm p" if correct == "holm" else "p"
    verdict = "equivalent" if r.equivalent else "not shown equivalent"
    return f"{verdict} {within} ({NAMES[r.equivalence_test]}, {label}={shown})"


def _untested(r) -> str:
    """Why no test applies to comparison row ``r``, as the significance column says it: a metric one side never
    measured (held-out accuracies of runs without --holdout-classes, a suite metric not run) is not a seed count."""
    if min(r.a_n, r.b_n) == 0:
        return "not measured on one side"
    seeds = "one seed on a side" if max(r.a_n, r.b_n) >= 2 else "one seed a side"
    return f"{seeds}, no predictions.npy" if r.metric == PAIRED_METRIC else seeds


def equivalence_failures(result: Comparison) -> list[str]:
    """``--fail-on-not-equivalent``: one line per tested difference not shown equivalent (no test counts as not
    shown)."""
    rows = result.rows
    tested = rows[rows["equivalence_margin"].notna()] if "equivalence_margin" in rows else rows.iloc[:0]
    return [f"{r['metric']} {r['equivalence']} ({r['side']} vs {r['baseline']})" for _, r in tested.iterrows()
            if r["equivalent"] is not True]


def equivalence_note(result: Comparison) -> str:
    alpha = result.alpha
    holm_note = " p-values Holm-adjusted across every equivalence test shown (--correct holm)." \
        if "equivalence_p_adjusted" in result.rows and result.correct == "holm" else ""
    return (f"equivalence: two one-sided tests (TOST) at alpha {alpha:g}: equivalent when the "
            f"{100 * (1 - 2 * alpha):g}% interval of the difference lies inside ±MARGIN, over seeds (Welch) where "
            f"both sides have 2 or more and, for zero-shot top-1, over the test images (paired, from "
            f"predictions.npy); where both apply both must show it, and the cell names the test with the larger "
            f"p.{holm_note} See docs/evaluation.md.")
