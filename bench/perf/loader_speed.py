"""The data engine against the reference per-sample pipeline: training batches per second, side by side.

Both produce what a training step consumes: augmented images in [-1, 1] (random crop with 4 px of
zero padding, random flip) and the 77-or-fewer token ids of one random template per image.

- device: :class:`bench.data.loader.DeviceLoader` over the uint8 split held as one tensor (batched gather,
  flip and crop in one ``gather``, normalise, template ids), then the prompt table's rows for its ids;
- torchvision: the spec's ``CIFARCLIPDataset`` (PIL image -> RandomCrop, RandomHorizontalFlip,
  ToTensor, Normalize per sample) through a ``DataLoader`` with the spec's ``collate_fn`` (tokenizes
  each batch's captions).
"""
from __future__ import annotations

import statistics
import time

import torch

from ..data.datasets import ArrayDataset, CIFARCLIPDataset, collate_fn
from ..data.loader import DeviceLoader


def device_loader(data: ArrayDataset, batch_size: int, table: torch.Tensor, device="cpu", seed=0) -> DeviceLoader:
    """The loader a run builds once (the split copied to the device as uint8): built outside any timing."""
    return DeviceLoader(data, batch_size, device, table.shape[0] // len(data.classes),
                        torch.Generator(device=device).manual_seed(seed))


def device_batches(loader: DeviceLoader, n_batches: int, table: torch.Tensor):
    """Yield ``n_batches`` (images, tokens, labels) from the device loader (epochs restart as needed)."""
    done = 0
    while True:
        for batch in loader:
            yield batch.images, table[batch.prompt_ids], batch.labels
            done += 1
            if done == n_batches:
                return


def torchvision_batches(data: ArrayDataset, batch_size: int, n_batches: int, num_workers: int = 0):
    """Yield ``n_batches`` (images, tokens, labels) from the per-sample reference pipeline."""
    dataset = CIFARCLIPDataset(data, class_names=data.classes)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collate_fn, num_workers=num_workers)
    done = 0
    while True:
        for batch in loader:
            yield batch
            done += 1
            if done == n_batches:
                return


def images_per_second(batches) -> float:
    """Drain an iterator of batches; images per second of wall time."""
    seen, start = 0, time.perf_counter()
    for images, _tokens, _labels in batches:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def side_by_side(data: ArrayDataset, table: torch.Tensor, batch_size: int = 32, rounds: int = 3,
            device_batches_per_round: int = 200, torchvision_batches_per_round: int = 20) -> list[dict]:
    """Interleaved rounds (device, torchvision, device, ...): one row per round and path."""
    rows = []
    loader = device_loader(data, batch_size, table)
    images_per_second(device_batches(loader, 2, table))  # first-call costs (imports, caches) out of the rounds
    images_per_second(torchvision_batches(data, batch_size, 2))
    for r in range(rounds):
        rows.append({"round": r, "path": "device", "images_per_s":
                     images_per_second(device_batches(loader, device_batches_per_round, table))})
        rows.append({"round": r, "path": "torchvision", "images_per_s":
                     images_per_second(torchvision_batches(data, batch_size, torchvision_batches_per_round))})
    return rows


def ratio(rows: list[dict]) -> float:
    """median(device images/s) / median(torchvision images/s)."""
    def med(path):
        return statistics.median(r["images_per_s"] for r in rows if r["path"] == path)

    return med("device") / med("torchvision")
