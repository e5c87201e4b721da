"""``bench compare``: line up two or more sets of runs by configuration and say which differences are real.

Each side (a run, a results folder or file, or one value of ``--split-by``) is aggregated over seeds per
configuration. Sides are joined on the configuration columns they share values in; a configuration
column whose values do not overlap between two sides (say ``encoder``) is what is being compared, so it
is left out of the join and reported as "differs". Every metric then gets baseline and candidate mean ±
std, the difference and the ratio. A difference no larger than the seed spread (the larger of the two
sides' standard deviations over seeds) is marked not significant; with a single seed on both sides the
spread is unknown and significance is "n/a".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import BenchError
from .sources import Source, combine
from .tables import (CONFIG_COLUMNS, MACHINE_COLUMNS, PROTOCOL_COLUMNS, fmt_value, is_accuracy,
                     metric_columns)


@dataclass
class Comparison:
    rows: pd.DataFrame  # one row per (candidate side, joined configuration, metric)
    joined_on: list[str]
    differs: list[str]
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _norm(value) -> str:
    """One spelling per value, so 2500 (int), 2500.0 (float after a NaN) and '2500' join, and NaN == NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def split_sides(sources: list[Source], split_by: str | None = None) -> list[Source]:
    """Sides to compare: each source, or (with ``split_by``) the groups of one column over all sources, in the
    order they first appear (the first is the baseline)."""
    if split_by:
        table = combine(sources).table
        if split_by not in table.columns:
            raise BenchError(f"--split-by {split_by!r}: no such column; columns are {', '.join(map(str, table.columns))}")
        keys = table[split_by].map(_norm)
        sides = [Source(f"{split_by}={k}", table[keys == k]) for k in dict.fromkeys(keys)]
    else:
        sides = sources
    if len(sides) < 2:
        raise BenchError("compare needs at least two sides: pass A B [C...] (run ids, run folders, results files) "
                         "or one results table with --split-by COLUMN")
    return sides


def join_columns(sides: list[Source], on=None) -> tuple[list[str], list[str]]:
    """``(joined_on, differs)``: configuration columns to join on, and those that tell the sides apart."""
    candidates = [c for c in CONFIG_COLUMNS if all(c in s.table.columns for s in sides)]
    if on:
        missing = [c for c in on if c not in candidates]
        if missing:
            raise BenchError(f"--on {missing[0]!r} is not a configuration column of every side; "
                             f"choose from {', '.join(candidates)}")
        return list(on), [c for c in candidates if c not in on]
    base = sides[0].table
    differs = [c for c in candidates
               if any(not set(base[c].map(_norm)) & set(s.table[c].map(_norm)) for s in sides[1:])]
    return [c for c in candidates if c not in differs], differs


def _aggregate(table: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    keyed = table.assign(**{f"_k_{c}": table[c].map(_norm) for c in keys})
    grouped = keyed.groupby([f"_k_{c}" for c in keys], sort=False, dropna=False)
    out = grouped.size().rename("n").to_frame()
    for m in metrics:
        out[f"{m}_mean"] = grouped[m].mean()
        out[f"{m}_std"] = grouped[m].std(ddof=1)
        out[f"{m}_n"] = grouped[m].count()
    return out.reset_index()


def significance(diff: float, std_a: float, std_b: float) -> tuple[float, bool | None]:
    """``(spread, significant)``: spread is the larger seed std of the two sides (NaN when neither side has two
    seeds, and then significance is None); a difference is significant when it exceeds the spread."""
    stds = [s for s in (std_a, std_b) if s is not None and not math.isnan(s)]
    if not stds or diff is None or math.isnan(diff):
        return float("nan"), None
    spread = max(stds)
    return spread, bool(abs(diff) > spread)


def compare(sides: list[Source], metrics=None, on=None, fail_on=()) -> Comparison:
    joined_on, differs = join_columns(sides, on)
    shared = [m for m in metric_columns(sides[0].table) if all(m in s.table.columns for s in sides[1:])]
    if metrics:
        unknown = [m for m in metrics if m not in shared]
        if unknown:
            raise BenchError(f"metric {unknown[0]!r} is not in every side; shared metrics: {', '.join(shared)}")
        shared = list(metrics)
    if not shared:
        raise BenchError("the sides share no metric column; are they bench results tables?")
    base = sides[0]
    agg_base = _aggregate(base.table, joined_on + differs, shared)
    keys = [f"_k_{c}" for c in joined_on]
    records, warnings = [], compare_context(sides)
    for side in sides[1:]:
        agg = _aggregate(side.table, joined_on + differs, shared)
        merged = agg_base.merge(agg, on=keys, suffixes=("_a", "_b")) if keys else agg_base.merge(agg, how="cross",
                                                                                                  suffixes=("_a", "_b"))
        if not len(merged):
            raise BenchError(f"{side.label} and {base.label} have no configuration in common (joined on "
                             f"{', '.join(joined_on) or 'nothing'}); choose join columns with --on")
        unmatched = len(agg) - merged[keys].drop_duplicates().shape[0] if keys else 0
        if unmatched > 0:
            warnings.append(f"{unmatched} configuration(s) of {side.label} have no partner in {base.label} and are "
                            f"left out")
        for _, r in merged.iterrows():
            group = {c: r[f"_k_{c}"] for c in joined_on}
            changed = {c: (r[f"_k_{c}_a"], r[f"_k_{c}_b"]) for c in differs}
            for m in shared:
                a, b = r[f"{m}_mean_a"], r[f"{m}_mean_b"]
                diff = b - a
                spread, sig = significance(diff, r[f"{m}_std_a"], r[f"{m}_std_b"])
                records.append({"baseline": base.label, "side": side.label, **{f"on_{k}": v for k, v in group.items()},
                                "differs": "; ".join(f"{c}: {x} -> {y}" for c, (x, y) in changed.items() if x != y),
                                "metric": m, "a_mean": a, "a_std": r[f"{m}_std_a"], "a_n": r[f"{m}_n_a"],
                                "b_mean": b, "b_std": r[f"{m}_std_b"], "b_n": r[f"{m}_n_b"], "diff": diff,
                                "ratio": b / a if a else float("nan"), "spread": spread, "significant": sig})
    rows = pd.DataFrame(records)
    return Comparison(rows, joined_on, differs, warnings, check_thresholds(rows, fail_on))


def compare_context(sides: list[Source]) -> list[str]:
    """Warnings when the sides were measured on different machines or software, or under different protocols."""
    out = []
    for kind, columns in (("machines", MACHINE_COLUMNS), ("protocols", PROTOCOL_COLUMNS)):
        for c in columns:
            if not all(c in s.table.columns for s in sides):
                continue
            values = [sorted(set(s.table[c].map(_norm))) for s in sides]
            if any(v != values[0] for v in values[1:]) or any(len(v) > 1 for v in values):
                listed = "; ".join(f"{s.label}: {', '.join(v)}" for s, v in zip(sides, values))
                out.append(f"the runs' {kind} differ in {c} ({listed}); differences may not be like for like")
    return out


def parse_fail_on(specs) -> list[tuple[str, float]]:
    out = []
    for spec in specs or ():
        metric, sep, value = spec.rpartition(":")
        try:
            threshold = float(value)
        except ValueError:
            threshold = None
        if not sep or not metric or threshold is None:
            raise BenchError(f"--fail-on {spec!r} is not METRIC:DELTA; write it like --fail-on zeroshot_top1:-0.5")
        out.append((metric, threshold))
    return out


def display_diff(metric: str, diff: float) -> float:
    """Differences of accuracies in percentage points, others in their own unit (as thresholds are read)."""
    return diff * 100 if is_accuracy(metric) else diff


def check_thresholds(rows: pd.DataFrame, fail_on) -> list[str]:
    """``METRIC:DELTA`` fails when a candidate's difference to the baseline goes past DELTA: below it when
    DELTA <= 0 (a drop, e.g. ``zeroshot_top1:-0.5`` = more than half a point lower), above it when DELTA > 0
    (a rise, for losses and times, e.g. ``train_seconds:30``). Accuracies are in percentage points."""
    failures = []
    for metric, threshold in fail_on:
        selected = rows[rows["metric"] == metric] if len(rows) else rows
        if not len(selected):
            raise BenchError(f"--fail-on {metric!r}: no such metric in the comparison")
        for _, r in selected.iterrows():
            d = display_diff(metric, r["diff"])
            if (threshold <= 0 and d < threshold) or (threshold > 0 and d > threshold):
                unit = " pp" if is_accuracy(metric) else ""
                sig = {True: "significant", False: "within the seed spread", None: "significance n/a"}[r["significant"]]
                failures.append(f"{metric} changed by {d:+.3g}{unit} ({r['side']} vs {r['baseline']}; {sig}), "
                                f"past --fail-on {metric}:{threshold:g}")
    return failures


def render_markdown(result: Comparison) -> str:
    rows = result.rows
    lines = []
    group_cols = [c for c in rows.columns if c.startswith("on_") and rows[c].nunique() > 1]
    for side, part in rows.groupby("side", sort=False):
        baseline = part["baseline"].iloc[0]
        lines.append(f"### {side} vs {baseline} (baseline)\n")
        changed = sorted(set(part["differs"]) - {""})
        if changed:
            lines.append("differs: " + " | ".join(changed))
        lines.append(f"joined on: {', '.join(result.joined_on) or 'nothing (one configuration per side)'}\n")
        table = pd.DataFrame({
            **{c[3:]: part[c] for c in group_cols},
            "metric": part["metric"],
            baseline: [_cell(r.metric, r.a_mean, r.a_std, r.a_n) for r in part.itertuples()],
            side: [_cell(r.metric, r.b_mean, r.b_std, r.b_n) for r in part.itertuples()],
            "diff": [_diff(r.metric, r.diff) for r in part.itertuples()],
            "ratio": [f"{r.ratio:.3f}" if not math.isnan(r.ratio) else "" for r in part.itertuples()],
            "significant": [_sig(r) for r in part.itertuples()],
        })
        lines.append(table.to_markdown(index=False, disable_numparse=True))
        lines.append("")
    return "\n".join(lines).rstrip()


def _cell(metric, mean, std, n) -> str:
    return f"{fmt_value(mean, metric, std if n and n > 1 else None)} (n={int(n)})"


def _diff(metric, diff) -> str:
    if diff is None or math.isnan(diff):
        return ""
    return f"{display_diff(metric, diff):+.2f}{' pp' if is_accuracy(metric) else ''}"


def _sig(r) -> str:
    if r.significant is None or (isinstance(r.significant, float) and math.isnan(r.significant)):
        return "n/a (one seed)"
    spread = display_diff(r.metric, r.spread)
    return f"yes (> {spread:.2f})" if r.significant else f"no (≤ {spread:.2f})"
