"""Runs for the tests: the tiny flags, one finished tiny run, stopping at a chosen step, comparing two runs bit for
bit, and snapshots of a folder."""
from __future__ import annotations

import contextlib
import gc
import glob
import hashlib
import os
import warnings
from pathlib import Path

import pandas as pd
import torch

# A tiny CLIP for CPU tests: the text tower shrunk, the vision tower at width 8.
TINY = ["--embed-dim", "32", "--text-width", "32", "--text-layers", "1", "--text-heads", "2",
        "--encoder-opt", "width=8", "--no-progress"]
# A tiny CLIP text tower and a one-epoch, one-step run on the synthetic set; the encoder is left as built.
TINY_RUN = ["--dataset", "synthetic", "--epochs", "1", "--limit-train", "4", "--limit-test", "4", "--batch-size", "4",
            "--embed-dim", "16", "--text-width", "32", "--text-layers", "1", "--text-heads", "2", "--no-progress",
            "--no-checkpoints"]
# 2 epochs x 8 steps of batch 8 on 64 synthetic images: seconds on one CPU thread. The cutout puts its draws in
# the loader's stream too, so exact resume covers them. The loss is logged every 3 steps, which does not divide
# the epoch, so train_log.csv has rows both at log steps and at epoch ends for resume to reproduce.
FLAGS = ["--dataset", "synthetic", "--epochs", "2", "--limit-train", "64", "--limit-test", "64", "--batch-size", "8",
         "--cutout", "8", "--device", "cpu", "--log-every", "3", *TINY]
# Columns of history.csv that are timings, so differ between identical runs.
TIMING = ["epoch_seconds", "images_per_s", "elapsed_seconds", "eval_seconds"]
METRICS = ["zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "final_train_loss", "best_epoch",
           "best_zeroshot_top1", "train_images"]
# Columns only some runs have (--holdout-classes, --target): compared where the first run's row has them.
FEATURE_METRICS = ["unseen_classes", "seen_top1", "unseen_top1", "harmonic_top1", "reached_target",
                   "epochs_to_target", "skipped_steps"]
# Columns of a --transfer row that its evaluation measured.
TRANSFER_METRICS = ["zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "n_classes", "test_images"]


def finished_run(base: Path) -> Path:
    """A results folder holding one finished tiny run (made once per session, reused by path)."""
    out = base / "finished"
    if not (out / "runs.csv").is_file():
        from bench.cli import main
        from bench.host.manager import set_host

        previous = set_host(None)
        try:
            main(["run", *FLAGS, "--out", str(out)])
        finally:
            set_host(previous)
    return out


def stop_at_ask(monkeypatch, ask: int):
    """A stop request (as SIGINT) at the run loop's ``ask``-th stop check: the loop asks after every step and once
    more at each epoch end. ``monkeypatch.undo()`` lets the next run go on unstopped."""
    from bench.engine import faults

    asked = []

    def agreed(self, collective_point):
        asked.append(collective_point)
        if len(asked) == ask:
            self.requested = "SIGINT"
        return self.requested is not None

    monkeypatch.setattr(faults.StopRequest, "agreed", agreed)


def run_dir_of(out: Path) -> Path:
    """The folder of the one run trained in results folder ``out`` (its --transfer rows' folders, named
    ``<run id>@<dataset>``, are :func:`transfer_dirs_of`)."""
    (path,) = [p for p in glob.glob(str(out / "runs" / "*")) if "@" not in Path(p).name]
    return Path(path)


def transfer_dirs_of(out: Path) -> dict:
    """``@<dataset>`` (the part after the run id) -> folder, for each --transfer row's folder in ``out``."""
    found = (Path(p) for p in glob.glob(str(out / "runs" / "*@*")))
    return {"@" + p.name.split("@", 1)[1]: p for p in found}


def history(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv").drop(columns=TIMING)


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _cells(row: pd.Series, columns: list) -> dict:
    """``row``'s ``columns``, a blank cell as None (NaN is never equal to itself, so two blanks would differ)."""
    return {c: None if pd.isna(row.get(c)) else row.get(c) for c in columns}


def assert_same_run(a: Path, b: Path) -> pd.Series:
    """The runs in results folders ``a`` and ``b`` are the same run bit for bit: history (all but timings),
    loss log, metrics (held-out and target columns too, where the run has them), predictions, every weight tensor,
    and each --transfer row's metrics and predictions; returns ``b``'s runs.csv row."""
    dir_a, dir_b = run_dir_of(a), run_dir_of(b)
    pd.testing.assert_frame_equal(history(dir_a), history(dir_b), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(dir_a / "train_log.csv"), pd.read_csv(dir_b / "train_log.csv"),
                                  check_exact=True)
    rows_a, rows_b = (pd.read_csv(x / "runs.csv").set_index("run_id", drop=False) for x in (a, b))
    row_a, row_b = rows_a.loc[dir_a.name], rows_b.loc[dir_b.name]
    columns = METRICS + [c for c in FEATURE_METRICS if c in row_a.index]
    assert _cells(row_a, columns) == _cells(row_b, columns)
    assert (dir_a / "predictions.npy").read_bytes() == (dir_b / "predictions.npy").read_bytes()
    away_a, away_b = transfer_dirs_of(a), transfer_dirs_of(b)
    assert away_a.keys() == away_b.keys()
    for suffix in away_a:
        ta, tb = rows_a.loc[dir_a.name + suffix], rows_b.loc[dir_b.name + suffix]
        assert _cells(ta, TRANSFER_METRICS) == _cells(tb, TRANSFER_METRICS), suffix
        assert (away_a[suffix] / "predictions.npy").read_bytes() == (away_b[suffix] / "predictions.npy").read_bytes()
    ours, theirs = weights(dir_a / "last.pt"), weights(dir_b / "last.pt")
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []
    return row_b


def snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder``: equal snapshots, nothing was written, replaced or removed.

    Small files are hashed; for large ones (checkpoints) size, mtime and inode show any write, since an
    in-place write moves the mtime and an atomic replace brings a new inode.
    """
    if not folder.exists():
        return {}
    state = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_dir():
            state[rel] = "dir"
            continue
        if path.is_symlink() and not path.exists():  # a dangling link: what it points at
            state[rel] = ("link", os.readlink(path))
            continue
        st = path.stat()
        state[rel] = (st.st_size, st.st_mtime_ns, st.st_ino,
                      hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size < 1 << 20 else None)
    return state


@contextlib.contextmanager
def files_left_open(collect: bool = True):
    """The files left open inside the block (the ResourceWarnings of those closed by deallocation, or by the garbage
    collection run at its end), as a list filled when it ends. ``collect=False`` skips the collection (about 0.2 s
    with torch loaded): only files whose last reference went within the block are found."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield found
        if collect:
            gc.collect()
    found += [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
