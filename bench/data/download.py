"""A dataset's files downloaded once per folder, and put in place whole: of the runs that find them missing at the
same time (``bench sweep --workers`` or ``--concurrent``, the ranks of ``torchrun``, which each load the data), one
downloads while the others wait, and then all read its files.

torchvision writes a download in place: the archive is opened with "wb", so a second download truncates the
first's under it, and extracted file by file. Two downloads into one folder at once could leave a damaged archive or
half-written files. The lock is a file in the data folder, ``.<title>-download.lock``, taken only when the files are
missing and removed after the download (:func:`bench.atomic_files.transient_lock`); files that are there are read
without it, after waiting for any download that holds it.

A download killed part way (SIGKILL, Ctrl-C, a full disk) must not leave a partial dataset that the next run takes
for the whole: torchvision downloads and extracts into a staging folder inside the data folder,
``.<title>-download-<pid>-<random>/``, and only when it has finished are the dataset's files and folders moved into
place, each with one rename (same file system), so a reader finds a folder either missing or complete. The staging
folder goes afterwards with what else torchvision left in it, its archive: with each download in a fresh staging
folder torchvision would never find it again, and the files it held are what is kept. A staging folder left by a
killed process is hidden, never read, and removed by the next download of that dataset (under the lock, no other
download is running).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from ..atomic_files import remove_empty, transient_lock, wait_while_locked


def download_once(root: Path, title: str, present: Callable[[], bool], download: Callable[[Path], None],
                  names: Iterable[str]) -> None:
    """Call ``download(folder)`` unless ``present()``, one caller at a time for the dataset ``title`` in ``root``; a
    caller that waited checks ``present()`` again first. ``download`` fills a new staging folder in ``root``; once it
    returns, the dataset's ``names`` (files and folders at the top of ``root``) move from there into ``root``, and the
    staging folder is removed. A failed download is left to the caller's not-found message; it leaves nothing."""
    lock = root / f".{title}-download.lock"
    if present():
        wait_while_locked(lock)  # files that are there may still be moved in by a download that found them missing
        return
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(transient_lock(lock))
            locked = True
        except OSError:
            # no lock can be made here (a folder this user cannot write, a file system without flock): download
            # unlocked, as before. Where the lock file cannot be made, neither can the staging folder, so the
            # download fails into the not-found line; refusing instead would stop a lone run that works.
            locked = False
        if present():  # the caller this one waited for downloaded them
            return
        made = [p for p in [root, *root.parents] if not p.exists()]  # only without the lock, which makes root
        staging = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            if locked:  # no other download of this dataset is running: any staging folder is a killed one's
                for stale in root.glob(f".{title}-download-*"):
                    shutil.rmtree(stale, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{title}-download-{os.getpid()}-", dir=root))
            download(staging)
            for name in names:
                if (staging / name).exists():
                    _place(staging / name, root / name)
        except Exception:  # noqa: BLE001 - offline, or a mirror failure: the caller says what is missing
            pass
        finally:  # also on Ctrl-C: what was downloaded so far goes
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            remove_empty(made)


def _place(source: Path, target: Path):
    """Move ``source`` to ``target`` with one rename, or, where a folder is already there (files of an older
    download that missed some), each file into it with one rename: every file read is whole."""
    if source.is_dir() and target.is_dir() and not target.is_symlink():
        for child in source.iterdir():
            _place(child, target / child.name)
    else:
        os.replace(source, target)
