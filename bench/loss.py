"""Contrastive losses: CLIP's symmetric InfoNCE, and a multi-positive variant for class-level captions."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def contrastive_loss(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric cross-entropy over the image-text similarity matrix; pair ``i`` is row ``i``'s positive.

    ``logits_per_text`` defaults to the transpose of ``logits_per_image``.
    """
    if logits_per_text is None:
        logits_per_text = logits_per_image.t()
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2


def multipositive_loss(logits_per_image: torch.Tensor, labels: torch.Tensor,
                       logits_per_text: torch.Tensor | None = None, col_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric cross-entropy where every pair of the same class is a positive.

    The target of a row is uniform over the columns of its class (as in SupCLIP-style multi-positive
    losses): in CIFAR-10 a batch of 32 holds about three captions per class, which plain CLIP would push
    apart as negatives.
    """
    if logits_per_text is None:
        logits_per_text = logits_per_image.t()
    col_labels = labels if col_labels is None else col_labels
    same = (labels[:, None] == col_labels[None, :]).to(logits_per_image.dtype)
    loss_i = -(same / same.sum(1, keepdim=True) * F.log_softmax(logits_per_image, dim=1)).sum(1).mean()
    same_t = same.t()
    loss_t = -(same_t / same_t.sum(1, keepdim=True) * F.log_softmax(logits_per_text, dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


class ClipLoss(nn.Module):
    """Loss from normalised features: ``kind`` is ``"clip"`` or ``"multipositive"``.

    Returns the scalar loss, or ``{"contrastive_loss": loss}`` with ``output_dict=True``.
    """

    def __init__(self, kind: str = "clip"):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        self.kind = kind

    def forward(self, image_features, text_features, logit_scale, labels=None, output_dict=False):
        logits_per_image = logit_scale * image_features @ text_features.t()
        if self.kind == "clip":
            loss = contrastive_loss(logits_per_image)
        else:
            loss = multipositive_loss(logits_per_image, labels)
        return {"contrastive_loss": loss} if output_dict else loss


LOSSES = ("clip", "multipositive")
