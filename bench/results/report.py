"""``bench report``: a markdown report with figures for a set of runs, written into one folder.

Figures (drawn by ``bench.results.figures`` from what this module reads and tabulates): training curves overlaid,
confusion-matrix heat maps, per-class accuracy bars, accuracy against training time and against parameters,
robustness per corruption, time to accuracy, and each candidate's accuracy differences to the baseline with their
95% confidence intervals as error bars. Runs are grouped by configuration
(seeds pooled, mean ± std); a configuration is named by the configuration columns that vary between the
runs shown (e.g. the encoder). Figures that need run folders (curves, confusions, per-class) are left out,
with a note, when only a results file is given.
"""
from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

import pandas as pd

from ..atomic_files import atomic_write_text, make_folder
from ..errors import BenchError
from ..evaluation.target import TARGET_METRICS, parse_target
from .columns import (
    CONFIG_COLUMNS,
    HOLDOUT_METRICS,
    LABEL,
    SUMMARY_METRICS,
    group_columns,
    is_accuracy,
    is_transfer,
    is_true,
    metric_columns,
    repeated_seeds,
    repeated_seeds_note,
)
from .compare import canonical_value, compare, display_diff, holm_across_all, render_markdown, split_sides
from .figures import (
    config_colors,
    plot_accuracy_against_time,
    plot_confusions,
    plot_differences,
    plot_overlaid_curves,
    plot_per_class,
    plot_robustness,
    plot_scatter,
)
from .lookup import Source, combine
from .run_folder import write_csv
from .time_to_target import METHOD_NOTE, cadence_note, cell, eval_cadences, summary_table
from .views import aggregate, as_written, fmt_value

BLANK = "-"  # a configuration column a row lacks (a pretrained model's epochs), in its configuration's name


def _text(value) -> str | None:
    """A configuration cell as its name shows it (2 for the 2.0 that a blank elsewhere in its column makes), or
    None where it is blank: pandas keeps a blank missing through ``astype(str)``, which ``str.join`` refuses."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else canonical_value(value)


def label_configs(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``configuration``: the values of the configuration columns that vary between runs (or the config id)."""
    return table.assign(**{LABEL: configuration_names(table)})


def configuration_names(table: pd.DataFrame, leave_out=()) -> pd.Series:
    """Each row's configuration, named by the configuration columns (less ``leave_out``) that vary between rows;
    the encoder (else the group columns) when none varies. Runs stopped at their target and runs whose config ids
    differ in an option runs.csv has no column for are told apart too."""
    keys = [c for c in group_columns(table) if c not in leave_out]
    # a blank held-out set or weights name is a value too ("none"): runs that held classes out and runs that did
    # not are two configurations (elsewhere a blank is a column the row's kind lacks, a pretrained model's epochs,
    # which does not make the column vary, and which its name shows as "-")
    text = {c: table[c].map(canonical_value) if c in ("holdout_classes", "pretrained") else table[c].map(_text)
            for c in [*CONFIG_COLUMNS, "pretrained"] if c in table.columns and c not in leave_out}
    varying = [c for c, values in text.items() if values.nunique() > 1]
    if varying:
        names = pd.DataFrame({c: text[c].fillna(BLANK) for c in varying}).agg(" / ".join, axis=1)
    elif "encoder" in table.columns:
        names = table["encoder"].map(_text).fillna(BLANK)
    else:
        names = table[keys].apply(lambda column: column.map(_text)).fillna(BLANK).agg(" / ".join, axis=1)
    if "stop_at_target" in table.columns:  # --stop-at-target makes another configuration (a run cut at its target)
        stops = table["stop_at_target"].map(is_true)
        if stops.nunique() > 1:
            names = names + stops.map({True: " / stopped at target", False: " / all epochs"})
    if "config_id" in table.columns:  # configurations that differ in options runs.csv has no column for (a speed
        # switch such as --no-compact-embedding): their config ids tell them apart
        ids = table["config_id"].map(_text).fillna(BLANK)
        clash = ids.groupby(names).transform("nunique") > 1
        names = names.where(~clash, names + " [" + ids + "]")
    return names


# the columns the report reads from each of a run's files
_NEEDS = {"history.csv": ("epoch", "step", "train_loss", "zeroshot_top1"), "train_log.csv": ("step", "train_loss"),
          "confusion.csv": ("true",), "per_class.csv": ("class", "accuracy")}


class RunFolders(dict):
    """``run_id -> folder`` that keeps each file :func:`_read` parsed, for one report: its figures, sections and
    notes read the same files (``history.csv`` three times), which over thousands of runs was most of its reading.
    The tables handed out are shared, so their readers never change them in place."""

    def __init__(self, folders: dict):
        super().__init__(folders)
        self.tables: dict = {}


def _read(run_dirs: dict, run_id: str, name: str) -> pd.DataFrame | None:
    """A run's file as a table, or None where it is missing; a damaged one (not CSV, cut short, or without the
    columns the report reads) is said on stderr and left out like a missing one, not a traceback that loses the report.
    ``run_dirs`` a :class:`RunFolders`: each file is read once."""
    cache = getattr(run_dirs, "tables", None)
    if cache is None:
        return _read_file(run_dirs, run_id, name)
    key = (str(run_id), name)
    if key not in cache:
        cache[key] = _read_file(run_dirs, run_id, name)
    return cache[key]


def _read_file(run_dirs: dict, run_id: str, name: str) -> pd.DataFrame | None:
    folder = run_dirs.get(str(run_id))
    path = folder / name if folder else None
    if path is None or not path.is_file():
        return None
    try:
        data = path.read_bytes()
        table = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        why = type(exc).__name__
    else:
        missing = [c for c in _NEEDS.get(name, ()) if c not in table.columns]
        if _cut_short(data):
            why = "cut short: its last row ends part way"
        elif not missing:
            return table
        else:
            why = f"no column {missing[0]!r}"
    stat = path.stat()
    if (path, stat.st_mtime_ns, stat.st_size) not in _WARNED:  # once, though several figures read the file
        _WARNED.add((path, stat.st_mtime_ns, stat.st_size))
        print(f"bench: warning: {path} is damaged ({why}); the report leaves it out", file=sys.stderr)
    return None


_WARNED: set = set()


def _cut_short(data: bytes) -> bool:
    """Whether a CSV file ends inside a row: no line break after its last line, which has fewer fields than the
    header. bench writes these files whole, each row ending in a line break; a copy cut short (a full disk, a
    transfer stopped part way) ends mid-row, which pandas would read as a row of blanks, so a curve would end early
    or a run's line vanish without a word."""
    if data.endswith(b"\n"):
        return False
    lines = data.decode("utf-8", errors="replace").splitlines()
    if len(lines) < 2:
        return False  # a header alone: an empty table, left out as such
    return len(next(csv.reader([lines[-1]]), [])) < len(next(csv.reader([lines[0]]), []))


# ------------------------------------------------------------------------------------------------------
# What the figures draw, read from the run folders (the drawing is bench.results.figures')
# ------------------------------------------------------------------------------------------------------
def _curve_runs(table, run_dirs) -> list:
    """The runs with a readable, non-empty ``history.csv``: (configuration, that history, ``train_log.csv`` or None
    where it is missing or empty), for :func:`~bench.results.figures.plot_overlaid_curves`."""
    runs = []
    for _, r in table.iterrows():
        history = _read(run_dirs, r["run_id"], "history.csv")
        if history is not None and len(history):
            steps = _read(run_dirs, r["run_id"], "train_log.csv")
            runs.append((r[LABEL], history, steps if steps is not None and len(steps) else None))
    return runs


def mean_confusions(table, run_dirs) -> dict:
    """Per configuration: the confusion matrix summed over its runs, with class names."""
    out = {}
    for label, part in table.groupby(LABEL, sort=False):
        mats = [_read(run_dirs, rid, "confusion.csv") for rid in part["run_id"]]
        mats = [m.set_index("true") for m in mats if m is not None]
        mats = [m for m in mats if m.shape == mats[0].shape]  # a foreign file's other classes cannot be summed in
        if mats:
            out[label] = sum(m.to_numpy() for m in mats), list(mats[0].index)
    return out


def per_class_table(table, run_dirs) -> pd.DataFrame | None:
    """class x configuration: mean and std over seeds of per-class zero-shot accuracy."""
    frames = []
    for _, r in table.iterrows():
        pc = _read(run_dirs, r["run_id"], "per_class.csv")
        if pc is not None:
            frames.append(pc.assign(**{LABEL: r[LABEL], "run_id": r["run_id"]}))
    if not frames:
        return None
    # configurations in the table's order, the baseline first, though its first run may lack the file
    order = {label: i for i, label in enumerate(dict.fromkeys(table[LABEL]))}
    data = pd.concat(frames).sort_values(LABEL, key=lambda labels: labels.map(order), kind="stable")
    return data.groupby([LABEL, "class"], sort=False)["accuracy"].agg(["mean", "std", "count"]).reset_index()


def plot_time_to_accuracy(table, run_dirs, colors, path) -> tuple[bool, list[str]]:
    """Time to accuracy for the runs that set a ``--target``: the target's metric (zero-shot top-1 unless every
    target names another) at each evaluated epoch against the training seconds up to that epoch's end (the clock
    of ``time_to_target_seconds``), read from each run's ``history.csv`` and drawn by
    :func:`~bench.results.figures.plot_accuracy_against_time`. Returns whether it was drawn and the runs left out
    for want of an evaluated epoch in a readable ``history.csv``."""
    if "target" not in table.columns:
        return False, []
    targeted = table[[isinstance(t, str) and t.strip() != "" for t in table["target"]]]
    if not len(targeted):
        return False, []
    targets = {parse_target(t) for t in targeted["target"]}
    metrics = {t.metric for t in targets}
    metric = metrics.pop() if len(metrics) == 1 else "zeroshot_top1"
    runs, missing = [], []
    for _, r in targeted.iterrows():
        history = _read(run_dirs, r["run_id"], "history.csv")
        if history is None or not len(history) or not {metric, "epoch_seconds"} <= set(history.columns):
            missing.append(str(r["run_id"]))
            continue
        seconds = history["epoch_seconds"].cumsum()  # in epoch order from 0, as the run adds train_seconds
        evaluated = history[metric].notna() & seconds.notna()
        if not evaluated.any():  # nothing to draw: named with the runs left out, not a legend entry without a line
            missing.append(str(r["run_id"]))
            continue
        runs.append((r[LABEL], seconds[evaluated], 100 * history.loc[evaluated, metric]))
    return plot_accuracy_against_time(runs, targets, metric, colors, path), missing


def _time_to_target_section(table, run_dirs: dict) -> list[str]:
    """``## Time to target``: per configuration and target, runs that reached it, median and olympic mean; a
    warning where the runs were evaluated at different ``--eval-every`` (read from ``run_dirs``' config.json)."""
    summary = summary_table(table, LABEL)
    if not len(summary):
        return []
    cells = summary.assign(**{"time to target": [cell(r) for r in summary.to_dict("records")]})
    warning = _cadence_warning(table, run_dirs)
    return ["## Time to target", "", METHOD_NOTE, "",
            cells[[LABEL, "target", "runs", "reached", "time to target"]].astype(str).pipe(_md), "",
            *([f"> warning: {warning}", ""] if warning else [])]


def _cadence_warning(table, run_dirs: dict) -> str | None:
    """That the times to target come from runs evaluated at different ``--eval-every``, naming the configurations
    that pool such runs into one median (runs.csv has no column for it, so runs that differ only in it are one
    configuration; it is in the config id only with ``--stop-at-target``); None at one cadence or none known."""
    cadences = eval_cadences(table, run_dirs)
    if len(set(cadences.values())) < 2:
        return None
    every = table["run_id"].astype(str).map(cadences)
    mixed = [label for label, values in every.groupby(table[LABEL], sort=False) if values.nunique() > 1]
    pooled = f"{', '.join(mixed)} pool{'s' if len(mixed) == 1 else ''} runs of different cadences" if mixed else ""
    return cadence_note("in this section", cadences.values(), pooled)


# ------------------------------------------------------------------------------------------------------
# The markdown
# ------------------------------------------------------------------------------------------------------
def baseline_section(result, metrics: list[str]) -> list[str]:
    """Every configuration against the baseline in one table (headline metrics: the difference and its p-value,
    in bold where significant), and the correction for multiple comparisons in force."""
    rows = result.rows
    tested = int(rows["p_value"].notna().sum())
    if result.correct == "holm":
        correction = (f"Multiple comparisons: p-values are Holm-adjusted across all {tested} tests of this report "
                      f"(every configuration against the baseline, every metric; `--correct holm`), so the chance of "
                      f"any false \"significant\" among them is at most {result.alpha:g}.")
    else:
        correction = (f"Multiple comparisons: no correction (`--correct none`). This report holds {tested} tests at "
                      f"alpha {result.alpha:g}, so about {tested * result.alpha:.1f} \"significant\" differences are "
                      f"expected by chance alone even where nothing differs; `bench report --correct holm` adjusts "
                      f"across all of them.")
    shown = [m for m in metrics if m in set(rows["metric"])]
    if not shown:
        return [correction, ""]
    baseline = rows["baseline"].iloc[0]
    table = {LABEL: list(dict.fromkeys(rows["side"]))}
    label = "Holm p" if result.correct == "holm" else "p"
    for metric in shown:
        part = rows[rows["metric"] == metric].drop_duplicates("side").set_index("side")
        table[metric] = [_difference_cell(part.loc[side], metric, label) if side in part.index else ""
                         for side in table[LABEL]]
    return [f"Each configuration against the baseline, {baseline} (difference, {label}-value; bold: significant "
            f"at {result.alpha:g}):", "", _md(pd.DataFrame(table)), "", correction, ""]


def _difference_cell(r, metric: str, label: str) -> str:
    if r["diff"] != r["diff"]:  # NaN: a side without the metric
        return ""
    diff = display_diff(metric, r["diff"])
    text = f"{diff:+.2f}{' pp' if is_accuracy(metric) else ''}"
    p = r["p_adjusted"]
    if p == p:  # not NaN
        text += f" ({label}={'<0.001' if p < 0.001 else f'{p:.3f}'})"
    return f"**{text}**" if r["significant"] is True else text


def _md(df: pd.DataFrame) -> str:
    """Markdown of already formatted cells (tabulate would turn "24.0" back into 24)."""
    return df.to_markdown(index=False, disable_numparse=True)


def _summary(agg: pd.DataFrame, metrics) -> pd.DataFrame:
    out = pd.DataFrame({LABEL: agg[LABEL], "runs": agg["n"].astype(int)})
    if "seeds" in agg.columns:
        out["seeds"] = agg["seeds"]
    for m in metrics:
        if f"{m}_mean" in agg.columns:
            counts = agg[f"{m}_count"] if f"{m}_count" in agg.columns else agg["n"]
            out[m] = [fmt_value(a, m, s) + (f" (n={c})" if 0 < c < n else "")
                      for a, s, c, n in zip(agg[f"{m}_mean"], agg[f"{m}_std"], counts, agg["n"])]
    return out


def _values(table: pd.DataFrame, column: str) -> str:
    if column not in table.columns:
        return "unknown"
    return ", ".join(sorted({str(v) for v in table[column].dropna()})) or "unknown"


def build_report(sources: list[Source], out, title: str | None = None, correct: str = "none") -> list[Path]:
    """Write ``report.md`` and its PNG figures into ``out``; returns the paths written. ``correct="holm"``:
    the p-values of the comparisons with the baseline Holm-adjusted across every configuration and metric."""
    src = combine(sources)
    if not len(src.table):
        raise BenchError("no runs to report on; pass results folders, results files, run folders or run ids")
    repeated = repeated_seeds(src.table, group_columns(src.table))
    notes = src.notes + ([repeated_seeds_note(src.table[repeated])] if repeated.any() else [])
    src = Source(src.label, src.table[~repeated], RunFolders(src.run_dirs))
    out = make_folder(out, what="report folder")
    import matplotlib

    matplotlib.use("Agg")
    transfers = transfer_table(src.table)
    # the report's body reads each run on its own dataset; transfer rows have the section of their own below
    home = ~is_transfer(src.table)
    table = label_configs(src.table[home] if home.any() else src.table)
    labels = list(dict.fromkeys(table[LABEL]))
    colors = config_colors(labels)
    metrics = metric_columns(table)
    agg = aggregate(table.drop(columns=[LABEL]), metrics)
    grouped = table.groupby(group_columns(table), sort=False, dropna=False)
    agg[LABEL] = grouped[LABEL].first().to_numpy()
    # the runs of each configuration that measured each metric: where a blank leaves fewer than its runs, the mean
    # and std are of those, and the cell says how many
    counts = grouped[metrics].count()
    for m in metrics:
        agg[f"{m}_count"] = counts[m].to_numpy()
    written, figures = [], {}

    def figure(name, ok):
        if ok:
            figures[name] = out / f"{name}.png"
            written.append(figures[name])

    figure("curves", plot_overlaid_curves(_curve_runs(table, src.run_dirs), colors, out / "curves.png"))
    figure("confusion", plot_confusions(mean_confusions(table, src.run_dirs), out / "confusion.png"))
    pc = per_class_table(table, src.run_dirs)
    figure("per_class", plot_per_class(pc, colors, out / "per_class.png"))
    figure("accuracy_vs_time", plot_scatter(table, "train_seconds", "training time (s)", colors,
                                            out / "accuracy_vs_time.png"))
    figure("accuracy_vs_params", plot_scatter(table, "params", "parameters (millions)", colors,
                                              out / "accuracy_vs_params.png", scale=1e6))
    figure("robustness", plot_robustness(agg, colors, out / "robustness.png"))
    drawn, untimed = plot_time_to_accuracy(table, src.run_dirs, colors, out / "time_to_accuracy.png")
    figure("time_to_accuracy", drawn)

    md = _header(table, labels, title) + [f"> note: {n}" for n in notes] + ([""] if notes else [])
    md += ["## Summary", "", _summary(agg, [m for m in SUMMARY_METRICS if m in metrics]).pipe(_md), ""]
    md += _time_to_target_section(table, src.run_dirs)
    if len(labels) > 1:
        result = _compare_configurations(table, metrics, correct, src.run_dirs)
        md += _comparison_section(result, metrics)
        figure("differences", plot_differences(result.rows, out / "differences.png"))
    md += _metric_sections(agg, metrics)
    md += holdout_section(table, agg)
    if transfers is not None:
        write_csv(transfers, out / "transfer.csv")
        md += transfer_section(transfers)
    if pc is not None:
        wide = pc.assign(value=[fmt_value(m, "zeroshot_top1", s) for m, s in zip(pc["mean"], pc["std"])])
        # classes in the runs' label order and configurations baseline first, as everywhere in the report (a
        # pivot sorts both by name)
        md += ["## Per-class zero-shot accuracy", "",
               wide.pivot(index="class", columns=LABEL, values="value")
               .reindex(index=pc["class"].unique(), columns=pc[LABEL].unique()).reset_index().pipe(_md), ""]
    if "probe_weight_decay" in table.columns:
        md += [f"Probe weight decay chosen per run: {', '.join(f'{v:g}' for v in table['probe_weight_decay'].dropna())}.",
               ""]
    md += _figures_section(figures, untimed, table, src.run_dirs)
    md += _runs_section(table)
    report = out / "report.md"
    atomic_write_text(report, "\n".join(md))
    return [report] + written


def _header(table: pd.DataFrame, labels: list, title: str | None) -> list[str]:
    """The title, the configurations, and where the numbers come from: machine, code and protocol."""
    dirty = "git_dirty" in table and table["git_dirty"].map(is_true).any()
    transfer = is_transfer(table)
    evaluated = f" (evaluated on {_values(table[transfer], 'eval_dataset')})" if transfer.any() else ""
    return [f"# {title or 'bench report'}", "",
            f"{len(table)} runs in {len(labels)} configuration(s): {', '.join(labels)}. Accuracies are percent, "
            f"mean ± sample std over seeds.", "",
            f"- machine: {_values(table, 'device_name')} on host {_values(table, 'hostname')}; "
            f"torch {_values(table, 'torch_version')}",
            f"- code: bench {_values(table, 'bench_version')}, git commit {_values(table, 'git_commit')}"
            + (" (tree dirty)" if dirty else ""),
            f"- protocol: dataset {_values(table, 'dataset')}{evaluated}, {_values(table, 'test_images')} test images, "
            f"templates {_values(table, 'eval_templates')}, image size {_values(table, 'image_size')}, normalisation "
            f"{_values(table, 'normalization')}, weights: {_values(table, 'eval_checkpoint')}", ""]


def _compare_configurations(table: pd.DataFrame, metrics: list[str], correct: str, run_dirs: dict):
    """Every configuration against the first (the baseline), Holm-adjusted across all of them with ``holm``;
    ``run_dirs`` hold the runs' predictions.npy for the paired test over test images."""
    sides = split_sides([Source("all", table, run_dirs)], LABEL)
    for side in sides:
        side.label = side.label.split("=", 1)[1]  # "configuration=a" -> "a"
    # a metric no run measured (training times of transfer rows) has nothing to compare
    result = compare(sides, metrics=[m for m in metrics if m != "params" and table[m].notna().any()])
    return holm_across_all(result) if correct == "holm" else result


def _comparison_section(result, metrics: list[str]) -> list[str]:
    return ["## Comparison", "",
            "Differences are candidate − baseline, with the 95% confidence interval and p-value of Welch's t-test "
            "over seeds and, for zero-shot top-1, of the paired test over the test images (the figure "
            "`differences.png` draws the intervals; green: significant).", "",
            *baseline_section(result, [m for m in SUMMARY_METRICS if m in metrics]),
            render_markdown(result), "",
            *[f"> warning: {w}" for w in result.warnings], *([""] if result.warnings else [])]


def _metric_sections(agg: pd.DataFrame, metrics: list[str]) -> list[str]:
    """A table per family of metrics the runs have beyond zero-shot top-1."""
    sections = [
        ("Zero-shot classification", ["zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "best_zeroshot_top1"],
         "Template-ensembled classifier (each class: mean of its normalised template embeddings, renormalised)."),
        ("Retrieval", [m for m in metrics if m.startswith("retrieval_")],
         "Class-level recall@k on the test split: a hit is any caption of the right class among the k nearest "
         "(see docs/evaluation.md)."),
        ("Linear probe beside zero-shot", ["zeroshot_top1", "probe_top1", "probe_top5", "probe_mean_per_class_recall"],
         "Logistic regression on frozen, cached image features; weight decay chosen on a validation split carved "
         "from train."),
        ("Robustness", [m for m in metrics if m.startswith("robust_")],
         "Zero-shot top-1 on corrupted test images (mean over the severities run), generated by bench.data.corruptions."),
    ]
    md = []
    for heading, cols, note in sections:
        cols = [c for c in cols if c in metrics]
        if cols and any(c not in ("zeroshot_top1",) for c in cols):
            md += [f"## {heading}", "", note, "", _summary(agg, cols).pipe(_md), ""]
    return md


# the figures drawn from files in the run folders, and the file each reads
FOLDER_FIGURES = {"curves": "history.csv", "confusion": "confusion.csv", "per_class": "per_class.csv"}


def _figures_section(figures: dict, untimed: list, table: pd.DataFrame, run_dirs: dict) -> list[str]:
    md = ["## Figures", ""]
    for name, path in figures.items():
        md += [f"![{name.replace('_', ' ')}]({path.name})", ""]
    missing = [n for n in FOLDER_FIGURES if n not in figures]
    if missing:
        md += [f"Not drawn ({', '.join(missing)}): no run's folder (runs/<run_id>/) beside the table holds "
               f"{' / '.join(FOLDER_FIGURES[n] for n in missing)}.", ""]
    for name, file in FOLDER_FIGURES.items():  # drawn from some runs only: say which are not in it
        lacking = [str(r) for r in table["run_id"] if _read(run_dirs, r, file) is None]
        if name in figures and lacking:
            md += [f"Left out of {name.replace('_', '-')} ({len(lacking)} run(s) without a readable "
                   f"runs/<run_id>/{file}): {', '.join(lacking)}.", ""]
    if untimed:
        md += [f"Left out of time to accuracy ({len(untimed)} run(s) without an evaluated epoch in a readable "
               f"runs/<run_id>/history.csv): {', '.join(untimed)}.", ""]
    return md


def _runs_section(table: pd.DataFrame) -> list[str]:
    """One line per run, and the commands that made them."""
    cols = [c for c in ["run_id", LABEL, "seed", "zeroshot_top1", "probe_top1", "robust_mean", "train_seconds",
                        "train_images_per_s"] if c in table.columns]
    runs = table[cols].copy()
    for c in cols:
        if c not in ("run_id", LABEL, "seed"):
            runs[c] = [fmt_value(v, c) for v in runs[c]]
    if "seed" in cols:  # a pretrained model's blank seed makes the column floats: 0 and blank, not 0.0 and nan
        runs["seed"] = as_written(runs["seed"])
    md = ["## Runs", "", runs.pipe(_md), ""]
    if "command" in table.columns:
        md += ["Commands recorded with the runs:", ""] + [f"    {c}" for c in sorted(set(table["command"].dropna()))] + [""]
    return md



# ------------------------------------------------------------------------------------------------------
# Zero-shot transfer and held-out classes
# ------------------------------------------------------------------------------------------------------
TRANSFER_METRICS = TARGET_METRICS  # what every evaluation of a dataset records


def transfer_labels(table: pd.DataFrame) -> pd.Series:
    """Each row's model: a trained model named by the configuration columns that vary between trained models,
    leaving out what varies with the evaluation (the evaluated dataset and template set); a pretrained model
    (preset ``pretrained``, which has no training dataset in bench) by its encoder and weights, so its rows on
    every dataset are one model."""
    pretrained = table["preset"].astype(str).eq("pretrained") if "preset" in table.columns else \
        pd.Series(False, index=table.index)
    trained = table[~pretrained]
    labels = configuration_names(trained, leave_out=("eval_dataset", "eval_templates")) if len(trained) else \
        pd.Series(dtype=str)
    names = table["encoder"].astype(str) if "encoder" in table.columns else table["run_id"].astype(str)
    if "pretrained" in table.columns:
        names = names + table["pretrained"].map(lambda p: f" ({p})" if isinstance(p, str) and p else "")
    return pd.concat([labels, names[pretrained]]).reindex(table.index)


def transfer_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """Models x evaluated datasets, long: per model, ``eval_dataset`` and ``eval_templates`` the number of runs,
    their test images, and mean and sample std over seeds of each zero-shot metric (one row per model and dataset,
    the shape of CLIP_benchmark's ``benchmark.csv``). None when every row evaluates one dataset."""
    if "eval_dataset" not in table.columns or table["eval_dataset"].astype(str).nunique() < 2:
        return None
    if "eval_templates" not in table.columns:
        table = table.assign(eval_templates="")
    # each model's own datasets first, then the ones it transfers to, in the order they come
    data = table.assign(**{LABEL: transfer_labels(table), "_transfer": is_transfer(table)})
    grouped = data.sort_values("_transfer", kind="stable").groupby([LABEL, "eval_dataset", "eval_templates"],
                                                                   sort=False, dropna=False)
    out = grouped.size().rename("n").to_frame()
    if "test_images" in data.columns:
        out["test_images"] = grouped["test_images"].agg(lambda v: ",".join(sorted({f"{x:g}" for x in v.dropna()})))
    for m in TRANSFER_METRICS:
        if m in data.columns:
            out[f"{m}_mean"], out[f"{m}_std"] = grouped[m].mean(), grouped[m].std(ddof=1)
    return out.reset_index()


def transfer_section(transfers: pd.DataFrame) -> list[str]:
    """The markdown of :func:`transfer_table`: models x datasets of zero-shot top-1 (open_clip's results table). A
    dataset one model was evaluated on with several template sets gets a column per set."""
    sets = transfers.groupby("eval_dataset", sort=False)["eval_templates"].agg(lambda v: list(dict.fromkeys(v)))
    several = transfers.groupby([LABEL, "eval_dataset"], sort=False)["eval_templates"].nunique()
    split = set(several[several > 1].index.get_level_values("eval_dataset"))
    column = [f"{d} ({t})" if d in split else d for d, t in zip(transfers["eval_dataset"], transfers["eval_templates"])]
    cells = transfers.assign(column=column, value=[f"{fmt_value(m, 'zeroshot_top1', s)} (n={n})" for m, s, n in
                                                   zip(transfers["zeroshot_top1_mean"], transfers["zeroshot_top1_std"],
                                                       transfers["n"])])
    wide = cells.pivot(index=LABEL, columns="column", values="value")
    wide = wide.reindex(index=list(dict.fromkeys(cells[LABEL])),
                        columns=list(dict.fromkeys(cells["column"]))).fillna("").reset_index()
    listed = "; ".join(f"{d}: {', '.join(map(str, t))}" for d, t in sets.items())
    return ["## Zero-shot transfer", "",
            "Zero-shot top-1 (mean ± std over seeds, n runs) of each model on each evaluated dataset, with that "
            "dataset's own class names and template set, its images resized to the model's input "
            "(docs/evaluation.md). A model's training dataset is its runs' own evaluation; the others are datasets "
            "it never trained on. Every metric per model, dataset and template set is in `transfer.csv`.", "",
            wide.pipe(_md), "", f"Template sets: {listed}.", ""]


def holdout_section(table: pd.DataFrame, agg: pd.DataFrame) -> list[str]:
    """Seen, unseen and harmonic top-1 of the configurations that held classes out of training."""
    shown = [m for m in ("harmonic_top1", "seen_top1", "unseen_top1", "zeroshot_top1") if f"{m}_mean" in agg.columns]
    if not any(m in HOLDOUT_METRICS for m in shown):
        return []
    rows = agg[agg["harmonic_top1_mean"].notna()] if "harmonic_top1_mean" in agg.columns else agg
    summary = _summary(rows, shown)
    if "unseen_classes" in table.columns:
        drawn = table.groupby(LABEL, sort=False)["unseen_classes"].agg(
            lambda v: "; ".join(dict.fromkeys(str(x) for x in v.dropna())))
        summary["unseen classes"] = [drawn.get(label, "") for label in summary[LABEL]]
    return ["## Classes never seen in training", "",
            "Each configuration held the unseen classes' images and prompts out of training; the classifier still "
            "chooses among every class. seen_top1 is top-1 on the test images of trained classes, unseen_top1 on "
            "those of held-out classes, harmonic_top1 their harmonic mean (the generalized zero-shot protocol of "
            "Xian et al.); zeroshot_top1 is over every test image. Where the held-out classes were drawn by seed, "
            "the mean over seeds mixes splits.", "", summary.pipe(_md), ""]

