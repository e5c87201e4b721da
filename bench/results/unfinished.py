"""The runs of a results folder that have no row in its runs.csv: failed, stopped part way, or running now.

The tables read runs.csv, which gets a run's row only when the run finishes; without a word, a sweep's failed
seed would show only as one seed fewer in a mean ± std, and a reader could not tell 4 runs of 4 from 4 of 5.
What each run is, is told from its files alone (a directory listing and a few stats; no checkpoint is opened).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..atomic_files import ProcessLock
from ..claims import claim_alive, read_claim
from .run_folder import RUNNING_LOCK, failure_error, failure_record_path, failure_records, sweep_claim_path
from .runs_csv import read_table

ERROR_CHARS = 100  # of the first failed run's error: the note is one line


def _names(folder: Path, suffix: str = "") -> set[str]:
    """The entries of ``folder`` ending in ``suffix`` (it stripped), hidden ones (atomic writes' temporaries) not."""
    try:
        with os.scandir(folder) as entries:
            return {e.name[:len(e.name) - len(suffix)] for e in entries
                    if e.name.endswith(suffix) and not e.name.startswith(".") and (suffix or e.is_dir())}
    except OSError:  # no such folder (no sweep ran here) or unreadable: nothing to name
        return set()


def _running(results_dir: Path, run_id: str) -> bool:
    # the run's own lock (bench run, on this machine's file locks), or a live sweep claim (heartbeats, any machine)
    if ProcessLock.held(results_dir / "runs" / run_id / RUNNING_LOCK):
        return True
    claim = sweep_claim_path(results_dir, run_id)
    holder = read_claim(claim)
    return holder is not None and claim_alive(claim, holder)


def unfinished_note(results_dir: str | os.PathLike) -> str | None:
    """One line naming the runs of ``results_dir`` (a folder under ``runs/``, or a sweep's failure record) with
    neither a row in ``runs.csv`` nor a ``result.json``, by what they are; None when there are none."""
    results_dir = Path(results_dir)
    with_rows = read_table(results_dir / "runs.csv").run_ids(damaged=True)  # a damaged row is warned of already
    candidates = _names(results_dir / "runs") | _names(failure_records(results_dir), ".json")
    running, failed, stopped, unsaved = [], [], [], []
    for run_id in sorted(candidates - with_rows):
        folder = results_dir / "runs" / run_id
        if (folder / "result.json").is_file():  # finished; its row lost is for bench results --rebuild to restore
            continue
        record = failure_record_path(results_dir, run_id)
        if _running(results_dir, run_id):  # before the failure record: a failed run may be retried
            running.append(run_id)
        elif record.is_file():
            failed.append((run_id, record))
        elif (folder / "last.pt").is_file():
            stopped.append(run_id)
        else:
            unsaved.append(run_id)
    parts = []
    if failed:
        run_id, record = failed[0]
        error = " ".join(failure_error(record).split())
        error = error if len(error) <= ERROR_CHARS else error[:ERROR_CHARS - 3] + "..."
        parts.append(f"{len(failed)} failed ({'first ' if len(failed) > 1 else ''}{run_id}: {error})")
    if stopped:
        resume = f"bench run --resume {results_dir / 'runs' / stopped[0]}"
        parts.append(f"{len(stopped)} stopped part way ({stopped[0]}; resume it with {resume})" if len(stopped) == 1
                     else f"{len(stopped)} stopped part way ({stopped[0]}, ...; resume each with bench run --resume "
                          f"<run folder>, e.g. {resume})")
    if unsaved:
        parts.append(f"{len(unsaved)} stopped before a checkpoint ({unsaved[0]}{', ...' if len(unsaved) > 1 else ''}"
                     f"; rerun)")
    if running:
        parts.append(f"{len(running)} running now ({running[0]}{', ...' if len(running) > 1 else ''})")
    if not parts:
        return None
    total = len(failed) + len(stopped) + len(unsaved) + len(running)
    return (f"{total} run(s) of {results_dir} have no row in its runs.csv and are not in these numbers: "
            + ", ".join(parts))
