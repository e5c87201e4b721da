"""Classification metrics from logits, as plain tensors and numpy (no model code)."""
from __future__ import annotations

import numpy as np
import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, torch.Tensor]:
    """Per-sample hit flags for each k: the label is among the k highest logits (ties broken by index)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top == labels[:, None]
    return {k: hits[:, : min(k, maxk)].any(dim=1) for k in ks}


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """``cm[i, j]`` counts samples of true class ``i`` predicted as ``j``."""
    return np.bincount(np.asarray(labels) * n_classes + np.asarray(preds), minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top-1, top-5, mean per-class recall, per-class accuracy and the confusion matrix.

    A class with no test samples has recall NaN and is left out of the mean.
    """
    n_classes = logits.shape[1]
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
    }
