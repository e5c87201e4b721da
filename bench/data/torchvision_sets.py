"""CIFAR-100 (fine and coarse labels), STL-10, SVHN, MNIST and Fashion-MNIST as uint8 RGB arrays, read from the
files torchvision's own dataset classes download.

Each reads ``--data-dir`` (default ``$BENCH_DATASETS_DIR``, else ``~/.cache/bench/datasets``) in torchvision's
layout: ``cifar-100-python/{train,test,meta}``, ``stl10_binary/{train,test}_{X,y}.bin``, ``{train,test}_32x32.mat``
(SVHN), ``MNIST/raw/*-ubyte`` and ``FashionMNIST/raw/*-ubyte``. The folder inside (``.../cifar-100-python``) works
too. When a split's files are missing, torchvision's class downloads them (``download=True``) into a staging folder,
and they are moved into place once complete (:mod:`bench.data.download`); offline, the one-line error says both
ways to provide them, as CIFAR-10's does.

The files are parsed here rather than through torchvision's classes: the CIFAR pickles go through
:func:`bench.safe_load.load_array_pickle` (a data file cannot run code), and no md5 is checked, so a copy made by
other means (or a test's small archive in the same format) reads the same. Grayscale digits and clothes are
repeated into three channels. Images stay at their own size (STL-10 96 px, MNIST 28 px); a run resizes them once
(:mod:`bench.data.resize`).
"""
from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..clip.dataset_prompts import (CIFAR100_CLASSES, CIFAR100_COARSE_NAMES, DIGIT_CLASSES, FASHION_MNIST_CLASSES,
                                    STL10_CLASSES)
from ..errors import BenchError
from ..safe_load import load_array_pickle
from .datasets import ArrayDataset
from .download import download_once

SPLITS = ("train", "test")


def default_root() -> Path:
    """Where the datasets of this module live without ``--data-dir``: one folder for all, in torchvision's layout."""
    return Path(os.environ.get("BENCH_DATASETS_DIR", "~/.cache/bench/datasets")).expanduser()


@dataclass(frozen=True)
class Release:
    """One published dataset as torchvision lays it out under a root folder."""

    title: str  # as error messages name it: "CIFAR-100"
    layout: str  # what a root holds, for messages: "cifar-100-python/"
    inner: str  # the folder inside the root that holds the files ("" for files in the root itself)
    files: Callable[[str], tuple]  # split -> the files it reads, relative to the root, each a tuple of spellings
    read: Callable[[Path, str], tuple]  # (root, split) -> (uint8 images (N, H, W, 3), int labels, class names)
    download: Callable[[Path, str], None]  # (folder, split): torchvision's class with download=True, into folder

    def present(self, root: Path, split: str) -> bool:
        return all(any((root / f).is_file() for f in spellings) for spellings in self.files(split))

    def names(self, split: str) -> list:
        """The files and folders at the top of a root that hold the split (``MNIST``, ``train_32x32.mat``): what a
        download moves into place."""
        return sorted({Path(f).parts[0] for spellings in self.files(split) for f in spellings})


# what a damaged or foreign file raises while it is read: each becomes one "is damaged" line naming the file
_DAMAGE = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, pickle.UnpicklingError,
           zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def _reading(path: Path, release: Release):
    try:
        yield path
    except _DAMAGE + _scipy_errors() as exc:
        raise BenchError(f"{path} is damaged or not the {release.title} release ({type(exc).__name__}: "
                         f"{str(exc)[:80]}); delete it to download again, or pass --data-dir with "
                         f"{release.layout}") from None


def _scipy_errors() -> tuple:
    from scipy.io.matlab import MatReadError  # imported only once a read failed: scipy is slow to import

    return (MatReadError,)


def load(release: Release, name: str, split: str, data_dir=None, download: bool = True) -> ArrayDataset:
    """``split`` of ``release`` from ``data_dir`` (or :func:`default_root`), downloading it with torchvision first
    when its files are missing and ``download`` is set. ``name`` is the dataset's registered name."""
    if split not in SPLITS:
        raise BenchError(f"dataset {name!r} has splits train and test, not {split!r}")
    given = Path(data_dir).expanduser() if data_dir else default_root()
    # the folder inside (…/cifar-100-python, …/MNIST/raw) names the same files as its root
    candidates = [given] + list(given.parents)[:len(Path(release.inner).parts)]
    root = next((c for c in candidates if release.present(c, split)), given)
    if download:
        download_once(root, release.title, lambda: release.present(root, split),
                      lambda staging: release.download(staging, split), release.names(split))
    if not release.present(root, split):
        # without --data-dir (a --transfer dataset never takes it: that is the training set's) the folder is the default
        place = f"pass --data-dir DIR holding {release.layout}" if data_dir else \
            f"put {release.layout} in {root} (set BENCH_DATASETS_DIR to use another folder for every dataset)"
        raise BenchError(f"{release.title} not found in {root}: run once with network access to download it "
                         f"(torchvision layout {release.layout}), or {place}")
    images, labels, classes = release.read(root, split)
    return ArrayDataset(np.ascontiguousarray(images), labels, classes, f"{name}/{split}")


def _torchvision(cls: str, **kwargs) -> Callable[[Path, str], None]:
    def download(root: Path, split: str):
        import torchvision

        split_kwargs = {"train": split == "train"} if cls in ("CIFAR100", "MNIST", "FashionMNIST") else {"split": split}
        getattr(torchvision.datasets, cls)(str(root), download=True, **split_kwargs, **kwargs)

    return download


def _checked_labels(labels, n_images: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != n_images:
        raise ValueError(f"{n_images} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels outside 0..{n_classes - 1}")
    return labels


# ---------------------------------------------------------------------------------------------------------
# CIFAR-100: python pickles, fine (100) and coarse (20) labels of the same images
# ---------------------------------------------------------------------------------------------------------
def _cifar100_reader(coarse: bool):
    key, names_key = ("coarse_labels", "coarse_label_names") if coarse else ("fine_labels", "fine_label_names")
    expected = tuple(CIFAR100_COARSE_NAMES) if coarse else tuple(c.replace(" ", "_") for c in CIFAR100_CLASSES)
    classes = tuple(CIFAR100_COARSE_NAMES.values()) if coarse else CIFAR100_CLASSES

    def read(root: Path, split: str):
        folder = root / "cifar-100-python"
        with _reading(folder / "meta", CIFAR100) as path, open(path, "rb") as f:
            names = tuple(load_array_pickle(f)[names_key])
            if names != expected:  # the class names are CLIP's words for exactly these labels
                raise ValueError(f"its {names_key} are not CIFAR-100's")
        with _reading(folder / split, CIFAR100) as path, open(path, "rb") as f:
            entry = load_array_pickle(f)
            images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = _checked_labels(entry[key], len(images), len(classes))
        return images, labels, classes

    return read


CIFAR100 = Release(
    "CIFAR-100", "cifar-100-python/", "cifar-100-python",
    lambda split: (("cifar-100-python/meta",), (f"cifar-100-python/{split}",)),
    _cifar100_reader(coarse=False), _torchvision("CIFAR100"))
CIFAR100_COARSE = Release(CIFAR100.title, CIFAR100.layout, CIFAR100.inner, CIFAR100.files,
                          _cifar100_reader(coarse=True), CIFAR100.download)


# ---------------------------------------------------------------------------------------------------------
# STL-10: raw uint8 columns-first 96 x 96 images, labels 1..10
# ---------------------------------------------------------------------------------------------------------
def _read_stl10(root: Path, split: str):
    folder = root / "stl10_binary"
    names_file = folder / "class_names.txt"
    if names_file.is_file():
        with _reading(names_file, STL10) as path:
            names = tuple(path.read_text().split())
            if names != STL10_CLASSES:
                raise ValueError("its class names are not STL-10's")
    with _reading(folder / f"{split}_X.bin", STL10) as path:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % (3 * 96 * 96):
            raise ValueError(f"{raw.size} bytes is not a whole number of 3 x 96 x 96 images")
        # stored channel by channel, each column by column: (N, C, W, H) -> (N, H, W, C)
        images = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    with _reading(folder / f"{split}_y.bin", STL10) as path:
        labels = _checked_labels(np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1, len(images), 10)
    return images, labels, STL10_CLASSES


STL10 = Release("STL-10", "stl10_binary/", "stl10_binary",
                lambda split: ((f"stl10_binary/{split}_X.bin",), (f"stl10_binary/{split}_y.bin",)),
                _read_stl10, _torchvision("STL10"))


# ---------------------------------------------------------------------------------------------------------
# SVHN (cropped digits): MATLAB files, X (32, 32, 3, N), y (N, 1) with 10 for the digit 0
# ---------------------------------------------------------------------------------------------------------
def _read_svhn(root: Path, split: str):
    from scipy.io import loadmat

    with _reading(root / f"{split}_32x32.mat", SVHN) as path:
        mat = loadmat(str(path))
        x = np.asarray(mat["X"])
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise ValueError(f"X has shape {x.shape}, not (32, 32, 3, N)")
        labels = np.asarray(mat["y"]).astype(np.int64).reshape(-1)
        labels[labels == 10] = 0  # as torchvision reads them: label d is the digit d
        labels = _checked_labels(labels, x.shape[3], 10)
    return x.astype(np.uint8, copy=False).transpose(3, 0, 1, 2), labels, DIGIT_CLASSES


SVHN = Release("SVHN", "train_32x32.mat/test_32x32.mat", "", lambda split: ((f"{split}_32x32.mat",),),
               _read_svhn, _torchvision("SVHN"))


# ---------------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: IDX files (big-endian header, then uint8 data), 28 x 28 grayscale
# ---------------------------------------------------------------------------------------------------------
def _idx_names(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (torchvision reads the unpacked file; its ``.gz`` alone is read too)."""
    data = path.read_bytes() if path.is_file() else gzip.decompress(path.with_name(path.name + ".gz").read_bytes())
    if len(data) < 4 or data[0] or data[1] or data[2] != 0x08 or data[3] != ndim:
        raise ValueError(f"not an IDX file of {ndim}-d unsigned bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{body.size} bytes of data for shape {shape}")
    return body.reshape(shape)


def _mnist_release(title: str, folder: str, classes: tuple) -> Release:
    def files(split):
        return tuple((f"{folder}/raw/{n}", f"{folder}/raw/{n}.gz") for n in _idx_names(split))

    def read(root: Path, split: str):
        images_file, labels_file = (root / folder / "raw" / n for n in _idx_names(split))
        with _reading(images_file, release) as path:
            gray = _read_idx(path, 3)
        with _reading(labels_file, release) as path:
            labels = _checked_labels(_read_idx(path, 1), len(gray), len(classes))
        return np.repeat(gray[..., None], 3, axis=-1), labels, classes  # grayscale as RGB

    release = Release(title, f"{folder}/raw/", f"{folder}/raw", files, read, _torchvision(folder))
    return release


MNIST = _mnist_release("MNIST", "MNIST", DIGIT_CLASSES)
FASHION_MNIST = _mnist_release("Fashion-MNIST", "FashionMNIST", FASHION_MNIST_CLASSES)

# registered name -> release; each dataset's default template set is its registration's (bench_plugins.datasets)
RELEASES = {"cifar100": CIFAR100, "cifar100_coarse": CIFAR100_COARSE, "stl10": STL10, "svhn": SVHN, "mnist": MNIST,
            "fashion_mnist": FASHION_MNIST}


def load_dataset(name: str, split: str, data_dir=None, download: bool = True) -> ArrayDataset:
    """The built-in dataset ``name`` (a key of :data:`RELEASES`)."""
    return load(RELEASES[name], name, split, data_dir, download)
