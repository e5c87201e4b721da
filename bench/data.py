"""Datasets as uint8 arrays, the device-resident training loader, and the spec's per-sample dataset.

The engine (:class:`DeviceLoader`) follows airbench's ``CifarLoader``: the whole uint8 split lives on the
training device as one tensor; shuffling, random flip, padded random crop, normalisation to [-1, 1] and
the choice of a caption template run batched on that tensor, with a generator on the device, so the
training loop does no per-image Python work. :class:`CIFARCLIPDataset` + :func:`collate_fn` keep the
reference implementation's per-sample path (torchvision transforms through a DataLoader).
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BenchError
from .io import load_array_pickle

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ArrayDataset:
    images: np.ndarray  # uint8 (N, H, W, 3), RGB
    labels: np.ndarray  # int64 (N,)
    classes: tuple  # class names, index = label
    name: str = ""

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise BenchError(f"dataset {self.name!r}: images must be uint8 (N, H, W, 3), got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise BenchError(f"dataset {self.name!r}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise BenchError(f"dataset {self.name!r}: labels outside 0..{len(self.classes) - 1}")
        self.classes = tuple(self.classes)

    def __len__(self):
        return len(self.labels)

    def subset(self, limit: int | None) -> "ArrayDataset":
        """The first ``limit`` samples (all when None): a fixed, reproducible subset."""
        if limit is None or limit >= len(self):
            return self
        return ArrayDataset(self.images[:limit], self.labels[:limit], self.classes, self.name)


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------------------
def default_data_dir() -> Path:
    return Path(os.environ.get("BENCH_DATA_DIR", "~/.cache/cifar10")).expanduser()


def _load_npz(path: Path, name: str) -> ArrayDataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            return ArrayDataset(f["images"], f["labels"], CIFAR10_CLASSES, name)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BenchError(f"{path} is not a readable CIFAR-10 .npz ({type(exc).__name__}); unpack it again "
                         f"or point --data-dir at a folder with train.npz/test.npz") from None


def _load_batches(folder: Path, split: str, name: str) -> ArrayDataset:
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for file in files:
        with open(folder / file, "rb") as f:
            # the official python pickles hold only dicts of arrays and lists: anything else is refused
            entry = load_array_pickle(f)
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(entry["labels"])
    return ArrayDataset(np.ascontiguousarray(np.concatenate(images)), np.asarray(labels), CIFAR10_CLASSES, name)


def load_cifar10(split: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> ArrayDataset:
    """CIFAR-10 from ``data_dir``: ``train.npz``/``test.npz``, or torchvision's ``cifar-10-batches-py/``,
    downloading the latter with torchvision when neither is there and ``download`` is set."""
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    name = f"cifar10/{split}"
    if (folder / f"{split}.npz").is_file():
        return _load_npz(folder / f"{split}.npz", name)
    batches = folder / "cifar-10-batches-py"
    if not batches.is_dir() and download:
        try:
            import torchvision

            torchvision.datasets.CIFAR10(str(folder), train=(split == "train"), download=True)
        except Exception:  # noqa: BLE001 - offline, or a mirror failure: fall through to the message
            pass
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

    Deterministic in ``(split, seed)``; train and test draw from different streams.
    """
    n = SYNTHETIC_SIZES[split] if n is None else n
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    labels = rng.integers(0, 10, size=n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = labels * (np.pi / 10)
    freq = rng.uniform(2.0, 4.0, size=n) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi, size=n)
    proj = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    wave = 0.5 + 0.5 * np.sin(freq[:, None, None] * proj + phase[:, None, None])  # (n, H, W) in [0, 1]
    contrast = rng.uniform(0.6, 1.0, size=n)[:, None, None, None]
    background = rng.uniform(0, 80, size=(n, 1, 1, 3)).astype(np.float32)
    colour = _SYNTHETIC_RGB[labels][:, None, None, :]
    img = background + contrast * wave[..., None] * (colour - background)
    img += rng.normal(0, 20, size=img.shape)
    images = np.clip(img, 0, 255).astype(np.uint8)
    return ArrayDataset(images, labels, SYNTHETIC_CLASSES, f"synthetic/{split}")


# ---------------------------------------------------------------------------------------------------------
# The engine: device-resident batches
# ---------------------------------------------------------------------------------------------------------
def to_device_uint8(images: np.ndarray, device) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor on ``device`` (one copy, pinned when going to CUDA)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    if torch.device(device).type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def normalize(images_uint8: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> [-1, 1], as ``Normalize(mean=0.5, std=0.5)`` after ``ToTensor``."""
    return images_uint8.to(dtype).mul_(2 / 255).sub_(1)


def batch_flip_crop(images: torch.Tensor, generator: torch.Generator, pad: int = 4,
                    shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Random horizontal flip and random crop with zero padding ``pad``, for a whole uint8 NCHW batch.

    Same distribution as torchvision's ``RandomCrop(H, padding=pad)`` + ``RandomHorizontalFlip()`` per image.
    With ``shard=(rank, world)`` the batch is rank ``rank``'s slice of a global batch ``world`` times as
    large: the draws are made for the global batch and sliced, so ranks augment independently.
    """
    n = images.shape[0]
    if pad <= 0:
        flip = _shard_draw(torch.rand(n * shard[1], generator=generator, device=images.device), n, shard) < 0.5
        return torch.where(flip[:, None, None, None], images.flip(3), images)
    rows = torch.arange(n, device=images.device)
    return flip_crop_rows(pad_both_ways(images, pad), rows, generator, pad, shard)


def pad_both_ways(images: torch.Tensor, pad: int) -> torch.Tensor:
    """``(2, N, C, H + 2 pad, W + 2 pad)``: the zero-padded images, and the same mirrored left-right."""
    padded = F.pad(images, (pad, pad, pad, pad))
    return torch.stack([padded, padded.flip(3)])


def flip_crop_rows(padded2: torch.Tensor, idx: torch.Tensor, generator: torch.Generator, pad: int,
                   shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Rows ``idx`` of a :func:`pad_both_ways` set, each flipped at random and cropped at a random offset.

    One indexing op does gather, flip and crop: a strided view holds every ``(dy, dx)`` window of every
    image in both orientations, and image i reads window ``(flip_i, dy_i, dx_i)``. Draws are made for the
    global batch and sliced by ``shard``, as in :func:`batch_flip_crop`.
    """
    n = len(idx)
    device = padded2.device
    h, w = padded2.shape[3] - 2 * pad, padded2.shape[4] - 2 * pad
    flip = _shard_draw(torch.rand(n * shard[1], generator=generator, device=device), n, shard) < 0.5
    shifts = _shard_draw(torch.randint(0, 2 * pad + 1, (2, n * shard[1]), generator=generator, device=device), n, shard)
    windows = padded2.unfold(3, h, 1).unfold(4, w, 1)  # (2, N, C, 2p+1, 2p+1, H, W), no copy
    return windows[flip.long(), idx, :, shifts[0], shifts[1]]


def _shard_draw(draws: torch.Tensor, n: int, shard: tuple[int, int]) -> torch.Tensor:
    """This rank's ``n`` draws (last dim) of those made for the global batch: all of them when alone, so a
    single process draws the same stream as before sharding existed."""
    return draws[..., shard[0] * n:(shard[0] + 1) * n]


def cutout_masks(n: int, size: int, side: int, generator: torch.Generator, shard: tuple[int, int] = (0, 1),
                 device=None) -> torch.Tensor:
    """``(n, 1, size, size)`` bool masks, each a ``side`` x ``side`` square at a uniformly random place inside
    the image (airbench's ``make_random_square_masks``). Draws are made for the global batch and sliced by
    ``shard``, as in :func:`batch_flip_crop`."""
    corners = _shard_draw(torch.randint(0, size - side + 1, (2, n * shard[1]), generator=generator, device=device),
                          n, shard)
    span = torch.arange(size, device=device)
    dy = span.view(1, size, 1) - corners[0].view(-1, 1, 1)
    dx = span.view(1, 1, size) - corners[1].view(-1, 1, 1)
    return ((dy >= 0) & (dy < side) & (dx >= 0) & (dx < side)).unsqueeze(1)


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) normalised, on the device
    labels: torch.Tensor  # (B,) int64
    prompt_ids: torch.Tensor  # (B,) index into the run's prompt table: label * n_templates + template


class DeviceLoader:
    """Training batches drawn from a uint8 split held on ``device``.

    Each epoch is a device ``randperm``; the last partial batch is dropped so every step has one shape.
    ``generator`` (on ``device``) drives order, augmentation and template choice, so its state plus the
    epoch and step pins down every batch (exact resume).

    ``shard=(rank, world)``: every rank holds the same generator and makes the draws of the global batch
    (``world * batch_size`` images), keeping its slice. Rank ``r``'s step ``i`` is therefore exactly slice
    ``r`` of step ``i`` of one process with batch ``world * batch_size``; the stream depends on the global
    batch only, so a run can resume under another number of ranks with the same global batch.

    Augmentation: random flip and random crop with zero padding ``pad``, then, if ``cutout``, one random
    ``cutout`` x ``cutout`` square of each normalised image set to 0 (:func:`cutout_masks`).
    """

    def __init__(self, data: ArrayDataset, batch_size: int, device, n_templates: int, generator: torch.Generator,
                 augment: bool = True, dtype=torch.float32, channels_last: bool = False, pad: int = 4,
                 shard: tuple[int, int] = (0, 1), cutout: int = 0):
        if batch_size > len(data):
            raise BenchError(f"batch size {batch_size} is larger than the {len(data)} training images; "
                             f"lower --batch-size or raise --limit-train")
        self.images = to_device_uint8(data.images, device)
        # padded and mirrored once for the whole split (airbench's epoch-0 precompute; twice the uint8 set),
        # so gather + flip + crop of a batch is one indexing op
        self.padded = pad_both_ways(self.images, pad) if augment and pad > 0 else None
        self.labels = torch.as_tensor(data.labels, device=device)
        self.batch_size = batch_size
        self.n_templates = n_templates
        self.generator = generator
        self.augment = augment
        self.dtype = dtype
        self.channels_last = channels_last
        self.pad = pad
        self.cutout = cutout if augment else 0
        self.rank, self.world = shard
        self.device = torch.device(device)

    def __len__(self):
        return len(self.labels) // self.world // self.batch_size

    def epoch_permutation(self) -> torch.Tensor:
        """One epoch's permutation of the whole split, the same on every rank (what a checkpoint saves)."""
        return torch.randperm(len(self.labels), generator=self.generator, device=self.device)

    def epoch_order(self, perm: torch.Tensor | None = None) -> torch.Tensor:
        """This rank's indices for one epoch: every rank draws the same permutation; of each global batch
        of ``world * batch_size`` consecutive indices, rank ``r`` takes the ``r``-th ``batch_size``.
        ``perm`` replays a saved permutation, possibly drawn under another number of ranks."""
        perm = self.epoch_permutation() if perm is None else perm
        steps = perm[:len(self) * self.world * self.batch_size].view(len(self), self.world, self.batch_size)
        return steps[:, self.rank].reshape(-1)

    def make_batch(self, idx: torch.Tensor) -> Batch:
        shard = (self.rank, self.world)
        if self.padded is not None:
            images = flip_crop_rows(self.padded, idx, self.generator, self.pad, shard)
        elif self.augment:
            images = batch_flip_crop(self.images[idx], self.generator, self.pad, shard)
        else:
            images = self.images[idx]
        images = normalize(images, self.dtype)
        if self.cutout:  # blanked to 0, the middle of [-1, 1]
            images = images.masked_fill(cutout_masks(len(idx), images.shape[-1], self.cutout, self.generator, shard,
                                                     self.device), 0.0)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = self.labels[idx]
        templates = _shard_draw(torch.randint(0, self.n_templates, (len(idx) * self.world,), generator=self.generator,
                                              device=self.device), len(idx), (self.rank, self.world))
        return Batch(images, labels, labels * self.n_templates + templates)

    def __iter__(self):
        return self.iter_from(0, self.epoch_order())

    def iter_from(self, step: int, order: torch.Tensor):
        for i in range(step, len(self)):
            yield self.make_batch(order[i * self.batch_size:(i + 1) * self.batch_size])


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
    ``CIFAR10``). Items are ``(image_tensor, caption, label)``; :func:`collate_fn` tokenizes captions.
    """

    def __init__(self, base, class_names=CIFAR10_CLASSES, templates=None, transform=None):
        from .templates import SEED_TEMPLATES

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
    from .tokenizer import tokenize

    images, captions, labels = zip(*batch)
    tokens = tokenizer(list(captions)) if tokenizer is not None else tokenize(list(captions))
    return torch.stack(images), tokens, torch.tensor(labels)
