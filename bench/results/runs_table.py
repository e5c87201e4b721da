"""``runs.csv`` as a shared table that concurrent runs append to without losing, tearing or rewriting rows.

An append holds an exclusive lock on ``runs.csv.lock``, re-reads the file, adds one line and replaces the
file atomically (temp file, fsync, rename), so two runs finishing at once both land, and a reader sees the
table before or after a row, never half of one. Rows already written are copied field for field, never
re-typed by pandas (which would turn ``64`` into ``64.0`` once a column holds a blank). A damaged or
foreign row (wrong number of fields, no run id, a metric that is not a number, a repeated run id) is kept
in the file and reported on stderr by every reader and writer; it is never dropped silently.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import BenchError
from ..files import atomic_write_text, file_lock

# Columns whose values must be numbers (or blank) in a row bench wrote.
NUMERIC_COLUMNS = ("epochs", "batch_size", "lr", "weight_decay", "seed", "params", "train_seconds",
                   "train_images_per_s", "zeroshot_top1", "zeroshot_top5", "mean_per_class_recall")


@dataclass
class RunsTable:
    """A parsed results table: every row as written, and a note for each row that is not a sound run row."""

    path: Path
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # every data row's fields, damaged ones included
    problems: dict[int, str] = field(default_factory=dict)  # row index -> what is wrong with it, with its line

    def intact(self) -> list[list[str]]:
        return [r for i, r in enumerate(self.rows) if i not in self.problems]

    def run_ids(self) -> set[str]:
        column = self.header.index("run_id")
        return {r[column] for r in self.intact()}

    def frame(self) -> pd.DataFrame:
        """The intact rows as a DataFrame, typed as ``pd.read_csv`` types them."""
        if not self.header:
            return pd.DataFrame()
        return pd.read_csv(io.StringIO(_to_csv([self.header] + self.intact())))

    def report(self, stream=None):
        """One stderr line per damaged row: the file keeps it, the tables built from it leave it out."""
        for message in self.problems.values():
            print(f"bench: warning: {message}", file=stream or sys.stderr)


def read_table(path: str | os.PathLike) -> RunsTable:
    """Parse ``path``; a missing or empty file is an empty table, a file that is not a results table an error."""
    path = Path(path)
    table = RunsTable(path)
    if not path.exists():
        return table
    if not path.is_file():
        raise BenchError(f"{path} is not a file; move it away or pass another --out")
    try:
        text = path.read_bytes().decode("utf-8")
        records = list(csv.reader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BenchError(f"{path} is not a results table ({type(exc).__name__}: not CSV text); move it away "
                         f"or pass another --out") from None
    if not records:
        return table
    header = records[0]
    if "run_id" not in header or len(set(header)) != len(header):
        why = "has no run_id column" if "run_id" not in header else "repeats a column"
        raise BenchError(f"{path} is not a bench results table (its header {why}); move it away or pass another --out")
    table.header, table.rows = header, records[1:]
    _find_problems(table)
    return table


def _find_problems(table: RunsTable):
    header, name = table.header, table.path.name
    id_col = header.index("run_id")
    numeric = [(c, header.index(c)) for c in NUMERIC_COLUMNS if c in header]
    seen: dict[str, int] = {}
    for i, row in enumerate(table.rows):
        where = f"{name} row {i + 1} (line {i + 2})"  # csv line = row + header, for rows without embedded newlines
        if len(row) != len(header):
            table.problems[i] = (f"{where} has {len(row)} fields where the header has {len(header)}: damaged or "
                                 f"foreign; it is kept in the file but left out of tables, fix or delete it")
            continue
        run_id = row[id_col]
        if not run_id:
            table.problems[i] = f"{where} has no run_id; it is kept in the file but left out of tables, fix or delete it"
            continue
        bad = [c for c, j in numeric if row[j] and not _is_number(row[j])]
        if bad:
            table.problems[i] = (f"{where} (run {run_id}) has {bad[0]}={row[header.index(bad[0])]!r}, not a number; "
                                 f"it is kept in the file but left out of tables, fix or delete it")
        elif run_id in seen:
            table.problems[i] = (f"{where} repeats run_id {run_id} of row {seen[run_id] + 1}; it is kept in the file "
                                 f"but left out of tables, delete one of them")
        else:
            seen[run_id] = i


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def _to_csv(records) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(records)
    return buffer.getvalue()


def append_row(path: str | os.PathLike, row: dict, columns=(), on_written=None) -> Path:
    """Add ``row`` to the table at ``path`` under the lock; columns the file lacks are added at its end.

    ``columns`` orders a new file's header (known columns first, the rest sorted). ``on_written(table,
    path)`` runs while the lock is still held, for files derived from the table.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        table = read_table(path)
        table.report()
        header = table.header or [c for c in columns if c in row] + sorted(c for c in row if c not in columns)
        extra = [c for c in row if c not in header]
        if extra:  # widen the header; intact rows get blanks, damaged rows are copied as they are
            header = header + [c for c in columns if c in extra] + sorted(c for c in extra if c not in columns)
            pad = len(header) - len(table.header)
            table.rows = [r + [""] * pad if i not in table.problems else r for i, r in enumerate(table.rows)]
        table.rows.append([_format(row.get(c)) for c in header])
        atomic_write_text(path, _to_csv([header] + table.rows))
        if on_written is not None:
            on_written(read_table(path), path)
    return path


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """The intact rows of a results table given as a results folder (its runs.csv) or a CSV file."""
    path = Path(path).expanduser()
    file = path / "runs.csv" if path.is_dir() else path
    if not file.is_file():
        raise BenchError(f"no results table at {str(file)!r}; pass a results folder (bench run --out) or its runs.csv")
    table = read_table(file)
    if not table.header:
        raise BenchError(f"{file} is empty, not a results table; pass a results folder (bench run --out) or its runs.csv")
    table.report()
    return table.frame()


def finish_run(out: str | os.PathLike, run_dir: str | os.PathLike, row: dict, name: str = "runs.csv") -> Path:
    """Record a finished run: ``result.json`` in its folder first (so the row survives anything), then the table."""
    from .run_files import append_run

    atomic_write_text(Path(run_dir) / "result.json", json.dumps(row, indent=2, default=str) + "\n")
    return append_run(out, row, name)
