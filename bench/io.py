"""Atomic, locked file writes and safe checkpoint loading."""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pickle
import tempfile
from pathlib import Path

import torch

from .errors import BenchError


def atomic_write_bytes(path: str | os.PathLike, data: bytes):
    """Write to a temp file in the same folder, fsync, then rename over ``path``: readers see old or new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)``: tensors and plain containers only; pickled code is refused."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"checkpoint {str(path)!r} does not exist; pass a .pt file written by bench run")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = " ".join(str(exc).split())[:160]
        raise BenchError(f"checkpoint {str(path)!r} was refused: it holds pickled objects other than tensors and "
                         f"plain data ({reason}); only load files you trust, and re-save them as a state dict") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise BenchError(f"checkpoint {str(path)!r} is not a readable torch file ({type(exc).__name__}); "
                         f"it may be truncated or not a checkpoint") from None
    if not isinstance(obj, dict):
        raise BenchError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a dict; pass a bench checkpoint "
                         f"or an OpenAI-layout state dict")
    return obj
