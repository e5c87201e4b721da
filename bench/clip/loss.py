"""Contrastive losses: CLIP's symmetric InfoNCE, and a multi-positive variant for class-level captions."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def contrastive_loss(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor | None = None,
                     label_smoothing: float = 0.0, offset: int = 0) -> torch.Tensor:
    """Symmetric cross-entropy over the image-text similarity matrix; pair ``i`` is row ``i``'s positive.

    ``logits_per_text`` defaults to the transpose of ``logits_per_image``. ``label_smoothing`` as in
    :func:`torch.nn.functional.cross_entropy` (0: CLIP's loss). ``offset``: row ``i``'s positive is column
    ``offset + i`` (one rank's rows against every rank's columns).
    """
    if logits_per_text is None:
        logits_per_text = logits_per_image.t()
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device) + offset
    return (F.cross_entropy(logits_per_image, targets, label_smoothing=label_smoothing)
            + F.cross_entropy(logits_per_text, targets, label_smoothing=label_smoothing)) / 2


def multipositive_loss(logits_per_image: torch.Tensor, labels: torch.Tensor,
                       logits_per_text: torch.Tensor | None = None, col_labels: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Symmetric cross-entropy where every pair of the same class is a positive.

    The target of a row is uniform over the columns of its class (as in SupCLIP-style multi-positive
    losses): in CIFAR-10 a batch of 32 holds about three captions per class, which plain CLIP would push
    apart as negatives. ``label_smoothing`` mixes that target with the uniform one over all columns, as
    :func:`torch.nn.functional.cross_entropy` does with one-hot targets.
    """
    if logits_per_text is None:
        logits_per_text = logits_per_image.t()
    col_labels = labels if col_labels is None else col_labels
    same = labels[:, None] == col_labels[None, :]
    return (_multipositive_ce(logits_per_image, same, label_smoothing)
            + _multipositive_ce(logits_per_text, same.t(), label_smoothing)) / 2


def _multipositive_ce(logits: torch.Tensor, positives: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean over rows of the cross-entropy against a target uniform over the row's ``positives`` (bool mask),
    mixed with weight ``label_smoothing`` with the uniform target over all columns."""
    target = positives.to(logits.dtype)
    target = target / target.sum(1, keepdim=True)
    if label_smoothing:
        target = (1 - label_smoothing) * target + label_smoothing / logits.shape[1]
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


class ClipLoss(nn.Module):
    """Loss from normalised features: ``kind`` is ``"clip"`` or ``"multipositive"``.

    Returns the scalar loss, or ``{"contrastive_loss": loss}`` with ``output_dict=True``. With
    ``world_size > 1`` (one instance per rank), each rank scores its own rows against every rank's
    columns, gathered with gradient, as open_clip's ``local_loss`` + ``gather_with_grad``: the mean of
    the ranks' losses, and DDP's mean of their gradients, equal one process's over the whole batch.
    """

    def __init__(self, kind: str = "clip", rank: int = 0, world_size: int = 1, label_smoothing: float = 0.0):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.kind = kind
        self.rank = rank
        self.world_size = world_size
        self.label_smoothing = label_smoothing

    def forward(self, image_features, text_features, logit_scale, labels=None, output_dict=False):
        if self.world_size > 1:
            loss = self._local_loss(image_features, text_features, logit_scale, labels)
        else:
            logits_per_image = logit_scale * image_features @ text_features.t()
            if self.kind == "clip":
                loss = contrastive_loss(logits_per_image, label_smoothing=self.label_smoothing)
            else:
                loss = multipositive_loss(logits_per_image, labels, label_smoothing=self.label_smoothing)
        return {"contrastive_loss": loss} if output_dict else loss

    def _local_loss(self, image_features, text_features, logit_scale, labels):
        from ..distributed.collectives import gather, gather_with_grad

        logits_per_image = logit_scale * image_features @ gather_with_grad(text_features).t()
        logits_per_text = logit_scale * text_features @ gather_with_grad(image_features).t()
        if self.kind == "clip":  # this rank's pairs sit at columns rank * B ...
            return contrastive_loss(logits_per_image, logits_per_text, self.label_smoothing,
                                    offset=self.rank * len(image_features))
        # both directions have this rank's rows against every rank's columns, so they share the mask
        same = labels[:, None] == gather(labels)[None, :]
        return (_multipositive_ce(logits_per_image, same, self.label_smoothing)
                + _multipositive_ce(logits_per_text, same, self.label_smoothing)) / 2


LOSSES = ("clip", "multipositive")
