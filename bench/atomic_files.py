"""Writes that never leave a half-written file: atomic replace, advisory locks, and the check that a
folder can be written into."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from pathlib import Path

from .errors import BenchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


CREATE_MODE = 0o666 & ~_umask()  # read once at import: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """A binary file that replaces ``path`` only once the block ends without error: temp file in the same
    folder, fsync, rename, fsync of the folder. Readers see the old or the new file, never half of one, even
    if the process is killed or the machine loses power mid-write."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, CREATE_MODE)  # mkstemp makes 0600; results are shared as open() would have made them
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes):
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path, text: str):
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike):
    """An exclusive advisory lock on ``path + '.lock'`` (held across processes until the block ends)."""
    lock_path = f"{path}.lock"
    try:
        f = open(lock_path, "a+")
    except OSError as exc:  # a shared folder where another user made the lock file, a read-only one, a folder
        raise BenchError(f"cannot lock {path} to write it: {lock_path!r} cannot be opened for writing "
                         f"({exc.strerror}); make it a file writable for you (or delete it: bench makes it again), "
                         f"or pass another folder") from None
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def transient_lock(path: str | os.PathLike):
    """An exclusive advisory lock on the file ``path``, made (with any folders above it) when missing and removed
    again, with those folders once empty, before it is released: nothing stays behind. Threads exclude each other as
    processes do (each call opens the file anew, and flock locks an open file description). A waiter whose file was
    removed meanwhile locks the one made after it instead, so two never hold it at once. A folder is removed by the
    caller that made it: one that another caller makes again inside it just as it is removed stays (empty). Raises
    OSError where the file cannot be made or locked (a folder this user cannot write, a file system without flock)."""
    path = Path(path)
    made = set()
    try:
        while True:
            try:
                _make_folders(path.parent, made)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, CREATE_MODE)  # writable: NFS's flock needs it for LOCK_EX
            except FileNotFoundError:  # the holder before removed the folders just now: make them again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _still_linked(fd, path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
    except BaseException:
        remove_empty(made)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        remove_empty(made)
        os.close(fd)


def _make_folders(folder: Path, made: set):
    """``folder`` and the folders above it that are missing; ``made`` gets those this call made, not the ones another
    caller made at the same moment (which that caller removes)."""
    for p in reversed([folder, *folder.parents]):
        if not p.is_dir():
            try:
                p.mkdir()
            except FileExistsError:
                if os.path.lexists(p) and not p.is_dir():  # a file, a link to nothing: no retry would make it
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(p)) from None
                continue
            made.add(p)


def _still_linked(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def remove_empty(folders):
    """Each of ``folders`` that is empty, deepest first (a folder emptied by its child's removal goes too)."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):  # deepest first
        with contextlib.suppress(OSError):  # not empty, or not there: left as it is
            folder.rmdir()


def wait_while_locked(path: str | os.PathLike):
    """Return once no :func:`transient_lock` on ``path`` is held: at once when there is no such file. It makes
    nothing, so it works in a read-only folder."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:  # a file system without flock: no holder can be waited for
        pass
    finally:
        os.close(fd)  # drops the shared lock


class ProcessLock:
    """An exclusive lock on a file for as long as a process works on what it guards (a run folder): taken without
    waiting, released by :meth:`release` or by the operating system when the process ends, even by SIGKILL, so a
    lock file left behind by a killed process is not held."""

    def __init__(self, path: str | os.PathLike, tries: int = 20):
        self.path = Path(path)
        self._file = open(self.path, "a+")
        try:
            for attempt in range(tries):  # a moment's :meth:`held` probe holds it too: wait out probes, not a holder
                try:
                    fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    if attempt == tries - 1:
                        raise
                    time.sleep(0.01)
        except BaseException:  # not taken (held elsewhere, a file system without flock): no descriptor kept open
            self._file.close()
            raise

    def release(self):
        """Unlock and remove the file (removed first: a process that finds it then finds it free)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._file.close()  # closing the last descriptor drops the lock
            self._file = None

    @staticmethod
    def held(path: str | os.PathLike) -> bool:
        """Whether a process holds the lock on ``path`` now. The probe takes a shared lock: probes never see each
        other as holders (every torchrun rank probes at once), only an exclusive holder blocks them."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # a file system without flock: no holder can be known
            return False
        finally:
            os.close(fd)
        return False


def save_checkpoint(obj: dict, path: str | os.PathLike):
    """``torch.save`` straight into an :func:`atomic_file` (no second copy of a 600 MB checkpoint in memory)."""
    import torch  # here: the result tables use this module and need no torch

    with atomic_file(path) as f:
        torch.save(obj, f)


def make_folder(out, option: str = "--out", what: str = "results folder") -> Path:
    """Create ``out`` (after :func:`check_writable_folder`): a folder the permission bits allow can still be
    refused (a virtual file system such as /sys, even to root), which is then one line, not a traceback."""
    out = check_writable_folder(out, option)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create {what} {str(out)!r} ({exc.strerror}); pass a writable {option}") from None
    return out


def check_writable_folder(out, option: str = "--out", writes: bool = True) -> Path:
    """``out`` is a folder, or can be made one: the nearest folder above it that exists is writable, not a file
    (``writes=False``, for commands that only read it: not a file, writable or not)."""
    out = Path(out).expanduser()
    if out.is_symlink() and not out.exists():
        raise BenchError(f"{option} {str(out)!r} is a link to {os.readlink(out)!r}, which does not exist; create that "
                         f"folder or pass another {option}")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise BenchError(f"{option} {str(out)!r}: {str(existing)!r} is a file, not a folder; pass a folder for results")
    if writes and not os.access(existing, os.W_OK | os.X_OK):
        raise BenchError(f"{option} {str(out)!r}: {str(existing)!r} is not writable; pass a writable {option}")
    return out
