"""Class-level image<->text retrieval on a classification test split (CLIP_benchmark's recall@k, with
positives defined by class).

Protocol: the gallery of texts is every prompt of the evaluation template set filled with every class
name (``n_classes * n_templates`` captions, each encoded on its own, not averaged); the gallery of
images is the test split. A pair is positive when the caption names the image's class, so a query is a
hit at ``k`` when any of its ``k`` best-scored gallery items is of the right class. Scores are cosine
similarities; ties rank by gallery index (see :mod:`bench.evaluation.metrics`).

- image -> text: each test image queries the captions. With C classes and T templates a class owns T
  of the C*T captions, so R@k for k >= (C-1)*T + 1 is 1 by construction.
- text -> image: each caption queries the test images; R@k counts captions whose k nearest images
  include one of their class.
"""
from __future__ import annotations

import torch

from .metrics import recall_at_k

KS = (1, 5, 10)


def retrieval_metrics(image_feats: torch.Tensor, image_labels: torch.Tensor, text_feats: torch.Tensor,
                      text_labels: torch.Tensor, ks=KS) -> dict[str, float]:
    """``retrieval_i2t_r{k}`` and ``retrieval_t2i_r{k}`` from normalised features and class labels."""
    scores = image_feats.float() @ text_feats.float().t()  # (images, texts)
    positives = image_labels[:, None] == text_labels[None, :]
    i2t = recall_at_k(scores, positives, ks)
    t2i = recall_at_k(scores.t(), positives.t(), ks)
    return {**{f"retrieval_i2t_r{k}": v for k, v in i2t.items()},
            **{f"retrieval_t2i_r{k}": v for k, v in t2i.items()}}


def caption_labels(n_classes: int, n_templates: int, device=None) -> torch.Tensor:
    """Class of each caption in :func:`bench.clip.templates.fill` order (class-major)."""
    return torch.arange(n_classes, device=device).repeat_interleave(n_templates)
