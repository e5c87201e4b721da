"""Seen, unseen and harmonic top-1 (the generalized zero-shot protocol) against values worked out by hand."""
import math

import numpy as np
import pytest
import torch

from bench.evaluation.holdout import harmonic_mean, seen_unseen_metrics
from bench.evaluation.metrics import classification_metrics

# 10 test images, 4 classes; classes 2 and 3 were held out of training. The classifier chooses among all 4.
#   image  logits            label  argmax  hit   group
#   0      [3, 1, 0, 0]      0      0       yes   seen
#   1      [0, 2, 1, 0]      1      1       yes   seen
#   2      [2, 2, 0, 0]      1      0       no    seen    (a tie: the lower index wins, as argmax)
#   3      [1, 0, 0, 0]      0      0       yes   seen
#   4      [0, 3, 0, 1]      0      1       no    seen
#   5      [4, 0, 1, 1]      1      0       no    seen
#   6      [0, 0, 5, 1]      2      2       yes   unseen
#   7      [2, 0, 1, 0]      2      0       no    unseen  (the seen class 0 takes an unseen image)
#   8      [0, 1, 0, 0]      3      1       no    unseen
#   9      [0, 0, 3, 3]      3      2       no    unseen  (a tie between the two unseen classes: 2 wins)
# seen: 3 hits of 6 = 1/2; unseen: 1 of 4 = 1/4; harmonic 2 (1/2)(1/4) / (1/2 + 1/4) = (1/4) / (3/4) = 1/3;
# all images: 4 of 10.
LOGITS = torch.tensor([[3., 1, 0, 0], [0, 2, 1, 0], [2, 2, 0, 0], [1, 0, 0, 0], [0, 3, 0, 1], [4, 0, 1, 1],
                       [0, 0, 5, 1], [2, 0, 1, 0], [0, 1, 0, 0], [0, 0, 3, 3]])
LABELS = torch.tensor([0, 1, 1, 0, 0, 1, 2, 2, 3, 3])


def test_seen_unseen_and_harmonic_top1_by_hand():
    m = classification_metrics(LOGITS, LABELS)
    assert m["predictions"].tolist() == [0, 1, 0, 0, 1, 0, 2, 0, 1, 2]
    held = seen_unseen_metrics(m["predictions"], LABELS.numpy(), [2, 3])
    assert held == pytest.approx({"seen_top1": 1 / 2, "unseen_top1": 1 / 4, "harmonic_top1": 1 / 3})
    assert m["top1"] == pytest.approx(4 / 10)  # zeroshot_top1 stays the top-1 over every test image


def test_the_harmonic_mean_is_zero_when_either_side_is_and_undefined_without_images():
    assert harmonic_mean(0.8, 0.0) == 0.0 and harmonic_mean(0.0, 0.8) == 0.0
    assert harmonic_mean(0.6, 0.3) == pytest.approx(0.4)  # 2 * 0.18 / 0.9
    assert math.isnan(harmonic_mean(float("nan"), 0.5))
    # no test image of a held-out class (a --limit-test that cuts them all): unseen and harmonic are NaN
    held = seen_unseen_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), [3])
    assert held["seen_top1"] == pytest.approx(2 / 3) and math.isnan(held["unseen_top1"])
    assert math.isnan(held["harmonic_top1"])
