"""Class-level retrieval: a hit is any caption (or image) of the right class among the k nearest."""
import pytest
import torch

from bench.evaluation.retrieval import caption_labels, retrieval_metrics


def test_retrieval_by_hand():
    """img2 is class 0 but looks like class 1: i2t R@1 = 2/3, R@2 = 1; each caption's nearest image is of its
    class (t1 ties img1 and img2, img1 first by index): t2i R@1 = 1."""
    images = torch.tensor([[1., 0], [0, 1], [0, 1]])
    image_labels = torch.tensor([0, 1, 0])
    texts = torch.tensor([[1., 0], [0, 1]])
    m = retrieval_metrics(images, image_labels, texts, caption_labels(2, 1), ks=(1, 2))
    assert m == pytest.approx({"retrieval_i2t_r1": 2 / 3, "retrieval_i2t_r2": 1.0,
                               "retrieval_t2i_r1": 1.0, "retrieval_t2i_r2": 1.0})


def test_any_caption_of_the_class_counts():
    """With two templates per class, the second caption of the right class is a hit at R@1 too."""
    images = torch.tensor([[0., 1]])
    texts = torch.tensor([[1., 0], [0, 1], [0.7071, 0.7071], [-1, 0]])  # class-major: c0t0, c0t1, c1t0, c1t1
    m = retrieval_metrics(images, torch.tensor([0]), texts, caption_labels(2, 2), ks=(1,))
    assert caption_labels(2, 2).tolist() == [0, 0, 1, 1]
    assert m["retrieval_i2t_r1"] == 1.0
