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
place, each with one rename (same file system), so a reader finds a folder either missing or complete. Where a
folder of the dataset is already there (files of an older download that missed some), each file moves into it with
one rename, so a reader finds a file either missing or complete. A folder or file of the dataset that is a link (a
dataset kept on a big disk, linked into the data folder) stays a link: what it points to is completed, as a real
folder is. Where that is another file system, where no rename reaches, each file or folder is copied under a hidden
name beside its place (``.<title>-download-<pid>-<random>``) and then renamed there: whole again. The staging
folder goes afterwards with what else torchvision left in it, its archive: with each download in a fresh staging
folder torchvision would never find it again, and the files it held are what is kept. A staging folder, or a copy
in the dataset's folders, left by a killed process is hidden, never read, and removed by the next download of that
dataset (under the lock, no other download is running).
"""
from __future__ import annotations

import contextlib
import errno
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
        names, staging, prefix = list(names), None, f".{title}-download-"
        try:
            root.mkdir(parents=True, exist_ok=True)
            if locked:  # no other download of this dataset is running: any staging folder or copy is a killed one's
                for stale in _leftovers(root, names, prefix):
                    if stale.is_dir() and not stale.is_symlink():
                        shutil.rmtree(stale, ignore_errors=True)
                    else:
                        stale.unlink(missing_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))
            download(staging)
            for name in names:
                if (staging / name).exists():
                    _place(staging / name, root / name, prefix)
        except Exception:  # noqa: BLE001 - offline, or a mirror failure: the caller says what is missing
            pass
        finally:  # also on Ctrl-C: what was downloaded so far goes
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            remove_empty(made)


def _leftovers(root: Path, names: list, prefix: str) -> list:
    """The staging folders in ``root``, and the copies in the dataset's folders (links followed: the copies go where
    they point), named with ``prefix``: what killed downloads of the dataset left."""
    found, seen = list(root.glob(f"{prefix}*")), set()
    for top in (root / name for name in names):
        for folder, dirs, files in os.walk(top, followlinks=True):
            real = os.path.realpath(folder)
            if real in seen:  # a link back up the tree would walk forever
                dirs.clear()
                continue
            seen.add(real)
            found += [Path(folder, n) for n in dirs + files if n.startswith(prefix)]
            dirs[:] = [d for d in dirs if not d.startswith(prefix)]
    return found


def _place(source: Path, target: Path, prefix: str):
    """Move ``source`` to ``target`` whole, or, where a folder is already there (files of an older download that
    missed some), each file into it whole: every file read is whole. A link at ``target`` stays, and what it points
    to is completed or replaced. Across file systems, a copy under a hidden name (``prefix``) beside the target is
    renamed onto it."""
    if target.is_symlink():  # a rename onto the link would fail (a folder) or replace it (a file)
        target = Path(os.path.realpath(target))
    if source.is_dir() and target.is_dir():
        for child in source.iterdir():
            _place(child, target / child.name, prefix)
        return
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_into_place(source, target, prefix)


def _copy_into_place(source: Path, target: Path, prefix: str):
    """``source`` (a file or a folder) copied to a hidden name beside ``target``, then renamed onto it: whole where
    no rename from ``source`` reaches. A copy stopped by an error or Ctrl-C is removed."""
    if source.is_dir():
        copy = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", dir=target.parent)
        os.close(fd)
        copy = Path(name)
    try:
        if source.is_dir():
            shutil.copytree(source, copy, dirs_exist_ok=True)  # its mode and times too, as a rename keeps them
        else:
            shutil.copy2(source, copy)
            with open(copy, "rb+") as f:  # on disk before the rename makes it the file: a crash leaves the copy
                os.fsync(f.fileno())
        os.replace(copy, target)
    except BaseException:
        if copy.is_dir():
            shutil.rmtree(copy, ignore_errors=True)
        else:
            copy.unlink(missing_ok=True)
        raise
