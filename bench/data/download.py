"""A dataset's files downloaded once per folder: of the runs that find them missing at the same time (``bench sweep
--workers`` or ``--concurrent``, the ranks of ``torchrun``, which each load the data), one downloads while the
others wait, and then all read its files.

torchvision writes a download in place: the archive is opened with "wb", so a second download truncates the
first's under it, and extracted file by file. Two downloads into one folder at once could leave a damaged archive or
half-written files. The lock is a file in the data folder, ``.<title>-download.lock``, taken only when the files are
missing and removed after the download (:func:`bench.atomic_files.transient_lock`); files that are there are read
without it, after waiting for any download that holds it.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from ..atomic_files import remove_empty, transient_lock, wait_while_locked


def download_once(root: Path, title: str, present: Callable[[], bool], download: Callable[[], None],
                  inner: str = "") -> None:
    """Call ``download()`` (which fills ``root``) unless ``present()``, one caller at a time for the dataset
    ``title`` in ``root``; a caller that waited checks ``present()`` again first. A failed download is left to the
    caller's not-found message; the folders it made (``root/inner`` and those above it) are removed while empty."""
    lock = root / f".{title}-download.lock"
    if present():
        wait_while_locked(lock)  # files that are there may still be written by a download that found them missing
        return
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(transient_lock(lock))
        except OSError:
            # no lock can be made here (a folder this user cannot write, a file system without flock): download
            # unlocked, as before. Where the lock file cannot be made, neither can torchvision's files, so the
            # download fails into the not-found line; refusing instead would stop a lone run that works.
            pass
        if present():  # the caller this one waited for downloaded them
            return
        made = [p for p in [root / inner, *(root / inner).parents] if not p.exists()]
        try:
            download()
        except Exception:  # noqa: BLE001 - offline, or a mirror failure: the caller says what is missing
            remove_empty(made)  # torchvision's MNIST makes MNIST/raw before it fails offline
