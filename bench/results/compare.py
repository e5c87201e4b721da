"""``bench compare``: line up two or more sets of runs by configuration and say which differences are real.

Each side (a run, a results folder or file, or one value of ``--split-by``) is aggregated over seeds per
configuration. Sides are joined on the configuration columns they share values in; a configuration
column whose values do not overlap between two sides (say ``encoder``) is what is being compared, so it
is left out of the join and reported as "differs". Every metric then gets baseline and candidate mean ±
std, the difference and the ratio, and (:mod:`bench.results.stats`) Welch's t-test over seeds where both sides
have at least two, with a 95% interval of the difference. Zero-shot top-1 also gets a paired test over
the test images from the runs' ``predictions.npy`` (exact McNemar for one run per side, a paired
bootstrap otherwise), so one-seed comparisons get an interval too. ``significant`` is ``p < alpha`` of
Welch's test where it applies, else of the paired test, else unknown; ``--correct holm`` adjusts the
deciding p-values across the metrics of each comparison.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import BenchError
from .columns import (
    CONFIG_COLUMNS,
    MACHINE_COLUMNS,
    PROTOCOL_COLUMNS,
    is_accuracy,
    is_true,
    metric_columns,
    repeated_seeds,
    repeated_seeds_note,
    with_eval_dataset,
)
from .lookup import Source, combine
from .metric_units import parse_metric_number
from .predictions import FILENAME as PREDICTIONS
from .predictions import load_predictions
from .stats import TestResult, holm, paired_top1, welch
from .time_to_target import cadence_note, compare_targets, eval_cadences, render_comparison, unmatched_targets
from .views import fmt_value

PAIRED_METRIC = "zeroshot_top1"  # the metric the per-image predictions pair (top-1 hits)
# Configuration columns only some rows have, which compare fills in (align_sides) rather than CONFIG_COLUMNS list,
# whose blanks elsewhere mean a column the row's kind lacks: a run cut at the epoch that reached its target is
# another configuration than one that trained every epoch (written by runs given a target), and a pretrained
# model's weights tell apart two models of one architecture (bench eval --open-clip rows)
STOPPED, WEIGHTS = "stop_at_target", "pretrained"
CORRECTIONS = ("none", "holm")


@dataclass
class Comparison:
    rows: pd.DataFrame  # one row per (candidate side, joined configuration, metric)
    joined_on: list[str]
    differs: list[str]
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    alpha: float = 0.05
    correct: str = "none"
    # (baseline, candidate side, the joined configuration's aggregates, its first row in ``rows``): what later
    # tests of the same pairs (``--equivalence``) start from
    pairs: list = field(default_factory=list, repr=False)
    correction_scope: str = "the metrics of each comparison"  # what --correct holm adjusts across
    # time to target (bench.results.time_to_target): one row per candidate, configuration and target both set
    targets: pd.DataFrame = field(default_factory=pd.DataFrame)


def canonical_value(value) -> str:
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
        whole = combine(sources)
        table = whole.table
        if split_by not in table.columns:
            raise BenchError(f"--split-by {split_by!r}: no such column; columns are {', '.join(map(str, table.columns))}")
        keys = table[split_by].map(canonical_value)
        # what combining the sources left out is said once, with the first side; each side's rows taken by their
        # positions (a mask per side is a pass over the whole table per side: configurations x runs)
        rows = keys.groupby(keys, sort=False).indices
        sides = [Source(f"{split_by}={k}", table.iloc[rows[k]], whole.run_dirs, whole.notes if i == 0 else [])
                 for i, k in enumerate(dict.fromkeys(keys))]
        if len(sides) == 1:
            raise BenchError(f"--split-by {split_by}: every run has {sides[0].label}, so there is one side; split by "
                             f"a column whose values differ, or leave --split-by out to compare the sources given")
    else:
        sides = sources
    if len(sides) < 2:
        raise BenchError("compare needs at least two sides: pass A B [C...] (run ids, run folders, results files) "
                         "or one results table with --split-by COLUMN")
    return sides


def join_columns(sides: list[Source], on=None) -> tuple[list[str], list[str]]:
    """``(joined_on, differs)``: configuration columns to join on, and those that tell the sides apart."""
    candidates = [c for c in CONFIG_COLUMNS + [STOPPED, WEIGHTS] if all(c in s.table.columns for s in sides)]
    if on:
        missing = [c for c in on if c not in candidates]
        if missing:
            raise BenchError(f"--on {missing[0]!r} is not a configuration column of every side; "
                             f"choose from {', '.join(candidates)}")
        return list(on), [c for c in candidates if c not in on]
    base = sides[0].table
    differs = [c for c in candidates if any(not set(base[c].map(canonical_value)) & set(s.table[c].map(canonical_value))
                                            for s in sides[1:])]
    return [c for c in candidates if c not in differs], differs


def _aggregate(table: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Per configuration: run count, run ids, and each metric's per-seed values, mean, std and count."""
    keyed = table.assign(**{f"_k_{c}": table[c].map(canonical_value) for c in keys})
    grouped = keyed.groupby([f"_k_{c}" for c in keys], sort=False, dropna=False)
    columns = {"n": grouped.size(), "run_ids": grouped["run_id"].agg(lambda ids: [str(i) for i in ids])}
    for m in metrics:
        columns.update({f"{m}_values": grouped[m].agg(list), f"{m}_mean": grouped[m].mean(),
                        f"{m}_std": grouped[m].std(ddof=1), f"{m}_n": grouped[m].count()})
    return pd.concat(columns, axis=1).copy().reset_index()  # copy: one block, so reset_index does not fragment it


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise BenchError(f"--alpha must be in (0, 1), got {alpha}; 0.05 is the usual level")
    return float(alpha)


def compare(sides: list[Source], metrics=None, on=None, fail_on=(), alpha: float = 0.05, correct: str = "none",
            fail_on_significant: bool = False) -> Comparison:
    alpha = check_alpha(alpha)
    if correct not in CORRECTIONS:
        raise BenchError(f"--correct must be one of {', '.join(CORRECTIONS)}, got {correct!r}")
    sides = align_sides(sides)
    joined_on, differs = join_columns(sides, on)
    shared = [m for m in metric_columns(sides[0].table) if all(m in s.table.columns for s in sides[1:])]
    if metrics:
        unknown = [m for m in metrics if m not in shared]
        if unknown:
            raise BenchError(f"metric {unknown[0]!r} is not in every side; shared metrics: {', '.join(shared)}")
        shared = list(metrics)
    if not shared:
        raise BenchError("the sides share no metric column; are they bench results tables?")
    warnings = [n for side in sides for n in side.notes] + compare_context(sides) + across_datasets(differs)
    for side in sides:
        check_one_configuration_per_group(side, joined_on + differs)
    sides = [_one_run_per_seed(side, joined_on + differs, warnings) for side in sides]
    base = sides[0]
    agg_base = _aggregate(base.table, joined_on + differs, shared)
    keys = [f"_k_{c}" for c in joined_on]
    records, targets, pairs = [], [], []
    hits = {}  # the runs' predictions per (side, run ids): the baseline's are paired with every candidate's
    for side in sides[1:]:
        agg = _aggregate(side.table, joined_on + differs, shared)
        merged = agg_base.merge(agg, on=keys, suffixes=("_a", "_b")) if keys else agg_base.merge(agg, how="cross",
                                                                                                  suffixes=("_a", "_b"))
        if not len(merged):
            raise BenchError(f"{side.label} and {base.label} have no configuration in common (joined on "
                             f"{', '.join(joined_on) or 'nothing'}); choose join columns with --on")
        # the candidate's configurations whose joined values no baseline configuration has (one may pair with several)
        if keys:
            partners = agg[keys].merge(agg_base[keys].drop_duplicates(), on=keys, how="left", indicator=True)
            unmatched = int((partners["_merge"] == "left_only").sum())
            if unmatched > 0:
                warnings.append(f"{unmatched} configuration(s) of {side.label} have no partner in {base.label} and "
                                f"are left out")
        for _, r in merged.iterrows():
            pairs.append((base, side, r, len(records)))
            group = {c: r[f"_k_{c}"] for c in joined_on}
            changed = {c: (r[f"_k_{c}_a"], r[f"_k_{c}_b"]) for c in differs}
            # which pair of configurations, where a side holds several that the joined columns do not tell apart
            pair = "; ".join(f"{c}: {x} -> {y}" for c, (x, y) in changed.items())
            differ = "; ".join(f"{c}: {x} -> {y}" for c, (x, y) in changed.items() if x != y)
            targets += _time_to_target(base, r["run_ids_a"], side, r["run_ids_b"], alpha, warnings,
                                       {"baseline": base.label, "side": side.label,
                                        **{f"on_{k}": v for k, v in group.items()}, "differs": differ,
                                        "configurations": pair})
            paired, unpaired = None, ""
            if PAIRED_METRIC in shared:
                paired, unpaired = _paired_top1(base, r["run_ids_a"], side, r["run_ids_b"], warnings, hits)
            for m in shared:
                if r[f"{m}_n_a"] == 0 and r[f"{m}_n_b"] == 0:  # measured by neither (a transfer row's train_seconds)
                    continue
                a, b = r[f"{m}_mean_a"], r[f"{m}_mean_b"]
                seeds = welch(r[f"{m}_values_a"], r[f"{m}_values_b"])
                images = paired if m == PAIRED_METRIC else None
                # an undefined Welch test (no seed of either side varies) leaves the decision to the images
                decided = seeds if seeds is not None and not math.isnan(seeds.p_value) else images or seeds
                records.append({"baseline": base.label, "side": side.label, **{f"on_{k}": v for k, v in group.items()},
                                "differs": differ,
                                "configurations": pair,
                                "metric": m, "a_mean": a, "a_std": r[f"{m}_std_a"], "a_n": r[f"{m}_n_a"],
                                "b_mean": b, "b_std": r[f"{m}_std_b"], "b_n": r[f"{m}_n_b"], "diff": b - a,
                                "ratio": b / a if a else float("nan"),
                                **_test_columns("seeds", seeds), **_test_columns("images", images),
                                "test": decided.test if decided else None,
                                "p_value": decided.p_value if decided else float("nan"),
                                "unpaired": unpaired if m == PAIRED_METRIC else ""})
    unmeasured = [m for m in shared if pairs and not any(rec["metric"] == m for rec in records)]
    if unmeasured and (metrics or len(unmeasured) == len(shared)):  # asked for, or nothing left to compare
        raise BenchError(f"{', '.join(unmeasured)}: no value on either side of any pair compared (transfer rows have "
                         f"no training times); compare another metric")
    rows = _decide(pd.DataFrame(records), alpha, correct)
    # each joined pair of configurations checks its own runs, so two pairs with the same cadences or the same lonely
    # target say the same sentence: each is said once, in the order first said
    warnings = list(dict.fromkeys(warnings))
    return Comparison(rows, joined_on, differs, warnings, check_thresholds(rows, fail_on, fail_on_significant),
                      alpha, correct, pairs, targets=pd.DataFrame(targets))


def _one_run_per_seed(side: Source, keys: list[str], warnings: list) -> Source:
    """``side`` with one run per configuration and seed (see :func:`bench.results.columns.repeated_seeds`)."""
    repeated = repeated_seeds(side.table, keys)
    if not repeated.any():
        return side
    warnings.append(repeated_seeds_note(side.table[repeated], f" of {side.label}"))
    return Source(side.label, side.table[~repeated], side.run_dirs)


def _time_to_target(base: Source, ids_a: list, side: Source, ids_b: list, alpha: float, warnings: list,
                    keys: dict) -> list[dict]:
    """The time-to-target rows of one joined configuration, for the targets both groups of runs set."""
    rows_a = base.table[base.table["run_id"].astype(str).isin(ids_a)]
    rows_b = side.table[side.table["run_id"].astype(str).isin(ids_b)]
    lonely = unmatched_targets(rows_a, rows_b)
    if lonely:
        warnings.append(f"target(s) {', '.join(lonely)} set by the runs of only one of {base.label} and {side.label}: "
                        f"their times to target are not compared")
    rows = compare_targets(rows_a, rows_b, alpha)
    cadences = {*eval_cadences(rows_a, base.run_dirs).values(),
                *eval_cadences(rows_b, side.run_dirs).values()} if rows else set()
    if len(cadences) > 1:  # a target is seen only at evaluated epochs: the times are of different resolutions
        warnings.append(cadence_note(f"of {base.label} and {side.label}", cadences))
    return [{**keys, **row} for row in rows]


def _test_columns(prefix: str, result: TestResult | None) -> dict:
    if result is None:
        return {f"{prefix}_p": float("nan"), f"{prefix}_ci_low": float("nan"), f"{prefix}_ci_high": float("nan"),
                f"{prefix}_test": None}
    return {f"{prefix}_p": result.p_value, f"{prefix}_ci_low": result.ci_low, f"{prefix}_ci_high": result.ci_high,
            f"{prefix}_test": result.test}


def _decide(rows: pd.DataFrame, alpha: float, correct: str) -> pd.DataFrame:
    """``p_adjusted`` (Holm within each candidate side and pair of configurations, when asked) and
    ``significant``: True or False from the deciding test, None where no test applies (one seed and no predictions)."""
    if not len(rows):
        return rows
    rows = rows.copy()
    rows["p_adjusted"], rows["correction"] = rows["p_value"], correct
    if correct == "holm":
        group_cols = ["side", "configurations"] + [c for c in rows.columns if c.startswith("on_")]
        for _, index in rows.groupby(group_cols, sort=False, dropna=False).groups.items():
            rows.loc[index, "p_adjusted"] = holm(rows.loc[index, "p_value"].to_numpy())
    # object dtype: Python True/False/None, so "is True" reads as it says
    rows["significant"] = pd.Series([None if math.isnan(p) else bool(p < alpha) for p in rows["p_adjusted"]],
                                    index=rows.index, dtype=object)
    return rows


def _paired_top1(base: Source, ids_a: list, side: Source, ids_b: list, warnings: list,
                 cache: dict | None = None) -> tuple[TestResult | None, str]:
    """The paired top-1 test when every run of both groups kept its predictions on the same test images, and
    otherwise None with why not (what the table's verdict says). ``cache``: :func:`run_hits` per side and run ids,
    kept across the pairs of one comparison (what it warns of is said once anyway)."""
    cache = {} if cache is None else cache

    def hits_of(source, ids):
        key = (id(source), tuple(ids))
        if key not in cache:
            cache[key] = run_hits(source, ids, warnings)
        return cache[key]

    hits_a, why_a = hits_of(base, ids_a)
    hits_b, why_b = hits_of(side, ids_b)
    if hits_a is None or hits_b is None:
        return None, why_a or why_b
    (labels_a, correct_a), (labels_b, correct_b) = hits_a, hits_b
    if not np.array_equal(labels_a, labels_b):
        warnings.append(f"{side.label} and {base.label} were evaluated on different test images (their "
                        f"predictions.npy labels differ); the paired test over images is left out")
        return None, "other test images"
    return paired_top1(correct_a, correct_b), ""


def run_hits(source: Source, run_ids: list, warnings: list) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """``(labels, correct)`` with ``correct`` of shape (runs, images), or None with why: a run without the file
    (quietly), or with one that is damaged or not its own (its top-1 is not the row's), which is warned about."""
    labels, correct = None, []
    top1 = dict(zip(source.table["run_id"].astype(str), source.table[PAIRED_METRIC]))
    for run_id in run_ids:
        folder = source.run_dirs.get(run_id)
        path = folder / PREDICTIONS if folder is not None else None
        if path is None or not path.is_file():
            return None, "no predictions.npy"
        loaded = load_predictions(path)
        if loaded is None:
            warnings.append(f"{path} is not a predictions table bench wrote; the paired test over images is left out")
            return None, "a damaged predictions.npy"
        hits = loaded[1] == loaded[0]
        # the file's top-1 is the row's in every run bench writes; half a point apart, it is another run's file
        if not abs(hits.mean() - float(top1.get(str(run_id), np.nan))) <= 0.005:
            warnings.append(f"{path} gives top-1 {hits.mean():.4f}, its row {top1.get(str(run_id))}: not this run's "
                            f"predictions; the paired test over images is left out")
            return None, "a predictions.npy not its row's"
        if labels is not None and not np.array_equal(loaded[0], labels):
            return None, "other test images"
        labels = loaded[0]
        correct.append(hits)
    return ((labels, np.stack(correct)), "") if correct else (None, "no predictions.npy")


def align_sides(sides: list[Source]) -> list[Source]:
    """The sides with the transfer, hold-out, stop-at-target and weights columns on every row, so they join per
    evaluated dataset, per held-out split, per kind of run and per pretrained weights: ``eval_dataset`` filled from
    ``dataset`` where missing (rows from before transfer rows), ``holdout_classes`` and ``pretrained`` blank on the
    sides whose rows have none, and ``stop_at_target`` false on the rows of runs that trained every epoch (with a
    target or without one: a target alone only observes)."""
    tables = [with_eval_dataset(s.table) for s in sides]
    for column in ("holdout_classes", WEIGHTS):
        if any(column in t.columns for t in tables):
            tables = [t if column in t.columns else t.assign(**{column: np.nan}) for t in tables]
    if any(STOPPED in t.columns for t in tables):
        tables = [t.assign(**{STOPPED: t[STOPPED].map(is_true) if STOPPED in t.columns else False})
                  for t in tables]
    return [Source(s.label, t, s.run_dirs, s.notes) for s, t in zip(sides, tables)]


def check_one_configuration_per_group(side: Source, keys: list[str]):
    """Refuse to pool over seeds runs of different configurations that the table's configuration columns do not
    tell apart: their config ids differ in an option runs.csv has no column for (``--no-compact-embedding``,
    ``--cutout``, ...), and a mean over both would describe neither."""
    table = side.table
    if "config_id" not in table.columns or not table["config_id"].notna().all() or not len(table):
        return
    groups = table.groupby([table[c].map(canonical_value) for c in keys], sort=False) if keys else [((), table)]
    for _, group in groups:
        ids = list(dict.fromkeys(group["config_id"].astype(str)))
        if len(ids) > 1:
            raise BenchError(f"{side.label} holds runs of {len(ids)} configurations ({', '.join(ids[:4])}) that differ "
                             f"only in options runs.csv has no column for (a mean over them describes neither); give "
                             f"each its own side: --split-by config_id, or their run folders as sides")


def across_datasets(differs: list[str]) -> list[str]:
    """A warning when the sides share no evaluated dataset, so what is compared are accuracies on different test
    sets (with one in common, each dataset's rows are compared with their own)."""
    if "eval_dataset" not in differs:
        return []
    return [("the sides were evaluated on different datasets (eval_dataset differs): accuracies on different test "
             "sets are not like for like; --where eval_dataset=NAME compares one dataset")]


def compare_context(sides: list[Source]) -> list[str]:
    """Warnings when the sides were measured on different machines or software, or under different protocols
    (within each evaluated dataset: a run's transfer rows have their own test images and templates)."""
    out = []
    for kind, columns in (("machines", MACHINE_COLUMNS), ("protocols", PROTOCOL_COLUMNS)):
        for c in columns:
            if not all(c in s.table.columns for s in sides):
                continue
            for where, scoped in per_dataset(sides) if kind == "protocols" else [("", sides)]:
                values = [sorted(set(s.table[c].map(canonical_value))) for s in scoped]
                if any(v != values[0] for v in values[1:]) or any(len(v) > 1 for v in values):
                    listed = "; ".join(f"{s.label}: {', '.join(v)}" for s, v in zip(scoped, values))
                    out.append(f"the runs' {kind} differ in {c}{where} ({listed}); differences may not be like for "
                               f"like")
    return out


def per_dataset(sides: list[Source]) -> list[tuple[str, list[Source]]]:
    """The sides cut to each evaluated dataset that more than one of them holds (``" on NAME"``), or all of them
    as they are where every row evaluates one dataset or the sides share none."""
    if not all("eval_dataset" in s.table.columns for s in sides):
        return [("", sides)]
    names = [set(s.table["eval_dataset"].map(canonical_value)) for s in sides]
    shared = [d for d in dict.fromkeys(d for n in names for d in n) if sum(d in n for n in names) > 1]
    if not shared or all(len(n) == 1 for n in names):
        return [("", sides)]
    return [(f" on {d}", [Source(s.label, s.table[s.table["eval_dataset"].map(canonical_value) == d], s.run_dirs)
                          for s, n in zip(sides, names) if d in n]) for d in shared]


def parse_fail_on(specs) -> list[tuple[str, float]]:
    return [parse_metric_number("--fail-on", spec, "DELTA", "zeroshot_top1:-0.5") for spec in specs or ()]


def display_diff(metric: str, diff: float) -> float:
    """Differences of accuracies in percentage points, others in their own unit (as thresholds are read)."""
    return diff * 100 if is_accuracy(metric) else diff


def check_measured(option: str, metric: str, selected: pd.DataFrame):
    """Some comparison row of ``metric`` (``selected``) has runs reporting it on both sides, or one line names the
    side that reports none: held-out accuracies of runs without --holdout-classes, a suite metric not run. A
    --fail-on gate on it could never fire, so CI would pass silently; an equivalence could never be shown."""
    if len(selected) and not ((selected["a_n"] > 0) & (selected["b_n"] > 0)).any():
        r = selected.iloc[0]
        lacking = r["baseline"] if r["a_n"] == 0 else r["side"]
        raise BenchError(f"{option} {metric}: no run of {lacking} reports it, so there is no difference to test; "
                         f"compare runs that both report {metric}, or drop it")


def check_thresholds(rows: pd.DataFrame, fail_on, only_significant: bool = False) -> list[str]:
    """``METRIC:DELTA`` fails when a candidate's difference to the baseline goes past DELTA: below it when
    DELTA <= 0 (a drop, e.g. ``zeroshot_top1:-0.5`` = more than half a point lower), above it when DELTA > 0
    (a rise, for losses and times, e.g. ``train_seconds:30``). Accuracies are in percentage points.
    ``only_significant``: a difference past DELTA fails only when its test also calls it significant."""
    failures = []
    for metric, threshold in fail_on:
        selected = rows[rows["metric"] == metric] if len(rows) else rows
        if not len(selected):
            raise BenchError(f"--fail-on {metric!r}: no such metric in the comparison, or no value of it on either "
                             f"side")
        check_measured("--fail-on", metric, selected)
        for _, r in selected.iterrows():
            d = display_diff(metric, r["diff"])
            if (threshold <= 0 and d < threshold) or (threshold > 0 and d > threshold):
                if only_significant and r["significant"] is not True:
                    continue
                unit = " pp" if is_accuracy(metric) else ""
                failures.append(f"{metric} changed by {d:+.3g}{unit} ({r['side']} vs {r['baseline']}; "
                                f"{_verdict(r)}), past --fail-on {metric}:{threshold:g}")
    return failures


TEST_NAMES = {"welch": "Welch", "mcnemar": "McNemar", "bootstrap": "bootstrap"}


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
        records = list(part.itertuples())
        table = pd.DataFrame({
            **({"configurations": part["configurations"]} if several_pairs(part) else {}),
            **{c[3:]: part[c] for c in group_cols},
            "metric": part["metric"],
            baseline: [_cell(r.metric, r.a_mean, r.a_std, r.a_n) for r in records],
            side: [_cell(r.metric, r.b_mean, r.b_std, r.b_n) for r in records],
            "diff": [_diff(r.metric, r.diff) for r in records],
            "ratio": [f"{r.ratio:.3f}" if not math.isnan(r.ratio) else "" for r in records],
            "seeds: 95% CI, p (Welch)": [_interval(r, "seeds") for r in records],
        })
        if part["images_test"].notna().any():
            table["test images: 95% CI, p"] = [_interval(r, "images") for r in records]
        table["significant"] = [_verdict(r) for r in records]
        if "equivalence" in part.columns:  # --equivalence: its interval and verdict (bench.results.equivalence)
            table[part["equivalence_ci_label"].iloc[0]] = part["equivalence_ci"].fillna("")
            table["equivalence"] = part["equivalence"].fillna("")
        lines.append(table.to_markdown(index=False, disable_numparse=True))
        lines.append("")
    section = render_comparison(result.targets, result.alpha, several_pairs(result.targets))
    if section:
        lines += [section, ""]
    lines.append(_method_note(result))
    return "\n".join(lines).rstrip()


def several_pairs(rows: pd.DataFrame) -> bool:
    """Whether a candidate side pairs with the baseline in more than one way that the joined columns do not tell
    apart (a side of several configurations in the columns that differ): then each row names its pair."""
    return bool(len(rows)) and bool(rows.groupby("side", sort=False)["configurations"].nunique().gt(1).any())


def _method_note(result: Comparison) -> str:
    holm = (f" p-values Holm-adjusted across {result.correction_scope} (--correct holm)."
            if result.correct == "holm" else "")
    return (f"Intervals are 95% confidence intervals of candidate − baseline. significant: p < {result.alpha:g} in "
            f"Welch's t-test over seeds where both sides have at least 2 and the seeds vary; otherwise, for zero-shot "
            f"top-1, in the paired test over the same test images (exact McNemar for one run per side, a paired "
            f"bootstrap of per-image accuracy otherwise; from each run's predictions.npy); n/a where neither applies.{holm} "
            f"See docs/evaluation.md.")


def _cell(metric, mean, std, n) -> str:
    return f"{fmt_value(mean, metric, std if n and n > 1 else None)} (n={int(n)})"


def _diff(metric, diff) -> str:
    if diff is None or math.isnan(diff):
        return ""
    return f"{display_diff(metric, diff):+.2f}{' pp' if is_accuracy(metric) else ''}"


def _interval(r, prefix: str) -> str:
    test = getattr(r, f"{prefix}_test")
    if test is None or (isinstance(test, float) and math.isnan(test)):
        return ""
    low, high, p = (getattr(r, f"{prefix}_{k}") for k in ("ci_low", "ci_high", "p"))
    if math.isnan(p):
        return "no variance"
    name = "" if prefix == "seeds" else f" ({TEST_NAMES[test]})"
    return f"[{_diff(r.metric, low)}, {_diff(r.metric, high)}], p={_p(p)}{name}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _get(r, key: str):
    """A field of a comparison row, a Series or a namedtuple; None where it has none."""
    return r.get(key) if isinstance(r, pd.Series) else getattr(r, key, None)


def _verdict(r) -> str:
    significant, test, p, correction = (_get(r, k) for k in ("significant", "test", "p_adjusted", "correction"))
    if significant is None or (isinstance(significant, float) and math.isnan(significant)):
        if isinstance(test, str):
            return "n/a (no variance)"
        if _get(r, "metric") == PAIRED_METRIC:  # why the paired test over images did not stand in for the seeds
            why = _get(r, "unpaired")
            return f"n/a (one seed, {why if isinstance(why, str) and why else 'no predictions.npy'})"
        if min(_get(r, "a_n"), _get(r, "b_n")) == 0:
            return "n/a (not measured on one side)"
        return "n/a (one seed a side)" if max(_get(r, "a_n"), _get(r, "b_n")) < 2 else "n/a (one seed on a side)"
    label = "Holm p" if correction == "holm" else "p"
    return f"{'yes' if significant else 'no'} ({TEST_NAMES[test]}, {label}={_p(p)})"


def holm_across_all(result: Comparison) -> Comparison:
    """``result`` with Holm's adjustment over every test it holds at once (each candidate, configuration and
    metric), not within each comparison: the family of a report that compares many configurations with one
    baseline, where a "yes" anywhere in it is a claim."""
    rows = result.rows.copy()
    tested = int(rows["p_value"].notna().sum()) if len(rows) else 0
    if len(rows):
        rows["p_adjusted"], rows["correction"] = holm(rows["p_value"].to_numpy()), "holm"
        rows["significant"] = pd.Series([None if math.isnan(p) else bool(p < result.alpha) for p in rows["p_adjusted"]],
                                        index=rows.index, dtype=object)
    return dataclasses.replace(result, rows=rows, correct="holm",
                               correction_scope=f"all {tested} tests of every configuration and metric shown")
