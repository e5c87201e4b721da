"""Classification and retrieval metrics from scores, as plain tensors and numpy (no model code).

Ties are broken by index everywhere, as ``argmax`` does: among equal scores the lower class (or gallery)
index ranks first. Top-1 is then exactly "argmax == label", and a number never depends on the order in
which a sort kernel happens to return equal values.
"""
from __future__ import annotations

import numpy as np
import torch


def label_rank(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's label among its scores: higher scores first, ties by lower index."""
    own = scores.gather(1, labels[:, None])
    index = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > own) | ((scores == own) & (index[None, :] < labels[:, None]))
    return ahead.sum(dim=1)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, torch.Tensor]:
    """Per-sample hit flags for each k: the label ranks among the k highest logits (ties by index)."""
    rank = label_rank(logits, labels)
    return {k: rank < k for k in ks}


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """``cm[i, j]`` counts samples of true class ``i`` predicted as ``j``."""
    return np.bincount(np.asarray(labels) * n_classes + np.asarray(preds), minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top-1, top-5, mean per-class recall, per-class accuracy, the confusion matrix and each sample's top-1 class
    (``predictions``, for paired tests between runs).

    A class with no test samples has recall NaN and is left out of the mean; a class that is never
    predicted has recall 0 (if it has samples) and an all-zero column in the confusion matrix.
    """
    n_classes = logits.shape[1]
    # a NaN logit is no score: ranked last, not first (NaN fails both > and ==, which would rank every label first)
    logits = logits.nan_to_num(nan=float("-inf"))
    hits = topk_correct(logits, labels, (1, 5))
    preds = logits.argmax(dim=1).cpu().numpy()
    labels_np = labels.cpu().numpy()
    cm = confusion_matrix(labels_np, preds, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    return {
        "top1": float(hits[1].float().mean()),
        "top5": float(hits[5].float().mean()),
        "mean_per_class_recall": float(np.nanmean(per_class)) if np.any(support > 0) else float("nan"),
        "per_class": per_class,
        "confusion": cm,
        "predictions": preds,
    }


def first_hit_rank(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """0-based rank of the best-ranked positive of each query row (gallery along dim 1; ties by index).

    A query with no positive gets rank ``scores.shape[1]`` (never a hit). A NaN score ranks last, as in
    :func:`classification_metrics` (a descending sort would put it first).
    """
    scores = scores.nan_to_num(nan=float("-inf"))
    # a stable descending sort keeps equal scores in index order, the same tie rule as argmax
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    hit = positives.gather(1, order)
    rank = hit.int().argmax(dim=1)  # first True; 0 when there is none, fixed below
    return torch.where(hit.any(dim=1), rank, torch.full_like(rank, scores.shape[1]))


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, ks=(1, 5, 10)) -> dict[int, float]:
    """Fraction of queries with at least one positive among their ``k`` best-scored gallery items; a query with
    no positive at all (a caption of a class the test images lack) is never a hit, whatever ``k``."""
    rank = first_hit_rank(scores, positives)
    found = positives.any(dim=1)
    return {k: float(((rank < k) & found).float().mean()) for k in ks}
