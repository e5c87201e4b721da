"""Contrastive losses: symmetry, a hand-computed value, and the multi-positive variant."""
import math

import torch

from bench import contrastive_loss
from bench.clip.loss import ClipLoss, multipositive_loss


def test_loss_is_symmetric_in_images_and_texts():
    logits = torch.randn(6, 6)
    assert torch.allclose(contrastive_loss(logits, logits.t()), contrastive_loss(logits.t(), logits))


def test_loss_matches_a_hand_computed_two_by_two_case():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    row = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(3) / (math.exp(1) + math.exp(3)))) / 2
    col = (-math.log(math.exp(2) / (math.exp(2) + math.exp(1))) - math.log(math.exp(3) / (1 + math.exp(3)))) / 2
    assert math.isclose(float(contrastive_loss(logits)), (row + col) / 2, rel_tol=1e-6)


def test_multipositive_equals_clip_when_every_label_is_distinct():
    logits = torch.randn(5, 5)
    torch.testing.assert_close(multipositive_loss(logits, torch.arange(5)), contrastive_loss(logits))


def test_multipositive_does_not_push_apart_same_class_pairs():
    # Images 0 and 1 share a class: plain CLIP pushes their cross logit down, multi-positive does not.
    logits = torch.tensor([[5.0, 5.0, -5.0], [5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    (clip_grad,) = torch.autograd.grad(contrastive_loss(logits), logits)
    (multi_grad,) = torch.autograd.grad(multipositive_loss(logits, labels), logits)
    assert clip_grad[0, 1] > 0.1  # gradient descent lowers the same-class logit
    assert abs(float(multi_grad[0, 1])) < 1e-4  # already optimal: equal scores within the class


def test_clip_loss_module_returns_named_terms():
    feats = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    out = ClipLoss("clip")(feats, feats, torch.tensor(10.0), output_dict=True)
    assert set(out) == {"contrastive_loss"} and out["contrastive_loss"].ndim == 0


def test_label_smoothing_follows_torch_and_reaches_the_multipositive_loss():
    """With every label distinct, multi-positive with smoothing equals CLIP's loss with smoothing, which is
    torch's cross-entropy with ``label_smoothing`` in both directions; smoothing raises a confident loss."""
    logits = torch.randn(5, 5) * 4
    targets = torch.arange(5)
    eps = 0.2
    torch_value = (torch.nn.functional.cross_entropy(logits, targets, label_smoothing=eps)
                   + torch.nn.functional.cross_entropy(logits.t(), targets, label_smoothing=eps)) / 2
    torch.testing.assert_close(contrastive_loss(logits, label_smoothing=eps), torch_value)
    torch.testing.assert_close(multipositive_loss(logits, targets, label_smoothing=eps), torch_value)
    confident = torch.eye(5) * 20
    assert float(multipositive_loss(confident, targets, label_smoothing=eps)) > 10 * float(
        multipositive_loss(confident, targets))
    feats = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    torch.testing.assert_close(ClipLoss("multipositive", label_smoothing=eps)(feats, feats, torch.tensor(3.0), targets),
                               ClipLoss("clip", label_smoothing=eps)(feats, feats, torch.tensor(3.0), targets))
