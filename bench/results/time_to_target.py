"""Time to target in result tables: per configuration and target, how many runs reached it, the median and the
olympic mean of ``time_to_target_seconds``, and the log-rank test of two configurations (:mod:`.survival`).

Runs that never reached their target are right-censored at their ``train_seconds`` (trained that long without
reaching it). Only runs that set the same target are pooled or compared; runs without a ``target`` are left out.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .columns import is_true
from .run_folder import recorded_eval_every
from .survival import OLYMPIC_MIN_RUNS, km_median, logrank, mlperf_valid, olympic_mean

TEST = "log-rank"


def _has_target(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def observations(rows: pd.DataFrame) -> dict[str, tuple[list[float], list[bool]]]:
    """Per target text: each run's time (to the target if it reached it, else its training time, censored) and
    whether it reached it. Rows without a target, or without the time they need, are left out."""
    out: dict[str, tuple[list[float], list[bool]]] = {}
    if "target" not in rows.columns:
        return out
    for _, r in rows.iterrows():
        if not _has_target(r["target"]):
            continue
        reached = is_true(r.get("reached_target"))
        time = r.get("time_to_target_seconds") if reached else r.get("train_seconds")
        if time is None or not math.isfinite(float(time)):
            continue
        times, hits = out.setdefault(r["target"], ([], []))
        times.append(float(time))
        hits.append(reached)
    return out


def summarize(times, reached) -> dict:
    """``runs``, ``reached``, ``median`` (Kaplan-Meier), ``olympic_mean`` with ``olympic_runs`` averaged, and
    ``mlperf_valid`` of one configuration's runs at one target."""
    olympic, used = olympic_mean(times, reached)
    return {"runs": len(times), "reached": int(np.sum(reached)), "median": km_median(times, reached),
            "olympic_mean": olympic, "olympic_runs": used, "mlperf_valid": mlperf_valid(reached)}


def summary_table(table: pd.DataFrame, label: str) -> pd.DataFrame:
    """One row per (``label`` value, target): :func:`summarize` of the runs there."""
    records = []
    if "target" not in table.columns:
        return pd.DataFrame(records)
    for name, part in table.groupby(label, sort=False):
        for target, (times, hits) in observations(part).items():
            records.append({label: name, "target": target, **summarize(times, hits)})
    return pd.DataFrame(records)


def compare_targets(rows_a: pd.DataFrame, rows_b: pd.DataFrame, alpha: float) -> list[dict]:
    """For each target both groups of runs set: their summaries (``a_*``, ``b_*``), the difference of medians
    (candidate − baseline, seconds) and the log-rank test (``p_value``; ``significant`` p < ``alpha``, None
    where the test is undefined)."""
    obs_a, obs_b = observations(rows_a), observations(rows_b)
    records = []
    for target in [t for t in obs_a if t in obs_b]:
        (times_a, hits_a), (times_b, hits_b) = obs_a[target], obs_b[target]
        a, b = summarize(times_a, hits_a), summarize(times_b, hits_b)
        chi2, p = logrank(times_a, hits_a, times_b, hits_b)
        records.append({"metric": "time_to_target_seconds", "target": target,
                        **{f"a_{k}": v for k, v in a.items()}, **{f"b_{k}": v for k, v in b.items()},
                        "diff": b["median"] - a["median"], "test": TEST, "chi2": chi2, "p_value": p,
                        "significant": None if math.isnan(p) else bool(p < alpha),
                        "undefined": _why_undefined(times_a, hits_a, times_b, hits_b) if math.isnan(p) else ""})
    return records


def _why_undefined(times_a, hits_a, times_b, hits_b) -> str:
    """Why the log-rank test has nothing to go on (its variance is 0): no run reached the target; or runs of both
    sides were still training when one reached it, and then every one of them reached it at that same time; or
    whenever a run reached it, the other side's runs had all stopped (censored) or reached it before."""
    reached = [t for t, hit in zip([*times_a, *times_b], [*hits_a, *hits_b]) if hit]
    if not reached:
        return "no run reached it"
    if any(max(times_a) >= t and max(times_b) >= t for t in reached):
        return "every run still training reached it at the same time"
    return "no run reached it while the other side's were still training"


def unmatched_targets(rows_a: pd.DataFrame, rows_b: pd.DataFrame) -> list[str]:
    """Targets only one of the two groups set (their times cannot be compared)."""
    a, b = set(observations(rows_a)), set(observations(rows_b))
    return sorted(a ^ b)


def eval_cadences(rows: pd.DataFrame, run_dirs: dict) -> dict[str, int]:
    """Run id -> ``--eval-every`` of the runs in ``rows`` that set a target, where their folder (``run_dirs``) keeps
    it in ``config.json``; runs whose cadence is not known are left out."""
    if "target" not in rows.columns:
        return {}
    found = {}
    for run_id in rows.loc[rows["target"].map(_has_target), "run_id"].astype(str):
        every = recorded_eval_every(run_dirs.get(run_id))
        if every is not None:
            found[run_id] = every
    return found


def cadence_note(whose: str, cadences, pooled: str = "") -> str:
    """The warning that the times to target ``whose`` come from runs evaluated at several ``cadences`` (epochs),
    ``pooled`` saying more in the parenthesis (which configurations mix them)."""
    every = sorted(set(cadences))
    return (f"the times to target {whose} come from runs evaluated every {', '.join(map(str, every[:-1]))} and "
            f"{every[-1]} epochs (--eval-every{'; ' + pooled if pooled else ''}): a run sees its target only at an "
            f"evaluated epoch, so these times are measured at different resolutions")


METHOD_NOTE = ("Time to target: training seconds up to the end of the first evaluated epoch that reached the target. "
               "Runs that never reached it are censored at their training time, not dropped: medians are Kaplan-Meier "
               f"medians (not reached: half or more of the runs may never reach it); the olympic mean drops the fastest and the slowest "
               f"of >= {OLYMPIC_MIN_RUNS} runs, a run that did not reach counting as the slowest, and is a plain mean "
               f"of fewer runs (MLPerf: invalid when more than one run did not reach). See docs/evaluation.md.")


def cell(summary: dict) -> str:
    """One configuration's time to target in a table cell: reached k/n; median; olympic mean; MLPerf validity."""
    parts = [f"{summary['reached']}/{summary['runs']} reached", f"median {_seconds(summary['median'])}"]
    kind = "olympic" if summary["runs"] >= OLYMPIC_MIN_RUNS else "mean"  # fewer runs: none dropped
    parts.append(f"{kind} {_seconds(summary['olympic_mean'])}")
    if not summary["mlperf_valid"]:
        parts.append("invalid (MLPerf: > 1 run did not reach)")
    return "; ".join(parts)


def _seconds(value) -> str:
    return "not reached" if value is None or math.isnan(value) else f"{value:.2f} s"


def _summary_of(r, prefix: str) -> dict:
    keys = ("runs", "reached", "median", "olympic_mean", "olympic_runs", "mlperf_valid")
    return {k: r[f"{prefix}_{k}"] for k in keys}


def _verdict(r) -> str:
    """yes or no; where the log-rank test is undefined, why (:func:`_why_undefined`)."""
    if r["significant"] is not None:
        return "yes" if r["significant"] else "no"
    return f"n/a ({r['undefined']})"


def render_comparison(rows: pd.DataFrame, alpha: float, name_pairs: bool = False) -> str:
    """The markdown section of ``bench compare`` for :func:`compare_targets` rows (empty when there are none);
    ``name_pairs``: a column names each row's pair of configurations (a side holds several)."""
    if rows is None or not len(rows):
        return ""
    group_cols = [c for c in rows.columns if c.startswith("on_") and rows[c].nunique() > 1]
    table = pd.DataFrame({
        "candidate": rows["side"], "baseline": rows["baseline"],
        **({"configurations": rows["configurations"]} if name_pairs else {}),
        **{c[3:]: rows[c] for c in group_cols},
        "target": rows["target"],
        "baseline time to target": [cell(_summary_of(r, "a")) for _, r in rows.iterrows()],
        "candidate time to target": [cell(_summary_of(r, "b")) for _, r in rows.iterrows()],
        "diff (median)": ["" if math.isnan(d) else f"{d:+.2f} s" for d in rows["diff"]],
        f"p ({TEST})": ["" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}") for p in rows["p_value"]],
        "significant": [_verdict(r) for _, r in rows.iterrows()],
    })
    return "\n".join([
        "### time to target\n",
        table.to_markdown(index=False, disable_numparse=True), "",
        METHOD_NOTE + f" The test is the log-rank test (significant: p < {alpha:g}; not Holm-adjusted with the "
        f"metrics).",
    ])
