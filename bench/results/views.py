"""Views of a results table: the tidy long table (one row per run x metric), seed aggregation, filtering,
sorting and formatting for display.

``runs.csv`` is wide (one row per run); ``runs_long.csv`` beside it holds its metrics and times to target as
``run_id, config_id, seed, <configuration>, [pretrained,] [target, stop_at_target,] metric, value``, which
pandas, R or a spreadsheet pivot without knowing the metric names."""
from __future__ import annotations

import operator

import numpy as np
import pandas as pd

from ..errors import BenchError
from .columns import (
    CONFIG_COLUMNS,
    HOLDOUT_METRICS,
    LOWER_IS_BETTER,
    OTHER_METRICS,
    SUMMARY_METRICS,
    TARGET_COLUMNS,
    TIME_TO_TARGET,
    group_columns,
    has_value,
    is_accuracy,
    is_transfer,
    is_true,
    metric_columns,
    repeated_seeds,
    repeated_seeds_note,
)

LONG_SUFFIX = "_long"  # runs.csv -> runs_long.csv


def long_table(wide: pd.DataFrame) -> pd.DataFrame:
    """One row per run x metric (NaN metrics left out): the metrics, then a ``--target`` run's time to it
    (``reached_target`` as 1 or 0, so ``value`` stays numeric; the times blank, so left out, where not reached).
    Beside the configuration columns each row keeps ``pretrained`` (a ``bench eval --open-clip`` row's weights)
    and ``target`` / ``stop_at_target`` where the table has them: they tell apart runs that the configuration
    columns do not, and a time to target means nothing without its target."""
    ids = [c for c in ["run_id", "config_id", "seed", *CONFIG_COLUMNS, "pretrained", *TARGET_COLUMNS]
           if c in wide.columns]
    if "reached_target" in wide.columns:  # true/false, or their text once a blank made the column objects
        wide = wide.assign(reached_target=[float(is_true(v)) if has_value(v) else np.nan
                                           for v in wide["reached_target"]])
    metrics = metric_columns(wide)
    metrics += [c for c in TIME_TO_TARGET if c in wide.columns and pd.api.types.is_numeric_dtype(wide[c])]
    if not metrics:
        return pd.DataFrame(columns=ids + ["metric", "value"])
    long = wide[ids + metrics].melt(id_vars=ids, value_vars=metrics, var_name="metric", value_name="value")
    long = long.dropna(subset=["value"])
    order = {m: i for i, m in enumerate(metrics)}
    long = long.assign(_m=long["metric"].map(order), _r=long.index % max(len(wide), 1))
    return long.sort_values(["_r", "_m"], kind="stable").drop(columns=["_m", "_r"]).reset_index(drop=True)


def wide_from_long(long: pd.DataFrame) -> pd.DataFrame:
    """Back to one row per run (the inverse of :func:`long_table` for its metrics), metrics in the long table's
    order, ``reached_target`` true or false again (blank where the run had no target), as runs.csv reads back."""
    ids = [c for c in long.columns if c not in ("metric", "value")]
    wide = long.pivot_table(index="run_id", columns="metric", values="value", aggfunc="first")
    wide = wide[[m for m in dict.fromkeys(long["metric"]) if m in wide.columns]]
    meta = long[ids].drop_duplicates("run_id").set_index("run_id")
    out = meta.join(wide).reset_index()
    if "reached_target" in out.columns:  # 1 or 0 in the long table; time_to_target reads it with is_true
        out["reached_target"] = pd.Series([bool(v) if has_value(v) else np.nan for v in out["reached_target"]],
                                          index=out.index, dtype=object)
    return out


def aggregate(df: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed) and the number of seeds of each metric per configuration.

    Columns: the configuration columns that exist, ``n``, then ``<metric>_mean`` and ``<metric>_std``. A seed
    that ran more than once counts once, by its latest run; ``attrs["repeated_seeds"]`` then says so (else None).
    """
    metrics = metric_columns(df) if metrics is None else metrics
    keys = group_columns(df)
    repeated = repeated_seeds(df, keys)
    note = repeated_seeds_note(df[repeated]) if repeated.any() else None
    df = df[~repeated]
    shown = [c for c in ["config_id", *CONFIG_COLUMNS] if c in df.columns]
    grouped = df.groupby(keys, sort=False, dropna=False)
    out = grouped[[c for c in shown if c not in keys]].first() if len(shown) > len(keys) else grouped.size().to_frame()[[]]
    out["n"] = grouped.size()
    if "seed" in df.columns:
        out["seeds"] = grouped["seed"].agg(lambda s: ",".join(str(int(v)) for v in sorted(s.dropna())))
    for m in metrics:
        out[f"{m}_mean"] = grouped[m].mean()
        out[f"{m}_std"] = grouped[m].std(ddof=1)
    out = out.reset_index()
    out = out[[c for c in shown if c in out.columns] + [c for c in out.columns if c not in shown]]
    out.attrs["repeated_seeds"] = note
    return out


# ------------------------------------------------------------------------------------------------------
# --where and --sort
# ------------------------------------------------------------------------------------------------------
_OPS = [("!=", operator.ne), (">=", operator.ge), ("<=", operator.le), ("=", operator.eq), (">", operator.gt),
        ("<", operator.lt)]


def parse_where(expr: str):
    """``encoder=modified_resnet``, ``seed!=0``, ``zeroshot_top1>0.3`` -> (column, op, value)."""
    for symbol, op in _OPS:
        if symbol in expr:
            column, value = expr.split(symbol, 1)
            if column.strip() and value.strip():
                return column.strip(), op, value.strip()
    raise BenchError(f"--where {expr!r} is not COLUMN=VALUE (or !=, >, <, >=, <=); write it like --where encoder=modified_resnet")


def _is_boolean(col: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(col):
        return True
    present = col.dropna()
    return col.dtype == object and len(present) > 0 and set(present.map(str)) <= {"True", "False"}


def _same_list(col: pd.Series, values: list) -> pd.Series:
    """Text cells that are themselves comma lists of ``values``, in any order: ``holdout_classes=cat,truck`` is
    the split a run keeps as ``cat,truck`` (``unseen_classes`` lists it in the dataset's order), which "any of
    cat, truck" alone could never select."""
    if len(values) < 2 or pd.api.types.is_numeric_dtype(col):
        return pd.Series(False, index=col.index)
    wanted = sorted(str(v).strip() for v in values)
    return col.map(lambda cell: isinstance(cell, str) and "," in cell
                   and sorted(p.strip() for p in cell.split(",")) == wanted).astype(bool)


def filter_rows(df: pd.DataFrame, wheres) -> pd.DataFrame:
    """Rows matching every condition; values compare as numbers in numeric columns, else as text.
    ``COLUMN=a,b`` matches any of the listed values, and a cell that lists the same values (in any order)."""
    for expr in wheres or ():
        column, op, value = parse_where(expr)
        if column not in df.columns:
            raise BenchError(f"--where: no column {column!r} in the table; columns are {', '.join(map(str, df.columns))}")
        values = value.split(",") if op in (operator.eq, operator.ne) else [value]
        col = df[column]
        if _is_boolean(col):  # reached_target, git_dirty, ...: True/False, or their text once a blank made it objects
            words = {"true": "true", "1": "true", "false": "false", "0": "false"}
            if op not in (operator.eq, operator.ne) or any(v.lower() not in words for v in values):
                raise BenchError(f"--where {expr!r}: column {column!r} is true or false; write {column}=true or "
                                 f"{column}=false (or !=)")
            values = [words[v.lower()] for v in values]
            col = col.map(lambda v: "" if not has_value(v) else "true" if is_true(v) else "false")
        elif pd.api.types.is_numeric_dtype(col):
            try:
                values = [float(v) for v in values]
            except ValueError:
                raise BenchError(f"--where {expr!r}: column {column!r} is numeric, {value!r} is not a number") from None
            percent = [v for v in values if abs(v) > 1] if is_accuracy(column) else []
            if percent:  # shown as percent, stored as fractions
                raise BenchError(f"--where {expr!r}: {column} is a fraction in runs.csv (the tables show percent); "
                                 f"write {percent[0] / 100:g} for {percent[0]:g}%")
        else:
            col = col.astype(str)
        if op is operator.eq:
            mask = col.isin(values) | _same_list(col, values)
        elif op is operator.ne:
            mask = ~(col.isin(values) | _same_list(col, values))
        else:
            mask = op(col, values[0])
        df = df[mask.fillna(False)]
    return df


def sort_rows(df: pd.DataFrame, column: str | None, descending: bool | None = None) -> pd.DataFrame:
    """Sort by ``column``: by default best first for metrics (highest, or lowest for losses and times),
    ascending for anything else; rows without a value go last."""
    if not column:
        return df
    if column not in df.columns:
        raise BenchError(f"--sort: no column {column!r} in the table; columns are {', '.join(map(str, df.columns))}")
    base = column[:-5] if column.endswith("_mean") else column
    if descending is None:
        descending = (is_accuracy(base) or base in OTHER_METRICS) and base not in LOWER_IS_BETTER
    return df.sort_values(column, ascending=not descending, na_position="last", kind="stable")


def fmt_value(value, metric: str | None = None, std=None) -> str:
    """Accuracies as percent with one decimal (``42.1 ± 0.8``); other numbers compactly."""
    if not has_value(value):  # NaN of any float type (a float32 column's is no Python float), None, pd.NA
        return ""
    if metric == "params":
        return f"{value:,.0f}"
    # every time (train_seconds, train_eval_seconds) and the throughput to a tenth, mean and std alike: one seconds
    # column at 3 decimals beside another at 1 read as if measured more finely
    tenths = metric is not None and (metric.endswith("_seconds") or metric == "train_images_per_s")
    scale, digits = (100, 1) if metric and is_accuracy(metric) else (1, 1 if tenths else 3)
    if isinstance(value, (int, np.integer)) and scale == 1:
        text = f"{int(value)}"
    else:
        text = f"{value * scale:.{digits}f}" if abs(value * scale) < 1e5 else f"{value * scale:.3g}"
    if has_value(std):
        text += f" ± {std * scale:.{digits}f}"
    return text


def display_table(table: pd.DataFrame, wheres=(), sort_by=None, descending=None, columns=(), aggregate_=False,
                  long_=False, limit=None, pretty=True) -> pd.DataFrame:
    """What ``bench results`` prints: filtered, then long or aggregated, sorted, cut to columns and rows.

    ``pretty`` formats accuracies as percent (``mean ± std`` when aggregated); otherwise numbers stay raw.
    """
    table = filter_rows(table, wheres)
    if long_:
        shown = long_table(table)
    elif aggregate_:
        shown = aggregate(table)
    else:
        shown = table
    if sort_by and aggregate_ and sort_by not in shown.columns and f"{sort_by}_mean" in shown.columns:
        sort_by = f"{sort_by}_mean"
    shown = sort_rows(shown, sort_by, descending)
    if columns:
        wanted = []
        for c in columns:
            found = [c] if c in shown.columns else [x for x in (f"{c}_mean", f"{c}_std") if x in shown.columns]
            if not found:
                raise BenchError(f"--columns: no column {c!r}; columns are {', '.join(map(str, shown.columns))}")
            wanted += found
        shown = shown[list(dict.fromkeys(wanted))]  # a column named twice is shown once
    elif not long_ and not aggregate_:
        evaluated = ["eval_templates"] if "eval_templates" in shown.columns and "templates" in shown.columns and \
            not shown["eval_templates"].astype(str).equals(shown["templates"].astype(str)) else []
        default = [c for c in ["run_id", "encoder", "templates", *evaluated, *transfer_columns(shown), "seed",
                               *SUMMARY_METRICS, *measured_columns(shown)] if c in shown.columns]
        shown = shown[default] if len(default) > 1 else shown
    if limit is not None:
        shown = shown.head(limit)
    return _pretty(shown) if pretty else shown.reset_index(drop=True)


def _pretty(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in df.columns:
        if c.endswith("_mean") and f"{c[:-5]}_std" in df.columns:
            m = c[:-5]
            out[c] = [fmt_value(a, m, s) for a, s in zip(df[c], df[f"{m}_std"])]
            out = out.drop(columns=[f"{m}_std"]).rename(columns={c: m})
        elif c == "value" and "metric" in df.columns:  # the long table: each value as its metric's column shows it
            out[c] = [_long_value(v, m) for v, m in zip(df[c], df["metric"])]
        elif c in metric_columns(df):
            out[c] = [fmt_value(v, c) for v in df[c]]
        elif c in out.columns:  # not a std already folded into its mean's cell
            out[c] = as_written(df[c])
    return out.reset_index(drop=True)


def _long_value(value, metric: str) -> str:
    """A long table's value as the wide view shows its metric: accuracies in percent, the other metrics compactly,
    a time to target (``reached_target`` 1 or 0, epochs, seconds) as written."""
    if is_accuracy(metric) or metric in OTHER_METRICS:
        return fmt_value(value, metric)
    return str(as_written(pd.Series([value], dtype=float)).iloc[0])


def as_written(col: pd.Series) -> pd.Series:
    """Any other column as read: a blank cell blank, not "nan"; whole numbers that a blank in their column made
    floats (``seed`` and ``epochs`` beside a pretrained model's row, ``epochs_to_target``) as the integers written."""
    whole = whole_floats(col)
    return pd.Series(["" if not has_value(v) else str(int(v)) if whole else v for v in col], index=col.index,
                     dtype=object)


def whole_floats(col: pd.Series) -> bool:
    """Whether ``col`` is floats only because a blank is among its whole numbers."""
    return pd.api.types.is_float_dtype(col) and bool((col.dropna() % 1 == 0).all())


def measured_columns(table: pd.DataFrame) -> list[str]:
    """What the default view adds where some run measured it: the held-out classes and their accuracies (a run of
    ``--holdout-classes``), the target and the time to it (a run of ``--target``), so a table of such runs shows
    what was asked of them without ``--columns``."""
    def some(column):
        return column in table.columns and table[column].map(has_value).any()

    held_out = ["unseen_classes", *HOLDOUT_METRICS] if some("harmonic_top1") else []
    return held_out + (["target", *TIME_TO_TARGET] if some("target") else [])


def transfer_columns(table: pd.DataFrame) -> list[str]:
    """``eval_dataset`` for the default view of a table holding transfer rows (another dataset evaluated), so each
    row says what it measured."""
    return ["eval_dataset"] if is_transfer(table).any() else []
