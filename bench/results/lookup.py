"""Turn what a user points at (a run id, a run folder, a results folder or a results file) into a table.

Every source becomes a wide table (one row per run) plus, where the run folders exist, a map from run id
to folder, which the report reads for curves, confusion matrices and per-class accuracy.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import BenchError
from .columns import has_value, metric_columns, with_current_columns
from .runs_csv import TEXT_COLUMNS, read_results, read_table
from .unfinished import unfinished_note
from .views import wide_from_long


@dataclass
class Source:
    label: str  # how tables and warnings name it
    table: pd.DataFrame  # one row per run
    run_dirs: dict = field(default_factory=dict)  # run_id -> Path of its folder, where it exists
    notes: list = field(default_factory=list)  # what combining sources left out, for the command to say


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return next(csv.reader([f.readline()]), [])


def read_results_file(path: Path) -> pd.DataFrame:
    """A results file: wide or long CSV (``runs.csv``, ``runs_long.csv``, ``eval.csv``) or JSON records."""
    if path.is_file() and not path.read_bytes().strip():
        fix = (f"bench results {path.parent} --rebuild rebuilds it from the run records"
               if (path.parent / "runs").is_dir() else "pass a results table bench wrote")
        raise BenchError(f"{str(path)!r} is empty; {fix}")
    try:
        header = set(_header(path)) if path.suffix == ".csv" else set()
        if path.suffix == ".json":
            table = pd.read_json(path, orient="records", dtype={c: object for c in TEXT_COLUMNS})
        elif {"run_id", "metric", "value"} <= header:
            # the long twin (runs_long.csv): a run's id on each of its metric rows
            table = pd.read_csv(path, dtype={c: object for c in TEXT_COLUMNS})
        elif "run_id" in header:
            table = read_results(path)  # bench's own tables: damaged rows are named on stderr, not dropped silently
        elif path.suffix in (".csv", ".tsv"):
            table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        else:
            raise BenchError(f"{str(path)!r} is not a results file; pass a .csv or .json table, a results folder, "
                             f"a run folder or a run id")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BenchError(f"{str(path)!r} is not a results table ({type(exc).__name__}); "
                         f"pass a runs.csv written by bench") from None
    if not all(isinstance(c, str) for c in table.columns):  # e.g. a JSON list of numbers
        raise BenchError(f"{str(path)!r} is not a results table (its columns are not names); pass a runs.csv or "
                         f"the JSON records bench writes")
    if {"metric", "value"} <= set(table.columns) and "run_id" in table.columns:
        table = wide_from_long(table)
    if not len(table.columns) or not metric_columns(table):
        raise BenchError(f"{str(path)!r} is not a bench results table (no metric columns such as zeroshot_top1); "
                         f"pass a runs.csv written by bench")
    if "run_id" not in table.columns:  # e.g. bench eval's eval.csv: one row per checkpoint x template set
        table = table.assign(run_id=[f"{path.stem}:{i}" for i in range(len(table))])
    return with_current_columns(table)


def _run_dirs(table: pd.DataFrame, results_dir: Path) -> dict:
    found = {}
    for run_id in table["run_id"].astype(str):
        folder = results_dir / "runs" / run_id
        if folder.is_dir():
            found[run_id] = folder
    return found


def load_source(spec: str, results_dir: str | Path = "results") -> Source:
    """Resolve one command-line argument; anything else is a one-line error naming what is accepted."""
    path = Path(spec)
    if path.is_file():
        table = read_results_file(path)
        return Source(spec, table, _run_dirs(table, path.parent))
    if path.is_dir() and (path / "runs.csv").is_file():
        table = read_results_file(path / "runs.csv")
        # a whole results folder: its runs without a row (failed, stopped, running) are named, not silently absent
        note = unfinished_note(path)
        return Source(spec, table, _run_dirs(table, path), [note] if note else [])
    # a run folder, results/runs/<run_id>/: a run's (config.json), or a pretrained evaluation's (result.json only)
    if path.is_dir() and ((path / "config.json").is_file() or (path / "result.json").is_file()):
        name = path.resolve().name  # "." names the folder it is
        runs_csv = path.resolve().parent.parent / "runs.csv"
        table = read_results_file(runs_csv) if runs_csv.is_file() else pd.DataFrame(columns=["run_id"])
        table = table[table["run_id"].astype(str) == name]
        if not len(table):
            raise BenchError(f"run folder {spec!r} has no row in {runs_csv}; the run did not finish "
                             f"(resume or rerun it)")
        return Source(name, table, {name: path})
    if path.is_dir():
        raise BenchError(f"{spec!r} holds neither runs.csv nor a run (config.json, result.json); pass a results "
                         f"folder, a run folder, a results file or a run id")
    return _by_run_id(spec, Path(results_dir))


def _by_run_id(run_id: str, results_dir: Path) -> Source:
    runs_csv = results_dir / "runs.csv"
    if not runs_csv.is_file():
        raise BenchError(f"{run_id!r} is not a file or folder, and there is no {runs_csv} to look it up as a run id; "
                         f"pass --results DIR")
    table = read_results_file(runs_csv)
    ids = table["run_id"].astype(str)
    match = table[ids == run_id]
    if not len(match):
        if run_id in read_table(runs_csv).run_ids(damaged=True) or (results_dir / "runs" / run_id).is_dir():
            # that run exists, its row damaged or lost: a longer id it is the start of is another run
            raise BenchError(f"run {run_id!r} has no readable row in {runs_csv} (see the warning above); bench "
                             f"results --rebuild --results {results_dir} restores rows from the runs' records")
        match = table[ids.str.startswith(run_id)]
    if len(match) != 1:
        what = "no run" if not len(match) else f"{len(match)} runs"
        raise BenchError(f"{what} in {runs_csv} match {run_id!r}; pass a full run id, a run folder or a results file")
    rid = str(match["run_id"].iloc[0])
    return Source(rid, match, _run_dirs(match, results_dir))


def load_sources(specs, results_dir: str | Path = "results") -> list[Source]:
    return [load_source(str(s), results_dir) for s in specs]


def combine(sources: list[Source]) -> Source:
    """All sources as one table. A run listed twice (its row reached through two sources) counts once. A run id two
    sources hold with different rows (one sweep plan, whose run ids are made from the configuration and seed, run
    into two results folders) keeps the row written last, as a seed trained again does, with its own run folder,
    and ``notes`` names the rows left out; before, the first source's row won without a word."""
    table = pd.concat([s.table.assign(_source=i) for i, s in enumerate(sources)], ignore_index=True)
    ids = table["run_id"].astype(str)
    # the time each row was written (ISO text sorts in time; blank where a table has none, as runs_long.csv): rows
    # of one id and one time are the same run, and of rows with different times the latest is kept
    times = table["time"].map(lambda t: str(t) if has_value(t) else "") if "time" in table.columns else \
        pd.Series("", index=table.index)
    # each id's latest time, in one pass: a groupby max of text runs Python once per id (seconds at 8000 rows)
    last: dict = {}
    for run_id, time in zip(ids, times):
        last[run_id] = max(last.get(run_id, time), time)
    latest = ids.map(last)
    kept = (times == latest) & ~(ids + "\0" + times).duplicated(keep="first")
    replaced = (times != "") & (times != latest)
    notes = [n for s in sources for n in s.notes]
    if replaced.any():
        notes.append(_replaced_note(table, replaced, kept, sources))
    # each kept row's run folder: from a source that holds that very row (the same id and time)
    run_dirs = {}
    for run_id, time, last, i in zip(ids, times, latest, table["_source"]):
        if run_id not in run_dirs and time == last and run_id in sources[i].run_dirs:
            run_dirs[run_id] = sources[i].run_dirs[run_id]
    table = table[kept]
    table = with_current_columns(table.drop(columns=["_source"]).reset_index(drop=True))
    return Source(", ".join(s.label for s in sources), table, run_dirs, notes)


def _replaced_note(table: pd.DataFrame, replaced: pd.Series, kept: pd.Series, sources: list[Source]) -> str:
    """One line naming the rows :func:`combine` left out for a later row of the same run id in another source."""
    dropped = table[replaced]
    ids = ", ".join(f"{r} of {sources[i].label}" for r, i in zip(dropped["run_id"].head(3), dropped["_source"]))
    more = ", ..." if len(dropped) > 3 else ""
    first = str(dropped["run_id"].iloc[0])
    later = table[kept & (table["run_id"].astype(str) == first)]["_source"].iloc[0]
    return (f"{len(dropped)} row(s) left out ({ids}{more}): another source holds a row of the same run id written "
            f"later, which is used (one sweep run into two results folders gives the same ids); to set them side "
            f"by side, compare the folders: bench compare {sources[dropped['_source'].iloc[0]].label} "
            f"{sources[later].label}")
