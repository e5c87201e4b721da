"""Each metric against values worked out by hand on tiny examples, including ties and empty classes."""
import math

import numpy as np
import pytest
import torch

from bench.evaluation.metrics import classification_metrics, confusion_matrix, first_hit_rank, recall_at_k, topk_correct

# 4 samples, 4 classes; class 3 has no samples and is never predicted, class 2 is never predicted.
#   s0 [2, 1, 0, -1] label 0: rank 0
#   s1 [1, 1, 0, -1] label 1: tied with class 0, which has the lower index -> rank 1 (argmax says 0)
#   s2 [0, 3, 3, -1] label 2: tied with class 1 -> rank 1 (argmax says 1)
#   s3 [5, 0, 1, -1] label 1: classes 0 and 2 score higher -> rank 2
LOGITS = torch.tensor([[2., 1, 0, -1], [1, 1, 0, -1], [0, 3, 3, -1], [5, 0, 1, -1]])
LABELS = torch.tensor([0, 1, 2, 1])


def test_topk_breaks_ties_by_lower_index_like_argmax():
    """Ties never depend on the sort kernel: hits at k=1,2,3 are 1/4, 3/4, 4/4 as counted by hand."""
    hits = topk_correct(LOGITS, LABELS, ks=(1, 2, 3))
    assert hits[1].tolist() == [True, False, False, False]
    assert hits[2].tolist() == [True, True, True, False]
    assert hits[3].tolist() == [True, True, True, True]
    assert torch.equal(hits[1], LOGITS.argmax(dim=1) == LABELS)


def test_classification_metrics_by_hand():
    """top-1 1/4; top-5 1 (only 4 classes); recall per class 1, 0, 0, NaN (no samples); mean over the 3 with samples."""
    m = classification_metrics(LOGITS, LABELS)
    assert m["top1"] == pytest.approx(0.25)
    assert m["top5"] == pytest.approx(1.0)
    assert m["per_class"][:3].tolist() == [1.0, 0.0, 0.0]
    assert math.isnan(m["per_class"][3])
    assert m["mean_per_class_recall"] == pytest.approx(1 / 3)
    expected = np.array([[1, 0, 0, 0],   # true 0 -> predicted 0
                         [2, 0, 0, 0],   # true 1 -> predicted 0 twice (s1 by the tie, s3)
                         [0, 1, 0, 0],   # true 2 -> predicted 1 (the tie)
                         [0, 0, 0, 0]])  # no samples of class 3
    assert np.array_equal(m["confusion"], expected)
    assert m["confusion"][:, 2].sum() == 0 and m["confusion"][:, 3].sum() == 0  # never predicted


def test_mean_per_class_recall_differs_from_top1_on_imbalance():
    """3 samples of class 0 all right, 1 of class 1 wrong: top-1 3/4 but mean per-class recall 1/2."""
    logits = torch.tensor([[1., 0], [1, 0], [1, 0], [1, 0]])
    m = classification_metrics(logits, torch.tensor([0, 0, 0, 1]))
    assert m["top1"] == pytest.approx(0.75)
    assert m["mean_per_class_recall"] == pytest.approx(0.5)


def test_confusion_matrix_counts_pairs():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_recall_at_k_with_ties_and_queries_without_positives():
    """q0: the positive ties with a lower-index negative -> rank 1; q1: all tied, positive last -> rank 3;
    q2: no positive -> never a hit."""
    scores = torch.tensor([[0.9, 0.5, 0.9, 0.1], [0.2, 0.2, 0.2, 0.2], [0.3, 0.1, 0.2, 0.0]])
    positives = torch.tensor([[False, False, True, False], [False, False, False, True], [False] * 4])
    assert first_hit_rank(scores, positives).tolist() == [1, 3, 4]
    r = recall_at_k(scores, positives, ks=(1, 2, 4))
    assert r == pytest.approx({1: 0.0, 2: 1 / 3, 4: 2 / 3})


def test_a_query_without_positives_is_no_hit_even_when_k_covers_the_gallery():
    """k = 10 over a 4-item gallery: q0 and q1 find theirs, q2 has none (a caption of a class no test image shows)
    and stays a miss, so recall is 2/3, not 1."""
    scores = torch.tensor([[0.9, 0.5, 0.9, 0.1], [0.2, 0.2, 0.2, 0.2], [0.3, 0.1, 0.2, 0.0]])
    positives = torch.tensor([[False, False, True, False], [False, False, False, True], [False] * 4])
    assert recall_at_k(scores, positives, ks=(4, 10)) == pytest.approx({4: 2 / 3, 10: 2 / 3})


def test_nan_logits_rank_last_so_top1_is_argmax_equals_label():
    """All-NaN logits: argmax picks class 0 for every image, so one of the four (label 0) is right, in top-1 as in
    the predictions; NaN fails both > and ==, which would otherwise rank every label first."""
    labels = torch.tensor([0, 3, 5, 9])
    m = classification_metrics(torch.full((4, 10), float("nan")), labels)
    assert m["predictions"].tolist() == [0, 0, 0, 0] and m["top1"] == 0.25
    assert m["top5"] == 0.5  # all tied: ranks by index, so labels 0 and 3 are within the first five


def test_a_nan_score_ranks_last_in_retrieval_as_in_classification():
    """A gallery item with a NaN score (an image whose features overflowed to NaN) is no match: it ranks after every
    scored item, not before them (a descending sort puts NaN first). q0's positive is the best scored item, so rank
    0 whatever the NaN at index 0; q1's only positive is the NaN item, so it ranks last (3), and all-NaN q2 keeps
    index order. One such image must not become every caption's nearest image."""
    nan = float("nan")
    scores = torch.tensor([[nan, 0.9, 0.1, 0.5], [nan, 0.9, 0.1, 0.5], [nan, nan, nan, nan]])
    positives = torch.tensor([[False, True, False, False], [True, False, False, False], [False, False, True, False]])
    assert first_hit_rank(scores, positives).tolist() == [0, 3, 2]
    assert recall_at_k(scores, positives, ks=(1, 3)) == pytest.approx({1: 1 / 3, 3: 2 / 3})
