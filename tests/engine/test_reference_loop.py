"""The spec's loop functions over a plain DataLoader of ``(images, tokens, labels)`` (``bench.train_epoch``,
``bench.validate``): each against its definition on logits worked out by hand, and the loop trains a CLIP."""
import random

import pytest
import torch
import torch.nn.functional as F

from bench import CIFARCLIPDataset, collate_fn, train_epoch, validate
from bench.data.datasets import make_synthetic
from tests.support.models import tiny_clip

LOGITS = [torch.tensor([[5.0, 1, 0], [0, 1, 3], [0, 0, 2]], dtype=torch.float64),
          torch.tensor([[3.0, 2], [0, 4]], dtype=torch.float64)]


class GivenLogits(torch.nn.Module):
    """Image-to-caption logits ``scale x LOGITS[i]`` for the i-th batch it sees; ``scale`` is its one weight."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64))
        self.seen = 0

    def forward(self, images, tokens):
        logits = self.scale * LOGITS[self.seen % len(LOGITS)]
        self.seen += 1
        return logits, logits.t()


def _loader():
    """A batch per entry of LOGITS: only the batch size of images and tokens matters to GivenLogits."""
    return [(torch.zeros(len(m), 3, 32, 32), torch.zeros(len(m), 77, dtype=torch.long), torch.arange(len(m)))
            for m in LOGITS]


def _symmetric_cross_entropy(logits):
    own = torch.arange(len(logits))
    return (F.cross_entropy(logits, own) + F.cross_entropy(logits.t(), own)) / 2


def test_validate_is_the_mean_batch_loss_and_the_share_of_images_whose_top_caption_is_their_own():
    model = GivenLogits().train()
    result = validate(model, _loader())
    # top caption per image: [0, 2, 2] against [0, 1, 2], then [0, 1] against [0, 1]: 4 of 5 are their own (the
    # top image per caption would give 3 of 5)
    assert result["accuracy"] == 4 / 5
    expected = (_symmetric_cross_entropy(LOGITS[0]) + _symmetric_cross_entropy(LOGITS[1])) / 2
    assert result["loss"] == pytest.approx(float(expected), rel=1e-12)
    assert not model.training


def test_train_epoch_steps_once_per_batch_and_returns_the_mean_of_the_losses_it_stepped_on():
    model = GivenLogits().eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    mean = train_epoch(model, _loader(), optimizer, scheduler=scheduler)
    # the same two SGD steps by hand: the loss at the current scale, then scale -= lr x its gradient
    scale, losses = torch.ones((), dtype=torch.float64, requires_grad=True), []
    for logits in LOGITS:
        loss = _symmetric_cross_entropy(scale * logits)
        (grad,) = torch.autograd.grad(loss, scale)
        losses.append(float(loss.detach()))
        scale = (scale - 0.5 * grad).detach().requires_grad_()
    assert mean == pytest.approx(sum(losses) / 2, rel=1e-6)  # the loop sums the losses in float32
    assert model.scale.item() == pytest.approx(scale.item(), rel=1e-12)
    assert model.training and scheduler.last_epoch == 2


def test_a_few_reference_epochs_lower_the_validation_loss_of_a_tiny_clip():
    """The spec's pipeline end to end: the per-sample dataset, collate_fn's tokens, AdamW."""
    random.seed(0)
    torch.manual_seed(0)
    base = make_synthetic("train", n=16)
    loader = torch.utils.data.DataLoader(CIFARCLIPDataset(base, base.classes), batch_size=8, collate_fn=collate_fn)
    model = tiny_clip().float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = validate(model, loader)["loss"]
    losses = [train_epoch(model, loader, optimizer) for _ in range(4)]
    assert validate(model, loader)["loss"] < before and losses[-1] < losses[0]


def test_the_reference_scripts_own_calls_work_as_written():
    """CLIP.py's main(): CIFARCLIPDataset(cifar, class_names, transform), train_epoch(model, loader, optimizer,
    device, epoch + 1) and val_loss, val_accuracy = validate(model, loader, device)."""
    from bench.data.datasets import reference_transform

    random.seed(0)
    torch.manual_seed(0)
    base = make_synthetic("train", n=16)
    dataset = CIFARCLIPDataset(base, list(base.classes), reference_transform(train=False))
    assert dataset[0][0].min() >= -1 and dataset[0][1].startswith(("a ", "an "))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=collate_fn)
    model = tiny_clip().float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_loss = train_epoch(model, loader, optimizer, "cpu", 1)
    val_loss, val_accuracy = validate(model, loader, "cpu")
    assert train_loss > 0 and val_loss > 0 and 0 <= val_accuracy <= 1
