"""Small copies of the published datasets, written in the exact on-disk formats torchvision reads (a few images per
class), image folders written from arrays, and a slow fake download: the offline stand-ins of the real downloads."""
from __future__ import annotations

import os
import pickle
import struct
import time
from pathlib import Path

import numpy as np

from bench.clip.dataset_prompts import CIFAR100_CLASSES, CIFAR100_COARSE_NAMES, STL10_CLASSES


def _images(rng, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _labels(n_classes: int, per_class: int, rng) -> np.ndarray:
    """Every class ``per_class`` times, shuffled: each class present, in no particular order."""
    return rng.permutation(np.repeat(np.arange(n_classes), per_class))


def write_cifar10(root: Path, per_batch: int = 2, seed: int = 0) -> dict:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch}`` as the release's python pickles (protocol 2);
    returns each split's (images, labels)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        images = _images(rng, per_batch * len(files), 32)
        labels = rng.integers(0, 10, len(images))
        for k, file in enumerate(files):
            rows = slice(k * per_batch, (k + 1) * per_batch)
            entry = {"batch_label": file, "labels": labels[rows].tolist(),
                     "data": images[rows].transpose(0, 3, 1, 2).reshape(per_batch, -1)}
            (folder / file).write_bytes(pickle.dumps(entry, protocol=2))
        out[split] = (images, labels)
    return out


def write_cifar100(root: Path, per_class=(2, 1), seed: int = 0) -> dict:
    """``root/cifar-100-python/{train,test,meta}`` as the release's python pickles (protocol 2, as the Python 2
    originals); returns each split's (images, fine labels, coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    coarse_names = list(CIFAR100_COARSE_NAMES)
    meta = {"fine_label_names": [c.replace(" ", "_") for c in CIFAR100_CLASSES], "coarse_label_names": coarse_names}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    out = {}
    for split, k in zip(("train", "test"), per_class):
        fine = _labels(100, k, rng)
        coarse = fine % 20
        images = _images(rng, len(fine), 32)
        entry = {"filenames": [f"img_{i}.png" for i in range(len(fine))], "batch_label": f"{split} batch",
                 "fine_labels": fine.tolist(), "coarse_labels": coarse.tolist(),
                 "data": images.transpose(0, 3, 1, 2).reshape(len(fine), -1)}  # rows of R, then G, then B planes
        (folder / split).write_bytes(pickle.dumps(entry, protocol=2))
        out[split] = (images, fine, coarse)
    return out


def write_stl10(root: Path, per_class=(2, 1), seed: int = 0, class_names: bool = True) -> dict:
    """``root/stl10_binary/{split}_X.bin`` (uint8, each image channel by channel, column by column),
    ``{split}_y.bin`` (labels 1..10) and ``class_names.txt``; returns each split's (images, labels 0..9)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    if class_names:
        (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    out = {}
    for split, k in zip(("train", "test"), per_class):
        labels = _labels(10, k, rng)
        images = _images(rng, len(labels), 96)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        out[split] = (images, labels)
    return out


def write_svhn(root: Path, per_class=(2, 1), seed: int = 0) -> dict:
    """``root/{split}_32x32.mat`` as the release's MATLAB files: X (32, 32, 3, N) uint8 and y (N, 1) with 10 for
    the digit 0; returns each split's (images, digits)."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    out = {}
    for split, k in zip(("train", "test"), per_class):
        digits = _labels(10, k, rng)
        images = _images(rng, len(digits), 32)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        savemat(str(Path(root) / f"{split}_32x32.mat"), {"X": images.transpose(1, 2, 3, 0), "y": y})
        out[split] = (images, digits)
    return out


def _idx(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, each as a big-endian int32."""
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape) + array.tobytes()


def write_mnist(root: Path, folder: str = "MNIST", per_class=(2, 1), seed: int = 0, gz: bool = False) -> dict:
    """``root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (``folder`` MNIST or FashionMNIST), the
    unpacked files torchvision reads (``gz``: only the ``.gz`` files instead); returns each split's (28 x 28 uint8
    images, labels)."""
    import gzip

    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, k in zip(("train", "test"), ("train", "t10k"), per_class):
        labels = _labels(10, k, rng).astype(np.uint8)
        gray = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        for name, array in ((f"{prefix}-images-idx3-ubyte", gray), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = _idx(array)
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / name).write_bytes(data)
        out[split] = (gray, labels.astype(np.int64))
    return out


def write_image_folder(folder: Path, images: np.ndarray, labels: np.ndarray, classes, suffix: str = ".png"):
    """``folder/<class>/<index>.png``: one file per image, in torchvision's ImageFolder layout."""
    from PIL import Image

    folder = Path(folder)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folder / classes[int(label)] / f"{i:06d}{suffix}")


def slow_download(write, log: Path, seconds: float = 0.3):
    """A stand-in for a download (a torchvision dataset class, or a release's ``download``): it takes ``seconds``,
    then writes the files with ``write(root)``. Each call adds a line to the file ``log``, "overlapping download"
    when another call was still running then (a marker file next to ``log``, so calls in other processes count)."""
    def download(root, *args, **kwargs):
        busy = f"{log}.busy"
        try:
            os.close(os.open(busy, os.O_CREAT | os.O_EXCL))
            alone = True
        except FileExistsError:
            alone = False
        with open(log, "a") as f:
            f.write("download\n" if alone else "overlapping download\n")
        time.sleep(seconds)
        write(root)
        if alone:
            os.unlink(busy)

    return download


def download_log(log: Path) -> list:
    """The lines :func:`slow_download` wrote: one per call."""
    return log.read_text().splitlines() if log.exists() else []


def load_cifar100_in_a_process(root: Path, log: Path, barrier, results):
    """A child process's part: once ``barrier`` lets every process go, CIFAR-100's train split from ``root``, its
    download a :func:`slow_download`; puts ``(images, labels)`` or the error's repr on the queue ``results``. Here,
    not in the test module, so a spawned child need not import torchvision."""
    from dataclasses import replace

    from bench.data.torchvision_sets import CIFAR100, load

    barrier.wait()
    try:
        data = load(replace(CIFAR100, download=slow_download(write_cifar100, log, seconds=0.5)), "cifar100", "train",
                    root)
        results.put((data.images, data.labels))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))
