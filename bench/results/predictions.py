"""``predictions.npy``: each test image's label and zero-shot top-1 class, for paired tests between runs.

One structured array, ``label`` and ``top1`` per image in test-split order, in the smallest integer
type that holds the class ids (int8 for CIFAR-10: 20 kB for the 10,000 test images). It loads with
``allow_pickle=False``; two runs pair image by image only when their labels are equal.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..atomic_files import atomic_write_bytes

FILENAME = "predictions.npy"


def _int_type(n_classes: int):
    return next(t for t in (np.int8, np.int16, np.int32) if n_classes <= np.iinfo(t).max + 1)


def save_predictions(path: Path, labels, top1, n_classes: int):
    """Write ``labels`` and ``top1`` (class ids of the same test images) atomically."""
    dtype = _int_type(n_classes)
    table = np.empty(len(labels), dtype=[("label", dtype), ("top1", dtype)])
    table["label"], table["top1"] = np.asarray(labels), np.asarray(top1)
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def load_predictions(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(labels, top1)``, or None when the file is missing or not a predictions table."""
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if table.dtype.names != ("label", "top1") or table.ndim != 1:
        return None
    return table["label"].astype(np.int64), table["top1"].astype(np.int64)
