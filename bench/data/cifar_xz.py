"""Read the project's offline CIFAR-10 copy (``data_batch_N.xz``, ``test_batch.xz``) into train/test .npz.

The format (as the copy's own ``unpack.py`` describes it): each file is ``lzma(labels + residuals)``; the
residuals are a lossless transform of the pixels, channel-major: colour decorrelation (G, R-G, B-G mod
256) followed by the LOCO-I median predictor. Decoding undoes the predictor row by row, then the colour
transform. Only numpy and lzma are needed, so a machine with the .xz files and this repository can make
the .npz files ``bench`` loads (``--data-dir``); the GPU check uses it because three .xz files fit the
GPU machine's upload limit where the .npz files would not.
"""
from __future__ import annotations

import hashlib
import lzma
from pathlib import Path

import numpy as np

# sha256 of images.tobytes() + labels.tobytes() for the full sets, from the copy's unpack.py
SHA256 = {
    "train": "f912919bdea371136f1aa4feed6beeca728015a5f08b1899a29c932a7e30be2b",
    "test": "8193b3fbce55bec361cd1b8fd4880cb1649832dc4d6de6da1e7a21847a4843aa",
}


def _median_predict(a, b, c):
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def _predict(y: np.ndarray, i: int, j: int, zero: np.ndarray) -> np.ndarray:
    """LOCO-I's prediction of pixel (i, j) of every image and channel from its left, upper, upper-left pixels."""
    left = y[:, :, i, j - 1] if j else zero
    up = y[:, :, i - 1, j] if i else zero
    diag = y[:, :, i - 1, j - 1] if (i and j) else zero
    return _median_predict(left, up, diag)


def decode(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decompressed bytes -> (uint8 images (N, 32, 32, 3) RGB, uint8 labels (N,))."""
    n = len(raw) // (1 + 3 * 32 * 32)
    labels = np.frombuffer(raw[:n], np.uint8).copy()
    residual = np.frombuffer(raw[n:], np.uint8).reshape(3, n, 32, 32).astype(np.int16)
    y = np.zeros_like(residual)
    zero = np.zeros((3, n), np.int16)
    for i in range(32):  # in raster order: each prediction reads pixels already decoded
        for j in range(32):
            y[:, :, i, j] = (residual[:, :, i, j] + _predict(y, i, j, zero)) % 256
    g = y[0]
    images = np.stack([(y[1] + g) % 256, g, (y[2] + g) % 256], -1).astype(np.uint8)
    return images, labels


def encode(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The inverse of :func:`decode` (uncompressed), for tests and for making small files in the format."""
    img = images.astype(np.int16)
    g = img[..., 1]
    y = np.stack([g, (img[..., 0] - g) % 256, (img[..., 2] - g) % 256])  # (3, N, 32, 32)
    zero = np.zeros((3, len(labels)), np.int16)
    residual = np.zeros_like(y)
    for i in range(32):
        for j in range(32):
            residual[:, :, i, j] = (y[:, :, i, j] - _predict(y, i, j, zero)) % 256
    return labels.astype(np.uint8).tobytes() + residual.astype(np.uint8).tobytes()


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()


def unpack(src, dest: str | Path) -> dict:
    """Decode the ``*.xz`` batches in folder(s) ``src`` into ``dest/train.npz`` (whichever training batches
    are there, each once) and ``dest/test.npz``; full sets are checked against their checksums. Returns the
    image counts per split."""
    folders = [Path(src)] if isinstance(src, (str, Path)) else [Path(f) for f in src]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for folder in folders:
        for f in sorted(folder.glob("*.xz")):
            found.setdefault(f.name, f)
    counts = {}
    train_names = sorted(n for n in found if n.startswith("data_batch_"))
    for split, names in (("train", train_names), ("test", [n for n in ("test_batch.xz",) if n in found])):
        if not names:
            continue
        parts = [decode(lzma.decompress(found[n].read_bytes())) for n in names]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        complete = len(labels) == (50000 if split == "train" else 10000)  # checksums exist for full sets only
        if complete and digest(images, labels) != SHA256[split]:
            raise ValueError(f"{split} set from {', '.join(map(str, folders))} does not match its checksum")
        np.savez(dest / f"{split}.npz", images=images, labels=labels)
        counts[split] = len(labels)
    return counts
