"""``runs.csv``, the table of all runs, and everything that reads or writes it: its fixed columns, reading,
appending, and the long twin ``runs_long.csv`` rebuilt on every append. A missing file reads as a table with
no runs; only :func:`read_results`, for a path the user named, makes that an error.

It is a shared table that concurrent runs append to without losing, tearing or rewriting rows.

An append holds an exclusive lock on ``runs.csv.lock``, re-reads the file, adds one line and replaces the
file atomically (temp file, fsync, rename), so two runs finishing at once both land, and a reader sees the
table before or after a row, never half of one. Rows already written are copied as their text is (a new column
re-writes the intact ones field for field), never re-typed by pandas (which would turn ``64`` into ``64.0`` once a
column holds a blank). A damaged or
foreign row (wrong number of fields, no run id, a metric that is not a number, a repeated run id) is kept
in the file and reported on stderr by every reader and writer; it is never dropped silently. A row whose run
id the table already holds is not appended again.

The table is not the source of truth: each finished run's ``runs/<run_id>/result.json`` is, written before its
row. File locks are unreliable on network file systems, so when many machines finish runs into one folder a
row may still be lost to a race; :func:`reconcile_runs` (every sweep's end) appends the rows of records the
table lacks, and :func:`rebuild_runs` (``bench results --rebuild``) rebuilds the table from the records.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from ..atomic_files import atomic_write_text, file_lock
from ..errors import BenchError
from .run_folder import write_csv
from .views import LONG_SUFFIX, long_table

# The fixed column order of runs.csv; a row's extra keys go after these, in sorted order.
RUN_COLUMNS = [
    "run_id", "config_id", "time", "encoder", "tokenizer", "templates", "dataset", "preset", "epochs",
    "batch_size", "lr", "weight_decay", "loss", "seed", "device", "device_name", "precision", "deterministic",
    "torch_threads", "params",
    "train_seconds", "train_images_per_s", "zeroshot_top1", "zeroshot_top5", "mean_per_class_recall",
    "final_train_loss", "best_epoch", "best_zeroshot_top1", "limit_train", "limit_test", "train_images",
    "test_images", "eval_templates", "image_size", "normalization", "eval_checkpoint", "git_commit", "git_dirty",
    "torch_version", "cuda_version", "bench_version", "python_version", "hostname", "command", "numpy_version",
    "resumes",
]

# Identifiers and digests, read as text even when every value in the table looks like a number: a config id is 10
# hex digits, all of them decimal in about 1 table of 100 with one configuration, and 0123456789 must not become
# 123456789 (nor 12e4567890 a float) and stop matching the runs it names.
TEXT_COLUMNS = ("run_id", "config_id", "source_run_id", "git_commit", "checkpoint_sha256", "pretrained_sha256",
                "hostname")

# Columns whose values must be numbers (or blank) in a row bench wrote.
NUMERIC_COLUMNS = ("epochs", "batch_size", "lr", "weight_decay", "seed", "params", "train_seconds",
                   "train_images_per_s", "zeroshot_top1", "zeroshot_top5", "mean_per_class_recall")


@dataclass
class RunsTable:
    """A parsed results table: every row as written, and a note for each row that is not a sound run row."""

    path: Path
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # every data row's fields, damaged ones included
    raw: list[str] = field(default_factory=list)  # every data row's text as the file has it, line ends included
    problems: dict[int, str] = field(default_factory=dict)  # row index -> what is wrong with it, with its line

    def intact(self) -> list[list[str]]:
        return [r for i, r in enumerate(self.rows) if i not in self.problems]

    def run_ids(self, damaged: bool = False) -> set[str]:
        """The run ids of the intact rows, or with ``damaged`` of every row that has one."""
        if not self.header:
            return set()
        column = self.header.index("run_id")
        return {r[column] for r in (self.rows if damaged else self.intact()) if len(r) > column}

    def frame(self) -> pd.DataFrame:
        """The intact rows as a DataFrame, typed as ``pd.read_csv`` types them."""
        if not self.header:
            return pd.DataFrame()
        return pd.read_csv(io.StringIO(_to_csv([self.header] + self.intact())),
                           dtype={c: object for c in TEXT_COLUMNS if c in self.header})

    def report(self, stream=None):
        """One stderr line per damaged row: the file keeps it, the tables built from it leave it out."""
        for message in self.problems.values():
            print(f"bench: warning: {message}", file=stream or sys.stderr)


def read_table(path: str | os.PathLike, key: str | None = "run_id") -> RunsTable:
    """Parse ``path``; a missing or empty file is an empty table, a file that is not a results table an error.

    ``key`` is the column that names a row (``runs.csv``: ``run_id``); ``None`` for tables without one
    (``throughput.csv``), whose rows are then only checked for their number of fields.
    """
    path = Path(path)
    table = RunsTable(path)
    if not path.exists():
        return table
    if not path.is_file():
        raise BenchError(f"{path} is not a file; move it away or pass another --out")
    try:
        records, raw = _records(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BenchError(f"{path} is not a results table ({type(exc).__name__}: not CSV text); move it away "
                         f"or pass another --out") from None
    if not records:
        return table
    header = records[0]
    if (key is not None and key not in header) or len(set(header)) != len(header):
        why = f"has no {key} column" if key is not None and key not in header else "repeats a column"
        raise BenchError(f"{path} is not a bench results table (its header {why}); move it away or pass another --out")
    table.header, table.rows, table.raw = header, records[1:], raw[1:]
    _find_problems(table, key)
    return table


def _records(text: str) -> tuple[list[list[str]], list[str]]:
    """The CSV records of ``text`` and each one's text, where a record that opens a quote it never closes keeps
    only its own line.

    A stray ``"`` from a hand edit would otherwise swallow every line after it into one field: every later run
    gone from the tables. Such a record either spans several lines with the wrong number of fields, or leaves its
    quote open at the end of the file (the strict reader's error); a sound one spanning lines (a cell with a line
    break) closes its quote and has the header's width. A damaged record is read leniently from its own line.
    """
    lines = io.StringIO(text, newline="").readlines()
    records, raw, start = [], [], 0
    while start < len(lines):
        reader = csv.reader(lines[start:], strict=True)  # strict: a quote still open at the end is an error
        read = 0  # lines of lines[start:] that the records so far took
        try:
            for record in reader:
                if records and reader.line_num - read > 1 and len(record) != len(records[0]):
                    break
                records.append(record)
                raw.append("".join(lines[start + read:start + reader.line_num]))
                read = reader.line_num
            else:
                break
        except csv.Error:
            pass
        # the record at lines[start + read] is damaged: it keeps its own line, read leniently, and no more
        records.append(next(csv.reader([lines[start + read].rstrip("\r\n")]), []))
        raw.append(lines[start + read])
        start += read + 1
    return records, raw


def _find_problems(table: RunsTable, key: str | None = "run_id"):
    header, name = table.header, table.path.name
    numeric = [(c, header.index(c)) for c in NUMERIC_COLUMNS if c in header]
    seen: dict[str, int] = {}
    for i, row in enumerate(table.rows):
        where = f"{name} row {i + 1} (line {i + 2})"  # csv line = row + header, for rows without embedded newlines
        if len(row) != len(header):
            table.problems[i] = (f"{where} has {len(row)} fields where the header has {len(header)}: damaged or "
                                 f"foreign; it is kept in the file but left out of tables, fix or delete it")
            continue
        if key is None:
            continue
        run_id = row[header.index(key)]
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


def _line(text: str) -> str:
    """A row's text, ended by a line break (a writer that died mid-line left the file's last row without one)."""
    return text if text.endswith(("\n", "\r")) else text + "\n"


def _to_csv(records) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(records)
    return buffer.getvalue()


def append_rows(path: str | os.PathLike, rows: list[dict], columns=(), on_written=None,
                key: str | None = "run_id", replace: bool = False) -> Path:
    """Add ``rows`` to the table at ``path`` under the lock; columns the file lacks are added at its end.

    ``columns`` orders a new file's header (known columns first, the rest sorted). ``on_written(table,
    path)`` runs while the lock is still held, for files derived from the table. ``key``: see :func:`read_table`.
    A row whose key the table holds is not appended twice; with ``replace`` it takes that intact row's place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        table = read_table(path, key)
        table.report()
        replacing = {}
        if key is not None:  # a row per run: one the table already holds is not appended twice
            have = table.run_ids() if key == "run_id" else set()
            if replace:
                replacing = {str(r.get(key)): r for r in rows if str(r.get(key)) in have}
            rows = [r for r in rows if str(r.get(key)) not in have]
            if not rows and not replacing:
                return path
        names = list(dict.fromkeys(c for row in [*rows, *replacing.values()] for c in row))
        header = table.header or [c for c in columns if c in names] + sorted(c for c in names if c not in columns)
        extra = [c for c in names if c not in header]
        if extra:  # widen the header; intact rows get blanks, damaged rows are copied as they are
            old, present = header, set(header) | set(extra)
            # known columns in their fixed place, whichever row brought them (a run's transfer row, written before
            # its own row, has no training columns), then the others as they were, then the new ones sorted
            header = ([c for c in columns if c in present] + [c for c in old if c not in columns]
                      + sorted(c for c in extra if c not in columns))
            where = [old.index(c) if c in old else None for c in header]  # each new column's place in the old
            table.rows = [[r[j] if j is not None else "" for j in where] if i not in table.problems else r
                          for i, r in enumerate(table.rows)]
            # intact rows in the new columns; a damaged row as its text was, not re-quoted into something else
            lines = [_to_csv([r]) if i not in table.problems else _line(table.raw[i])
                     for i, r in enumerate(table.rows)]
        else:  # every row as it was written, damaged ones byte for byte
            lines = [_line(text) for text in table.raw]
        if replacing:
            column = header.index(key)
            for i, fields in enumerate(table.rows):
                if i not in table.problems and fields[column] in replacing:
                    table.rows[i] = [_format(replacing[fields[column]].get(c)) for c in header]
                    lines[i] = _to_csv([table.rows[i]])
        added = [[_format(row.get(c)) for c in header] for row in rows]
        atomic_write_text(path, _to_csv([header]) + "".join(lines) + _to_csv(added))
        if on_written is not None:
            # the table as written, from what is in hand rather than parsed again: reading it back cost as much as
            # the read above, on every run's row (half a second per row into a runs.csv of 8000 rows)
            written = RunsTable(path, header, table.rows + added, lines + [_to_csv([r]) for r in added])
            _find_problems(written, key)
            on_written(written, path)
    return path


def append_row(path: str | os.PathLike, row: dict, columns=(), on_written=None, replace: bool = False) -> Path:
    """:func:`append_rows` for one run row."""
    return append_rows(path, [row], columns, on_written, replace=replace)


def append_run(out_dir: str | os.PathLike, row: dict, name: str = "runs.csv", replace: bool = False) -> Path:
    """Append one row to ``out_dir/runs.csv`` under a lock, never rewriting other rows (``replace``: but the row
    of its own run id, see :func:`append_rows`).

    The tidy twin ``runs_long.csv`` (run x metric) is rebuilt under the same lock, so the two agree.
    """
    return append_row(Path(out_dir) / name, row, RUN_COLUMNS,
                      on_written=lambda table, path: write_csv(long_table(table.frame()), long_path(path)),
                      replace=replace)


def long_path(path: str | os.PathLike) -> Path:
    """``runs.csv`` -> ``runs_long.csv``: the long table lives beside its wide table."""
    path = Path(path)
    return path.with_name(f"{path.stem}{LONG_SUFFIX}{path.suffix}")


def read_runs(out_dir: str | os.PathLike, name: str = "runs.csv") -> pd.DataFrame:
    """The intact rows of ``out_dir/runs.csv``; damaged rows are reported on stderr, a foreign file refused.

    A folder without a runs.csv is a folder without runs: an empty table with the fixed columns.
    """
    table = read_table(Path(out_dir) / name)
    table.report()
    return table.frame() if table.header else pd.DataFrame(columns=RUN_COLUMNS)


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """A results table the user pointed at (a results folder or its CSV file), by :func:`read_runs`; a path with
    no runs in it (missing or empty) is an error naming it, since the user expected runs there."""
    path = Path(path).expanduser()
    file = path / "runs.csv" if path.is_dir() else path
    if not file.is_file():
        raise BenchError(f"no results table at {str(file)!r}; pass a results folder (bench run --out) or its runs.csv")
    table = read_table(file)
    if not table.header:
        raise BenchError(f"{file} is empty, not a results table; pass a results folder (bench run --out) or its runs.csv")
    table.report()
    return table.frame()


def finish_run(out: str | os.PathLike, run_dir: str | os.PathLike, row: dict, name: str = "runs.csv",
               replace: bool = False) -> Path:
    """Record a finished run: ``result.json`` in its folder first (so the row survives anything), then the table
    (``replace``: see :func:`append_rows`)."""
    atomic_write_text(Path(run_dir) / "result.json", json.dumps(row, indent=2, default=str) + "\n")
    return append_run(out, row, name, replace=replace)


def run_records(out_dir: str | os.PathLike) -> dict[str, dict]:
    """``run_id -> row`` from every ``runs/<run_id>/result.json`` under ``out_dir`` (unreadable ones reported)."""
    records = {}
    for path in sorted(Path(out_dir).glob("runs/*/result.json")):
        if path.parent.name.startswith("."):
            continue
        try:
            row = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            print(f"bench: warning: {path} is not a readable run record ({type(exc).__name__}); its run is left out",
                  file=sys.stderr)
            continue
        if isinstance(row, dict) and row.get("run_id") == path.parent.name:
            records[path.parent.name] = row
    return records


def reconcile_runs(out_dir: str | os.PathLike, name: str = "runs.csv") -> int:
    """Append the row of every run record that ``out_dir/runs.csv`` lacks; returns how many were added."""
    path = Path(out_dir) / name
    have = read_table(path).run_ids()
    missing = [row for run_id, row in run_records(out_dir).items() if run_id not in have]
    missing.sort(key=lambda r: str(r.get("time", "")))
    if missing:
        append_rows(path, missing, RUN_COLUMNS,
                    on_written=lambda table, p: write_csv(long_table(table.frame()), long_path(p)))
    return len(missing)


def rebuild_runs(out_dir: str | os.PathLike, name: str = "runs.csv", check=None) -> dict:
    """``runs.csv`` rebuilt from the run records: a row with a record is replaced by it, a row without one (a
    run from before records, a ``bench eval`` row) kept as written, a record without a row added, a repeated or
    damaged row dropped. The old file is kept beside it as ``runs.csv.<time>.bak`` when anything changed.
    ``check``: called with the rebuilt table (a DataFrame) before anything is written; what it raises stops the
    rebuild (the options of the view to be shown of it)."""
    path = Path(out_dir) / name
    records = run_records(out_dir)
    with file_lock(path):
        table = read_table(path)
        header = table.header
        kept, seen = [], set()
        for i, fields in enumerate(table.rows):
            if i in table.problems:
                continue
            run_id = fields[header.index("run_id")]
            seen.add(run_id)
            kept.append(records[run_id] if run_id in records else dict(zip(header, fields)))
        added = sorted((r for run_id, r in records.items() if run_id not in seen), key=lambda r: str(r.get("time", "")))
        rows = kept + added
        names = list(dict.fromkeys(c for row in rows for c in row))
        new_header = [c for c in RUN_COLUMNS if c in names] + sorted(c for c in names if c not in RUN_COLUMNS)
        fields = [[_format(row.get(c)) for c in new_header] for row in rows]
        if check is not None:
            check(RunsTable(path, new_header, fields).frame())
        text = _to_csv([new_header] + fields) if rows else ""
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        backup = None
        if text != old:
            if old:
                stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                # a second rebuild within the second must not replace the first one's backup
                backup = next(b for n in range(1000) if not (b := path.with_name(
                    f"{path.name}.{stamp}{f'-{n}' if n else ''}.bak")).exists())
                atomic_write_text(backup, old)
            atomic_write_text(path, text)
            if rows:
                write_csv(long_table(read_table(path).frame()), long_path(path))
            else:  # no run left: the long twin must not go on listing them
                long_path(path).unlink(missing_ok=True)
    return {"rows": len(rows), "added": len(added), "dropped": len(table.problems), "backup": backup}
