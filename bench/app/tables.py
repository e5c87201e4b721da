"""``bench results``, ``bench compare`` and ``bench report`` from their parsed options: result tables read,
filtered, shown, compared and written up."""
from __future__ import annotations

from pathlib import Path

from ..errors import BenchError
from .validation import check_positive

FORMATS = ("markdown", "csv", "json")


def format_table(table, fmt: str) -> str:
    """``table`` as markdown (through tabulate, a declared dependency), CSV or JSON records. Settings that a blank
    in their column made floats (``source_image_size`` beside a row that needed no resize, ``seed`` beside a
    pretrained model's) read as the integers they are: 96, not 96.0; a blank is blank (null in JSON), not nan, in
    every column: a metric a row did not measure (``seen_top1`` of a transfer row) too."""
    from ..results.columns import metric_columns
    from ..results.views import as_written, whole_floats

    metrics = set(metric_columns(table))
    table = table.copy()
    for c in table.columns:
        if c in metrics:
            if fmt == "markdown":  # still numbers, which tabulate aligns; None is its blank, NaN it prints as nan
                table[c] = table[c].astype(object).where(table[c].notna(), None)
        elif fmt == "markdown":
            table[c] = as_written(table[c])
        elif whole_floats(table[c]):
            table[c] = table[c].astype("Int64")
    if fmt == "csv":
        return table.to_csv(index=False).rstrip()
    if fmt == "json":
        return table.to_json(orient="records", indent=2)
    return table.to_markdown(index=False)


def show_results(sources, results_dir, wheres=(), sort_by=None, ascending=None, columns=(), aggregate_=False,
                 long_=False, limit=None, fmt="markdown", rebuild=False, echo=print, echo_err=print):
    """Print the runs of ``sources`` (default: ``results_dir``); ``rebuild`` first rebuilds ``results_dir``'s
    runs.csv from its runs' records."""
    from ..results.lookup import combine
    from ..results.views import display_table
    from .older_rows import read_sources

    check_positive("--limit", limit)
    if aggregate_ and long_:
        raise BenchError("--aggregate (a row per configuration) and --long (a row per run and metric) are two views "
                         "of the table; pick one")
    if rebuild:
        from ..results.columns import with_current_columns
        from ..results.runs_csv import rebuild_runs

        if sources:  # `bench results FOLDER --rebuild` means that folder, not the --results default
            if len(sources) > 1:
                raise BenchError("--rebuild rebuilds one results folder's runs.csv; name that folder alone (bench "
                                 "results FOLDER --rebuild) or as --results FOLDER")
            results_dir = sources[0]

        if not (Path(results_dir) / "runs").is_dir():
            raise BenchError(f"{results_dir} has no runs/ folder to rebuild runs.csv from; name the results folder "
                             f"bench run --out wrote")
        # the view is checked on the rebuilt table as it will be read (eval_dataset filled in, old columns under
        # their names now: with_current_columns), before it is written
        done = rebuild_runs(results_dir, check=lambda rebuilt: display_table(
            with_current_columns(rebuilt), wheres=wheres, sort_by=sort_by, columns=columns, aggregate_=aggregate_,
            long_=long_))
        kept = f", the old table kept as {done['backup'].name}" if done["backup"] else ""
        echo_err(f"rebuilt {results_dir}/runs.csv: {done['rows']} runs, {done['added']} added from records, "
                 f"{done['dropped']} dropped (damaged or repeated){kept}")
    if not sources and not (Path(results_dir) / "runs.csv").is_file():
        raise BenchError(f"no results table at {results_dir}/runs.csv; run `bench run` first, or pass a results "
                         f"folder, results file, run folder or run id")
    combined = combine(read_sources(sources or [results_dir], results_dir))
    for note in combined.notes:
        echo_err(f"bench: note: {note}")
    table = combined.table
    shown = display_table(table, wheres=wheres, sort_by=sort_by, descending=None if ascending is None else not ascending,
                          columns=columns, aggregate_=aggregate_, long_=long_, limit=limit, pretty=fmt == "markdown")
    if shown.attrs.get("repeated_seeds"):
        echo_err(f"bench: note: {shown.attrs['repeated_seeds']}")
    # numbers are already formatted (42.0 stays 42.0): stop tabulate from re-parsing them
    echo(shown.to_markdown(index=False, disable_numparse=True) if fmt == "markdown" else format_table(shown, fmt))


def compare_sides(sides, results_dir, split_by=None, on=(), wheres=(), metrics=(), fail_on=(),
                  fail_on_significant=False, alpha=0.05, correct="none", fmt="markdown", equivalence=(),
                  fail_on_not_equivalent=False, echo=print, echo_err=print) -> int:
    """Print the comparison of ``sides``; returns 1 when a ``fail_on`` threshold is passed or, with
    ``fail_on_not_equivalent``, a difference is not shown equivalent within its ``equivalence`` margin; else 0."""
    from ..results.compare import (
        check_alpha,
        compare,
        parse_fail_on,
        render_markdown,
        split_sides,
    )
    from ..results.equivalence import add_equivalence, equivalence_failures, equivalence_note, parse_equivalence
    from ..results.views import filter_rows
    from .older_rows import read_sources

    thresholds = parse_fail_on(fail_on)
    check_alpha(alpha)
    if fail_on_significant and not thresholds:
        raise BenchError("--fail-on-significant refines --fail-on; add a threshold, e.g. --fail-on zeroshot_top1:0 "
                         "--fail-on-significant to fail on any significant drop of top-1")
    margins = parse_equivalence(equivalence)
    if margins and alpha >= 0.5:  # TOST's interval is the (1 - 2 alpha) one: from 0.5 on it does not exist
        raise BenchError(f"--alpha {alpha} with --equivalence: two one-sided tests need --alpha below 0.5; "
                         f"0.05 is the usual level")
    if fail_on_not_equivalent and not margins:
        raise BenchError("--fail-on-not-equivalent needs a margin; add --equivalence METRIC:MARGIN, e.g. "
                         "--equivalence zeroshot_top1:0.005 (half a point)")
    if margins and metrics:
        unlisted = [m for m in margins if m not in metrics]
        if unlisted:
            raise BenchError(f"--equivalence {unlisted[0]} is not among --metrics; add it there or drop --metrics")
    sources = read_sources(sides, results_dir)
    for source in sources:
        source.table = filter_rows(source.table, wheres)
        if wheres and not len(source.table):  # not "no configuration in common" later: the filter left nothing
            raise BenchError(f"--where {' '.join(wheres)} leaves no run of {source.label}; bench results "
                             f"{source.label} lists its values")
    result = compare(split_sides(sources, split_by), metrics=metrics or None, on=on or None, fail_on=thresholds,
                     alpha=alpha, correct=correct, fail_on_significant=fail_on_significant)
    failures = list(result.failures)
    if margins:
        result = add_equivalence(result, margins, alpha, correct)
        if fail_on_not_equivalent:
            failures += equivalence_failures(result)
    for warning in result.warnings:
        echo_err(f"bench: warning: {warning}")
    if fmt == "markdown":
        echo(render_markdown(result) + (f"\n{equivalence_note(result)}" if margins else ""))
    else:  # time-to-target rows (metric time_to_target_seconds) after the metrics', with their own columns
        import pandas as pd

        rows = result.rows.drop(columns=["equivalence_ci_label"], errors="ignore")
        echo(format_table(pd.concat([rows, result.targets], ignore_index=True), fmt))
    for failure in failures:
        echo_err(f"bench: compare failed: {failure}")
    return 1 if failures else 0


def write_report(runs, out, results_dir, wheres=(), title=None, correct="none") -> list[Path]:
    """report.md and its figures in ``out`` for ``runs`` (default: ``results_dir``); returns their paths.
    ``correct="holm"``: the comparisons' p-values Holm-adjusted across every configuration and metric."""
    from ..results.lookup import combine
    from ..results.report import build_report
    from ..results.run_folder import is_run_folder
    from ..results.views import filter_rows
    from .older_rows import read_sources

    if is_run_folder(out):
        raise BenchError(f"--out {out} is a run folder, whose curves.png bench report would replace with its own; "
                         f"pass another folder, e.g. --out {Path(out) / 'report'}")
    source = combine(read_sources(runs or [results_dir], results_dir))
    source.table = filter_rows(source.table, wheres)
    if wheres and not len(source.table):
        raise BenchError(f"--where {' '.join(wheres)} leaves no runs to report on; bench results lists the values")
    return build_report([source], out, title=title, correct=correct)
