"""The linear probe: a deterministic stratified validation split and a weight-decay search that works."""
import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.evaluation.probe import linear_probe, stratified_split


def test_stratified_split_takes_a_share_of_each_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.bincount(labels[val]).tolist()) == [1, 1, 2]  # round(2), round(1), at least one of 2
    assert not set(train) & set(val) and len(train) + len(val) == len(labels)
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(val, again[1])
    with pytest.raises(BenchError):
        stratified_split(labels, 1.5)


def _clusters(n_per_class, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(3, 6) * 4
    labels = torch.arange(3).repeat_interleave(n_per_class)
    return centres[labels] + 0.5 * torch.randn(len(labels), 6, generator=g), labels


def test_probe_separates_clusters_and_is_deterministic():
    """Well-separated clusters: a linear probe must reach 100 %; two fits give the same numbers."""
    train_x, train_y = _clusters(20, 0)
    test_x, test_y = _clusters(10, 1)
    a = linear_probe(train_x, train_y, test_x, test_y, 3, weight_decays=(1e-3, 1e-1))
    b = linear_probe(train_x, train_y, test_x, test_y, 3, weight_decays=(1e-3, 1e-1))
    assert a["probe_top1"] == 1.0 and a["probe_mean_per_class_recall"] == 1.0
    assert a["probe_weight_decay"] == 1e-1  # both reach 100 % on validation: the stronger decay wins the tie
    assert a["probe_top1"] == b["probe_top1"] and a["probe_val_top1"] == b["probe_val_top1"]


def test_probe_beats_chance_only_with_signal():
    """Labels unrelated to the features: the probe must not report better than chance by much."""
    x, _ = _clusters(30, 2)
    y = torch.randint(0, 3, (90,), generator=torch.Generator().manual_seed(5))
    tx, _ = _clusters(30, 3)
    ty = torch.randint(0, 3, (90,), generator=torch.Generator().manual_seed(6))
    assert linear_probe(x, y, tx, ty, 3)["probe_top1"] < 0.6
