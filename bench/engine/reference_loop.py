"""The reference implementation's loop functions over a plain DataLoader of ``(images, tokens, labels)``.

These keep the spec's names and shapes for people porting code; ``bench run`` uses the device-resident
engine in :mod:`bench.engine.train_step`, which computes the same loss faster.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..clip.loss import contrastive_loss


class Validation(NamedTuple):
    """What :func:`validate` measured: unpacks as the reference's ``val_loss, val_accuracy = validate(...)``, and
    reads by name (``result.loss``, ``result["accuracy"]``)."""

    loss: float
    accuracy: float

    def __getitem__(self, key):
        return getattr(self, key) if isinstance(key, str) else tuple.__getitem__(self, key)


def train_epoch(model, dataloader, optimizer, device="cpu", epoch=None, *, scheduler=None,
                loss_fn=contrastive_loss) -> float:
    """One pass over ``dataloader`` (batches from :func:`bench.collate_fn`); returns the mean loss. The reference's
    call, ``train_epoch(model, loader, optimizer, device, epoch)``, works as is (``epoch`` only names the pass);
    ``scheduler`` (stepped after every batch) and ``loss_fn`` are bench's, by keyword."""
    model.train()
    total, batches = torch.zeros((), device=device), 0
    for images, tokens, _labels in dataloader:
        images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
        logits_per_image, logits_per_text = model(images, tokens)
        loss = loss_fn(logits_per_image, logits_per_text)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach()
        batches += 1
    return float(total) / max(batches, 1)


@torch.no_grad()
def validate(model, dataloader, device="cpu", loss_fn=contrastive_loss) -> Validation:
    """Mean loss and in-batch matching accuracy (an image's most similar caption is its own) over ``dataloader``."""
    model.eval()
    loss_sum, correct, seen, batches = 0.0, 0, 0, 0
    for images, tokens, _labels in dataloader:
        logits_per_image, logits_per_text = model(images.to(device), tokens.to(device))
        loss_sum += float(loss_fn(logits_per_image, logits_per_text))
        targets = torch.arange(len(images), device=logits_per_image.device)
        correct += int((logits_per_image.argmax(dim=1) == targets).sum())
        seen += len(images)
        batches += 1
    return Validation(loss_sum / max(batches, 1), correct / max(seen, 1))
