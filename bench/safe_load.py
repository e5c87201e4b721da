"""Loading files that cannot run code: checkpoints through ``torch.load(weights_only=True)`` and data pickles
that may hold only containers and numpy arrays."""
from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path

import torch

from .errors import BenchError


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
    if path.is_dir():
        inside = next((f"{path / n}" for n in ("last.pt", "best.pt") if (path / n).is_file()), None)
        raise BenchError(f"checkpoint {str(path)!r} is a folder; pass a .pt file written by bench run"
                         + (f", e.g. {inside}" if inside else ""))
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
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, struct.error) as exc:  # a truncated pickle too
        raise BenchError(f"checkpoint {str(path)!r} is not a readable torch file ({type(exc).__name__}); "
                         f"it may be truncated or not a checkpoint") from None
    if not isinstance(obj, dict):
        raise BenchError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a dict; pass a bench checkpoint "
                         f"or an OpenAI-layout state dict")
    return obj
