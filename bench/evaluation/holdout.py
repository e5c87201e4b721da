"""Generalized zero-shot accuracy with held-out classes (Xian et al., "Zero-Shot Learning: the Good, the Bad and
the Ugly"): the classifier chooses among every class, seen in training or not, and accuracy is read apart on
the test images of seen classes and of unseen (held-out) ones, then combined by their harmonic mean, which is
high only when both are.
"""
from __future__ import annotations

import math

import numpy as np


def harmonic_mean(seen: float, unseen: float) -> float:
    """``2 s u / (s + u)``; 0 when either is 0, NaN when either is NaN (a group without test images)."""
    if math.isnan(seen) or math.isnan(unseen):
        return float("nan")
    if seen == 0 or unseen == 0:
        return 0.0
    return 2 * seen * unseen / (seen + unseen)


def seen_unseen_metrics(predictions, labels, unseen_labels) -> dict:
    """``seen_top1``: share of the test images of trained classes whose top-1 class (among all classes) is
    right; ``unseen_top1`` the same over held-out classes' images; ``harmonic_top1`` their harmonic mean.

    Accuracies are over images (not averaged per class as Xian et al. do; the two agree on a split with the
    same number of test images per class). A group without test images is NaN.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    unseen = np.isin(labels, np.asarray(list(unseen_labels), dtype=np.int64))
    hits = predictions == labels
    seen_top1 = float(hits[~unseen].mean()) if (~unseen).any() else float("nan")
    unseen_top1 = float(hits[unseen].mean()) if unseen.any() else float("nan")
    return {"seen_top1": seen_top1, "unseen_top1": unseen_top1, "harmonic_top1": harmonic_mean(seen_top1, unseen_top1)}
