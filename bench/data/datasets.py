"""Datasets as uint8 arrays (CIFAR-10, the learnable synthetic set), and the spec's per-sample dataset.

The training loader is :mod:`bench.data.loader`. :class:`CIFARCLIPDataset` + :func:`collate_fn` keep the
reference implementation's per-sample path (torchvision transforms through a DataLoader).
"""
from __future__ import annotations

import copy
import os
import pickle
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import BenchError, ContractError
from ..safe_load import load_array_pickle
from .download import download_once

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# the ``info`` keys a row records (run rows and transfer rows alike)
ROW_INFO = ("data_split", "resize_interpolation", "source_image_size")


@dataclass
class ArrayDataset:
    images: np.ndarray  # uint8 (N, H, W, 3), RGB
    labels: np.ndarray  # int64 (N,)
    classes: tuple  # class names, index = label
    name: str = ""
    # how the arrays were made, for the run's row: ``data_split`` (how train and test were told apart, where a
    # dataset chose it), ``resize_interpolation`` and ``source_image_size`` (set by bench.data.resize)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ContractError(f"dataset {self.name!r}: images must be uint8 (N, H, W, 3), got "
                                f"{self.images.dtype} {tuple(self.images.shape)}")
        given = np.asarray(self.labels)
        self.labels = given.astype(np.int64, copy=False)
        if given.dtype.kind == "f" and not np.array_equal(self.labels, given):  # 0.5 would silently become 0
            raise ContractError(f"dataset {self.name!r}: labels must be integers, got {given.dtype} values such as "
                                f"{given[self.labels != given][0]}")
        if len(self.labels) != len(self.images):
            raise ContractError(f"dataset {self.name!r}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ContractError(f"dataset {self.name!r}: labels {self.labels.min()}..{self.labels.max()} but "
                                f"{len(self.classes)} class names; give one class name per label, labels 0..n-1")
        self.classes = tuple(self.classes)

    def __len__(self):
        return len(self.labels)

    def subset(self, limit: int | None) -> "ArrayDataset":
        """The first ``limit`` samples (all when None): a fixed, reproducible subset."""
        if limit is None or limit >= len(self):
            return self
        return ArrayDataset(self.images[:limit], self.labels[:limit], self.classes, self.name, dict(self.info))


def with_images(data: ArrayDataset, dataset: str, split: str) -> ArrayDataset:
    """``data`` where it holds an image: a split of none (a plugin's filter, an empty file) would otherwise end in a
    traceback from evaluation or the loader, after the run had started writing."""
    if not len(data):
        raise BenchError(f"dataset {dataset!r} has no images in its {split} split; check --dataset, --data-dir and "
                         f"--data-opt (or the plugin that makes it)")
    return data


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------------------
def default_data_dir() -> Path:
    return Path(os.environ.get("BENCH_DATA_DIR", "~/.cache/cifar10")).expanduser()


def _load_npz(path: Path, name: str) -> ArrayDataset:
    try:
        # opened here, not by np.load: numpy leaves its own file open when the zip is damaged
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as f:
            return ArrayDataset(f["images"], f["labels"], CIFAR10_CLASSES, name)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BenchError(f"{path} is not a readable CIFAR-10 .npz ({type(exc).__name__}); unpack it again "
                         f"or point --data-dir at a folder with train.npz/test.npz") from None
    except ContractError as exc:  # the file's arrays, not a plugin's: name the file, not bench_plugins.datasets
        raise BenchError(f"{path} is not a CIFAR-10 .npz: {exc}; unpack it again or point --data-dir at a folder "
                         f"with train.npz/test.npz") from None


def _batch_files(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _load_batches(folder: Path, split: str, name: str) -> ArrayDataset:
    images, labels = [], []
    for file in _batch_files(split):
        with open(folder / file, "rb") as f:
            # the official python pickles hold only dicts of arrays and lists: anything else is refused
            entry = load_array_pickle(f)
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(entry["labels"])
    return ArrayDataset(np.ascontiguousarray(np.concatenate(images)), np.asarray(labels), CIFAR10_CLASSES, name)


def _download_cifar10(folder: Path, split: str):
    import torchvision

    torchvision.datasets.CIFAR10(str(folder), train=(split == "train"), download=True)


def load_cifar10(split: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> ArrayDataset:
    """CIFAR-10 from ``data_dir``: ``train.npz``/``test.npz``, or torchvision's ``cifar-10-batches-py/``,
    downloading the latter with torchvision when the split's files are missing and ``download`` is set."""
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    name = f"cifar10/{split}"
    if (folder / f"{split}.npz").is_file():
        return _load_npz(folder / f"{split}.npz", name)
    batches = folder / "cifar-10-batches-py"
    if download:
        # each of the split's files, not the folder alone: a folder an older download left part way is completed
        download_once(folder, "CIFAR-10", lambda: all((batches / f).is_file() for f in _batch_files(split)),
                      lambda staging: _download_cifar10(staging, split), [batches.name])
    if batches.is_dir():
        try:
            return _load_batches(batches, split, name)
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise BenchError(f"{batches} is damaged or not the CIFAR-10 release ({type(exc).__name__}: "
                             f"{str(exc)[:80]}); delete it to download again, or pass --data-dir with "
                             f"train.npz/test.npz") from None
    raise BenchError(f"CIFAR-10 not found in {folder}: run once with network access to download it "
                     f"(torchvision layout cifar-10-batches-py/), or pass --data-dir DIR holding train.npz/test.npz")


# ---------------------------------------------------------------------------------------------------------
# Synthetic: a learnable 10-class set the project generates itself
# ---------------------------------------------------------------------------------------------------------
SYNTHETIC_CLASSES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "gray")
_SYNTHETIC_RGB = np.array([
    [220, 40, 40], [240, 140, 30], [230, 220, 40], [50, 180, 60], [40, 210, 210],
    [40, 70, 220], [130, 50, 190], [240, 120, 190], [130, 80, 40], [128, 128, 128],
], dtype=np.float32)
SYNTHETIC_SIZES = {"train": 5000, "test": 1000}


def make_synthetic(split: str, seed: int = 0, n: int | None = None, size: int = 32) -> ArrayDataset:
    """Class ``k`` is a grating of colour ``k`` at orientation ``k * 18`` degrees, with random phase,
    frequency, contrast, a random background and Gaussian noise: learnable, but not from one pixel.

    Deterministic in ``(split, seed, n, size)``; train and test draw from different streams. The pixels are made
    on first use, and ``subset(limit)`` makes only the first ``limit`` images (:class:`_SyntheticSet`).
    """
    return _SyntheticSet(_SyntheticRecipe(split, seed, SYNTHETIC_SIZES[split] if n is None else n, size))


class _SyntheticRecipe:
    """Every random draw of one synthetic set, in its order: each per-image parameter for all ``n`` images, then
    the pixel noise image after image. The noise comes last and is drawn in order, so the first ``k`` images
    need only the first ``k`` images' noise: :meth:`images` makes them without drawing the rest."""

    CHUNK = 256  # images computed at a time: each chunk's float64 temporaries stay in cache

    def __init__(self, split: str, seed: int, n: int, size: int):
        self.split, self.size = split, size
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        self.labels = rng.integers(0, 10, size=n)
        self.freq = rng.uniform(2.0, 4.0, size=n) * 2 * np.pi
        self.phase = rng.uniform(0, 2 * np.pi, size=n)
        self.contrast = rng.uniform(0.6, 1.0, size=n)
        self.background = rng.uniform(0, 80, size=(n, 1, 1, 3)).astype(np.float32)
        self.noise_rng = rng  # where the noise of image 0 starts; each call of images() reads a copy

    def images(self, k: int) -> np.ndarray:
        """The set's first ``k`` images, equal bit for bit to the first ``k`` of all ``n``: every operation is
        elementwise, and the noise stream is read in the same order."""
        size = self.size
        rng = copy.deepcopy(self.noise_rng)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        theta = self.labels[:k] * (np.pi / 10)
        cos, sin = np.cos(theta), np.sin(theta)
        out = np.empty((k, size, size, 3), dtype=np.uint8)
        for a in range(0, k, self.CHUNK):
            b = min(a + self.CHUNK, k)
            proj = cos[a:b, None, None] * xx + sin[a:b, None, None] * yy
            wave = 0.5 + 0.5 * np.sin(self.freq[a:b, None, None] * proj + self.phase[a:b, None, None])  # in [0, 1]
            background = self.background[a:b]
            colour = _SYNTHETIC_RGB[self.labels[a:b]][:, None, None, :]
            img = background + self.contrast[a:b, None, None, None] * wave[..., None] * (colour - background)
            img += rng.normal(0, 20, size=img.shape)
            np.clip(img, 0, 255, out=img)
            out[a:b] = img  # float -> uint8 truncates, as astype(np.uint8) does
        return out


class _SyntheticSet(ArrayDataset):
    """A synthetic split whose images are made when first read, and only those kept: a smoke run's
    ``subset(256)`` of the 5000 training images makes 256 (equal to the first 256 of the 5000)."""

    def __init__(self, recipe: _SyntheticRecipe, limit: int | None = None):
        self._recipe, self._images = recipe, None
        self.labels = recipe.labels if limit is None else recipe.labels[:limit]
        self.classes, self.name, self.info = SYNTHETIC_CLASSES, f"synthetic/{recipe.split}", {}

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = self._recipe.images(len(self.labels))
        return self._images

    def subset(self, limit: int | None) -> ArrayDataset:
        if limit is None or limit >= len(self) or self._images is not None:
            return super().subset(limit)
        return _SyntheticSet(self._recipe, limit)


# ---------------------------------------------------------------------------------------------------------
# The reference implementation's per-sample path
# ---------------------------------------------------------------------------------------------------------
def reference_transform(train: bool = True):
    """torchvision transforms of the reference recipe: flip + padded crop (train), then [-1, 1]."""
    from torchvision import transforms

    ops = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
    return transforms.Compose(ops + [transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])


class CIFARCLIPDataset(torch.utils.data.Dataset):
    """Pairs each image with a caption: a template of its class drawn at random (the spec's dataset).

    ``base`` is an :class:`ArrayDataset` or any dataset yielding ``(PIL image, label)`` (torchvision's
    ``CIFAR10``). Items are ``(image_tensor, caption, label)``; :func:`collate_fn` tokenizes captions. The
    arguments come in the reference's order, ``(base, class_names, transform)``; ``templates`` is bench's.
    """

    def __init__(self, base, class_names=CIFAR10_CLASSES, transform=None, templates=None):
        from ..clip.templates import SEED_TEMPLATES

        self.base = base
        self.class_names = list(class_names)
        self.templates = list(templates or SEED_TEMPLATES)
        self.transform = transform if transform is not None else reference_transform(train=True)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if isinstance(self.base, ArrayDataset):
            from PIL import Image

            image, label = Image.fromarray(self.base.images[i]), int(self.base.labels[i])
        else:
            image, label = self.base[i]
        caption = random.choice(self.templates).format(self.class_names[label])
        return self.transform(image), caption, label


def collate_fn(batch, tokenizer=None):
    """Stack images, tokenize captions (default tokenizer), and return ``(images, tokens, labels)``."""
    from ..clip.tokenizer import tokenize

    images, captions, labels = zip(*batch)
    tokens = tokenizer(list(captions)) if tokenizer is not None else tokenize(list(captions))
    return torch.stack(images), tokens, torch.tensor(labels)
