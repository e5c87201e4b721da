"""The device-resident training loader: the whole uint8 split on the device, batches augmented there.

It follows airbench's ``CifarLoader``: shuffling, random flip, padded random crop, cutout, normalisation to
[-1, 1] and the choice of a caption template run batched on one tensor, with a generator on the device, so
the training loop does no per-image Python work.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BenchError
from .datasets import ArrayDataset


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
                    shard: tuple[int, int] = (0, 1), flip: torch.Tensor | None = None) -> torch.Tensor:
    """Random horizontal flip and random crop with zero padding ``pad``, for a whole uint8 NCHW batch.

    Same distribution as torchvision's ``RandomCrop(H, padding=pad)`` + ``RandomHorizontalFlip()`` per image.
    With ``shard=(rank, world)`` the batch is rank ``rank``'s slice of a global batch ``world`` times as
    large: the draws are made for the global batch and sliced, so ranks augment independently. ``flip`` (a bool
    per image) replaces the random flips (alternating flips, :class:`DeviceLoader`).
    """
    n = images.shape[0]
    if pad <= 0:
        if flip is None:
            flip = _shard_draw(torch.rand(n * shard[1], generator=generator, device=images.device), n, shard) < 0.5
        return torch.where(flip[:, None, None, None], images.flip(3), images)
    rows = torch.arange(n, device=images.device)
    return flip_crop_rows(pad_both_ways(images, pad), rows, generator, pad, shard, flip)



def pad_both_ways(images: torch.Tensor, pad: int) -> torch.Tensor:
    """``(2, N, C, H + 2 pad, W + 2 pad)``: the zero-padded images, and the same mirrored left-right."""
    padded = F.pad(images, (pad, pad, pad, pad))
    return torch.stack([padded, padded.flip(3)])



def flip_crop_rows(padded2: torch.Tensor, idx: torch.Tensor, generator: torch.Generator, pad: int,
                   shard: tuple[int, int] = (0, 1), flip: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``idx`` of a :func:`pad_both_ways` set, each flipped at random and cropped at a random offset.

    One indexing op does gather, flip and crop: a strided view holds every ``(dy, dx)`` window of every
    image in both orientations, and image i reads window ``(flip_i, dy_i, dx_i)``. Draws are made for the
    global batch and sliced by ``shard``, as in :func:`batch_flip_crop`; ``flip`` as there.
    """
    n = len(idx)
    device = padded2.device
    h, w = padded2.shape[3] - 2 * pad, padded2.shape[4] - 2 * pad
    if flip is None:
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

    ``flip="alternate"`` (airbench): which images epoch 0 flips is drawn once, at construction, so a resumed run
    draws it again identically; epoch ``e`` flips those images when ``e`` is even and the others when it is odd.
    Every image is then seen both ways in any two consecutive epochs, which random flips only do half the time.
    """

    def __init__(self, data: ArrayDataset, batch_size: int, device, n_templates: int, generator: torch.Generator,
                 augment: bool = True, dtype=torch.float32, channels_last: bool = False, pad: int = 4,
                 shard: tuple[int, int] = (0, 1), cutout: int = 0, flip: str = "random"):
        ranks = shard[1]
        if batch_size > len(data):
            raise BenchError(f"batch size {batch_size} is larger than the {len(data)} training images; "
                             f"lower --batch-size or raise --limit-train")
        if batch_size * ranks > len(data):  # each rank would get no whole batch: an epoch of no steps
            raise BenchError(f"the global batch, {ranks} ranks x {batch_size}, is larger than the {len(data)} "
                             f"training images; lower --batch-size or raise --limit-train")
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
        if flip not in ("random", "alternate"):
            raise BenchError(f"flip must be random or alternate, got {flip!r}")
        self.first_flips = (torch.rand(len(self.labels), generator=generator, device=self.device) < 0.5
                            if augment and flip == "alternate" else None)

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

    def flips(self, idx: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """Alternating flips of images ``idx`` in epoch ``epoch`` (0-based); None for random ones."""
        if self.first_flips is None:
            return None
        return self.first_flips[idx] ^ bool(epoch % 2)

    def make_batch(self, idx: torch.Tensor, epoch: int = 0) -> Batch:
        shard, flip = (self.rank, self.world), self.flips(idx, epoch)
        if self.padded is not None:
            images = flip_crop_rows(self.padded, idx, self.generator, self.pad, shard, flip)
        elif self.augment:
            images = batch_flip_crop(self.images[idx], self.generator, self.pad, shard, flip)
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

    def iter_from(self, step: int, order: torch.Tensor, epoch: int = 0):
        for i in range(step, len(self)):
            yield self.make_batch(order[i * self.batch_size:(i + 1) * self.batch_size], epoch)
