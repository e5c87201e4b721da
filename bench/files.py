"""Atomic, locked file writes, claims on shared work, safe checkpoint loading, and the check that a folder can be
written into."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import re
import socket
import tempfile
import threading
import time
import uuid
import warnings
import zipfile
from pathlib import Path

import torch

from .errors import BenchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_CREATE_MODE = 0o666 & ~_umask()  # read once at import: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """A binary file that replaces ``path`` only once the block ends without error: temp file in the same
    folder, fsync, rename, fsync of the folder. Readers see the old or the new file, never half of one, even
    if the process is killed or the machine loses power mid-write."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _CREATE_MODE)  # mkstemp makes 0600; results are shared as open() would have made them
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
    with open(lock_path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def save_checkpoint(obj: dict, path: str | os.PathLike):
    """``torch.save`` straight into an :func:`atomic_file` (no second copy of a 600 MB checkpoint in memory)."""
    with atomic_file(path) as f:
        torch.save(obj, f)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays, and refuses every other global: a data file
    cannot make it import or call anything (the CIFAR-10 python batches need exactly these)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unsupported GLOBAL {module}.{name}")


def load_array_pickle(f, encoding: str = "latin1"):
    """``pickle.load`` for data files that hold only containers and numpy arrays; anything else is refused."""
    return _ArrayUnpickler(f, encoding=encoding).load()


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (or, in its legacy format, a pickle starting with the PROTO opcode)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


def _refusal_reason(exc: Exception) -> str:
    """The part of torch's weights_only message that names what the file wanted to import or call."""
    text = " ".join(str(exc).split())
    found = re.search(r"(unsupported (?:global: )?GLOBAL [\w.]+|Unsupported operand \d+)", text, re.IGNORECASE)
    return found.group(1) if found else text[:120]


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)``: tensors and plain containers only; pickled code is refused."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"checkpoint {str(path)!r} does not exist; pass a .pt file written by bench run")
    if not _looks_like_torch_file(path):
        raise BenchError(f"checkpoint {str(path)!r} is not a readable torch file (neither a torch zip archive nor a "
                         f"pickle); pass a .pt file written by bench run or torch.save")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files: noise here
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BenchError(f"checkpoint {str(path)!r} was refused: it holds pickled objects other than tensors and "
                         f"plain data ({_refusal_reason(exc)}); nothing in it was run. Only load files you trust, "
                         f"and re-save them as a state dict") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise BenchError(f"checkpoint {str(path)!r} is not a readable torch file ({type(exc).__name__}); "
                         f"it may be truncated or not a checkpoint") from None
    if not isinstance(obj, dict):
        raise BenchError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a dict; pass a bench checkpoint "
                         f"or an OpenAI-layout state dict")
    return obj


def check_writable_folder(out, option: str = "--out") -> Path:
    """``out`` is a folder, or can be made one: the nearest folder above it that exists is writable, not a file."""
    out = Path(out).expanduser()
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise BenchError(f"{option} {str(out)!r}: {str(existing)!r} is a file, not a folder; pass a folder for results")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BenchError(f"{option} {str(out)!r}: {str(existing)!r} is not writable; pass a writable {option}")
    return out


class Claim:
    """An exclusive claim on a piece of work that processes on any machine sharing a folder respect: the claim
    file is created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFSv3+, unlike ``flock``) and holds
    who took it. The holder refreshes its modification time every ``heartbeat`` seconds; a claim whose holder
    is gone (a dead pid on this host, or no heartbeat for ``stale_after`` seconds elsewhere) is taken over.
    """

    def __init__(self, path: str | os.PathLike, heartbeat: float = 30.0, stale_after: float = 300.0):
        self.path, self.heartbeat, self.stale_after = Path(path), heartbeat, stale_after
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the claim; False when a live holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a second try after taking over a stale claim
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _CREATE_MODE)
            except FileExistsError:
                if not self._take_over_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                                    "since": time.time()}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._thread = threading.Thread(target=self._beat, name=f"claim {self.path.name}", daemon=True)
            self._thread.start()
            return True
        return False

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = read_claim(self.path)
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()

    def _beat(self):
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _take_over_stale(self) -> bool:
        seen = read_claim(self.path)
        if seen is not None and claim_alive(self.path, seen, self.stale_after):
            return False
        # move the stale file aside (a rename succeeds for one taker only), then check it was the one judged stale
        aside = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # its holder just released it
        moved = read_claim(aside)
        if seen is not None and moved is not None and moved.get("token") != seen.get("token"):
            with contextlib.suppress(OSError):  # a fresh claim taken meanwhile: put it back, never over another
                os.link(aside, self.path)
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True


def read_claim(path: str | os.PathLike) -> dict | None:
    """A claim file's holder, or None when there is none (a half-written file reads as an anonymous holder)."""
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


def claim_alive(path: str | os.PathLike, holder: dict, stale_after: float = 300.0) -> bool:
    """Whether the process that holds the claim at ``path`` still runs: on this host, its pid; elsewhere, a
    heartbeat within ``stale_after`` seconds."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        return time.time() - os.stat(path).st_mtime < stale_after
    except FileNotFoundError:
        return False
