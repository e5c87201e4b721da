"""A run folder's own files: CSV tables written atomically, the curves figure, and the provenance of a row.

``runs.csv``, the table of all runs, is :mod:`bench.results.runs_csv`'s.
"""
from __future__ import annotations

import functools
import io
import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic_files import atomic_write_bytes, atomic_write_text

# held by the process training the run (bench.atomic_files.ProcessLock): --resume leaves such a run alone
RUNNING_LOCK = ".running.lock"


# A sweep's own files about one run, beside the results folder's runs/: here, not in bench.app.sweep, because the
# result tables read them too (to name the runs that have no row), and they sit below the app layer.
def sweep_claim_path(out: str | os.PathLike, run_id: str) -> Path:
    """The claim a sweep process holds on run ``run_id`` of results folder ``out`` while it trains it."""
    return Path(out) / "sweep" / "claims" / run_id


def failure_records(out: str | os.PathLike) -> Path:
    """The folder of a sweep's failure records: ``<run_id>.json`` for each run of ``out`` that failed."""
    return Path(out) / "sweep" / "failed"


def failure_record_path(out: str | os.PathLike, run_id: str) -> Path:
    """The record a sweep writes when run ``run_id`` fails (JSON: run_id, error, type, time); gone once it finishes."""
    return failure_records(out) / f"{run_id}.json"


def failure_error(path: str | os.PathLike) -> str:
    """The ``error`` a failure record holds (a damaged record says so rather than stopping the reader)."""
    try:
        error = json.loads(Path(path).read_text()).get("error", "")
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, or JSON that is not an object
        return "unreadable failure record"
    return str(error)


def recorded_eval_every(folder: str | os.PathLike | None) -> int | None:
    """The ``--eval-every`` a run folder's ``config.json`` records; None where there is no folder, no config or no
    whole number in it. runs.csv has no column for it (it is in the config id only with ``--stop-at-target``), so
    the result tables read it here to say when times to target were measured at different cadences."""
    if folder is None:
        return None
    try:
        every = json.loads((Path(folder) / "config.json").read_text()).get("eval_every")
    except (OSError, ValueError, AttributeError):  # unreadable, or not a run's config: not known
        return None
    return every if isinstance(every, int) and not isinstance(every, bool) else None


def is_run_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a run's (training, transfer or pretrained: each keeps ``config.json`` or
    ``per_class.csv``), not one ``bench eval --out`` wrote (its ``eval.csv`` beside its ``per_class.csv``): a
    folder other commands must not write their files into."""
    folder = Path(folder)
    return (folder / "config.json").is_file() or ((folder / "per_class.csv").is_file()
                                                  and not (folder / "eval.csv").is_file())


def file_safe(text, keep: str = "-_.", fill: str = "-") -> str:
    """``text`` with every character but letters, digits and ``keep`` replaced by ``fill``: a part of a run id or
    of a file name. Run ids depend on it, so a change here renames the runs a sweep looks for."""
    return "".join(c if c.isalnum() or c in keep else fill for c in str(text))


def _git(*args) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def _code_state() -> tuple:
    """(commit, ``git status`` of tracked files), asked of git once per process, as a checkpoint's code version is:
    the code a process runs is what it imported, and each ask is two git processes."""
    return _git("rev-parse", "HEAD"), _git("status", "--porcelain", "--untracked-files=no")


def provenance(device=None) -> dict:
    """Where and with what a number was made: code version, libraries, machine, command line."""
    import torch

    from .. import __version__

    commit, status = _code_state()
    device_name = "cpu"
    if device is not None and str(device).startswith("cuda"):
        device_name = torch.cuda.get_device_name(device)
    elif device is not None:
        device_name = platform.processor() or platform.machine() or "cpu"
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit or "unknown",
        "git_dirty": None if status is None else bool(status),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "bench_version": __version__,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "hostname": socket.gethostname(),
        "device_name": device_name,
        "command": " ".join(["bench"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("bench") else " ".join(sys.argv),
    }


def write_csv(df: pd.DataFrame, path: str | os.PathLike):
    buffer = io.StringIO()
    df.to_csv(buffer, index=False)
    atomic_write_text(path, buffer.getvalue())


def confusion_frame(confusion, classes) -> pd.DataFrame:
    """A confusion matrix ``cm[true, predicted]`` as a table: column ``true``, then one column per predicted class."""
    return pd.DataFrame(confusion, index=list(classes), columns=list(classes)).rename_axis("true").reset_index()


def write_class_tables(run_dir: str | os.PathLike, classes, accuracy, confusion):
    """A run folder's ``per_class.csv`` (class, accuracy, support: its test images) and ``confusion.csv``."""
    run_dir = Path(run_dir)
    write_csv(pd.DataFrame({"class": list(classes), "accuracy": accuracy, "support": np.asarray(confusion).sum(axis=1)}),
              run_dir / "per_class.csv")
    write_csv(confusion_frame(confusion, classes), run_dir / "confusion.csv")


def plot_curves(history: pd.DataFrame, path: str | os.PathLike, title: str = ""):
    """Training loss and zero-shot accuracy per epoch, side by side, as a PNG (drawn by :mod:`.curves`)."""
    from .curves import Panel, Series, line_charts

    evaluated = history.dropna(subset=["zeroshot_top1"])
    loss = Panel("training loss", "epoch", "training loss", integer_x=True,
                 series=[Series("training loss", history["epoch"].tolist(), history["train_loss"].tolist())])
    accuracy = Panel("zero-shot on the test split", "epoch", "accuracy", ylim=(0, 1), legend=True, integer_x=True,
                     series=[Series(label, evaluated["epoch"].tolist(), evaluated[column].tolist())
                             for column, label in (("zeroshot_top1", "top-1"), ("zeroshot_top5", "top-5"),
                                                   ("mean_per_class_recall", "mean per-class recall"))])
    atomic_write_bytes(path, line_charts([loss, accuracy], title))
