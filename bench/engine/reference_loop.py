"""The reference implementation's loop functions over a plain DataLoader of ``(images, tokens, labels)``.

These keep the spec's names and shapes for people porting code; ``bench run`` uses the device-resident
engine in :mod:`bench.engine.train_step`, which computes the same loss faster.
"""
from __future__ import annotations

import torch

from ..clip.loss import contrastive_loss


def train_epoch(model, dataloader, optimizer, device="cpu", scheduler=None, loss_fn=contrastive_loss) -> float:
    """One pass over ``dataloader`` (batches from :func:`bench.collate_fn`); returns the mean loss."""
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
def validate(model, dataloader, device="cpu", loss_fn=contrastive_loss) -> dict:
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
    return {"loss": loss_sum / max(batches, 1), "accuracy": correct / max(seen, 1)}
