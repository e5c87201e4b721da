"""Zero-shot classification: a template-ensembled text classifier, then metrics over a test split."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..clip.prompts import prompt_table
from ..data.loader import normalize
from ..distributed.collectives import gather_rows, shard_bounds
from ..distributed.world import World, world_size
from .metrics import classification_metrics


@torch.no_grad()
def build_zero_shot_classifier(model, class_names, templates, tokenizer, device, autocast_dtype=None) -> torch.Tensor:
    """``(embed_dim, n_classes)`` weights: normalise each template's embedding, average, renormalise."""
    features = prompt_features(model, class_names, templates, tokenizer, device, autocast_dtype)
    return classifier_from_features(features, len(class_names), len(templates))


def classifier_from_features(features: torch.Tensor, n_classes: int, n_templates: int) -> torch.Tensor:
    """:func:`build_zero_shot_classifier` from :func:`prompt_features`' rows already computed, so a caller that needs
    the prompts' features too (retrieval) or several classifiers of one set (one per template) encodes each prompt
    once."""
    features = features.view(n_classes, n_templates, -1)
    return F.normalize(features.mean(dim=1), dim=-1).t().contiguous()


@torch.no_grad()
def prompt_features(model, class_names, templates, tokenizer, device, autocast_dtype=None) -> torch.Tensor:
    """Normalised text features of the prompt table (:func:`bench.clip.prompts.prompt_table`), one row per prompt
    (no averaging): row ``c * len(templates) + t`` is template ``t`` of class ``c``."""
    tokens = prompt_table(templates, class_names, tokenizer, device)
    with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        features = model.encode_text(tokens).float()
    return F.normalize(features, dim=-1)


@torch.no_grad()
def image_features(model, images_uint8: torch.Tensor, batch_size: int = 500, autocast_dtype=None,
                   channels_last: bool = False) -> torch.Tensor:
    """Normalised image features of a uint8 NCHW tensor already on the model's device.

    A model with a ``preprocess_uint8`` method (a pretrained CLIP, :mod:`bench.clip.pretrained`) makes its own
    inputs from the uint8 images; bench's models take them in [-1, 1].
    """
    device_type = images_uint8.device.type
    preprocess = getattr(model, "preprocess_uint8", normalize)
    out = []
    for start in range(0, len(images_uint8), batch_size):
        x = preprocess(images_uint8[start:start + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out.append(F.normalize(model.encode_image(x).float(), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def zero_shot_metrics(model, images_uint8: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor,
                      batch_size: int = 500, autocast_dtype=None, channels_last: bool = False) -> dict:
    """Zero-shot metrics (top-1, top-5, mean per-class recall, per-class accuracy, confusion matrix)."""
    was_training = model.training
    model.eval()
    try:
        feats = image_features(model, images_uint8, batch_size, autocast_dtype, channels_last)
        logits = 100.0 * feats @ classifier
        return classification_metrics(logits, labels.to(logits.device))
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------------------
# Zero-shot evaluation, sharded
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _share_batch_norm_stats(model):
    """Rank 0's batch-norm running statistics on every rank, so each encodes its shard with the statistics the
    saved checkpoint holds. Under --no-sync-bn each rank's last training step updated its own (DDP broadcasts
    rank 0's at the start of the next forward, not after the last); synchronised ones are equal already."""
    import torch.distributed as dist

    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                if buffer is not None:
                    dist.broadcast(buffer, src=0)


@torch.no_grad()
def validate_sharded(model, images_uint8: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor, world: World,
                     **kwargs) -> dict:
    """Zero-shot metrics with the test images split over ranks; every rank returns the same metrics.

    Each rank encodes ``1/N`` of the images and the ``(n, classes)`` logits are gathered: image encoding
    is nearly all of evaluation's cost, so this is N times faster than rank 0 alone while the other
    ranks wait. ``kwargs`` are :func:`bench.evaluation.zero_shot.zero_shot_metrics`'s.
    """

    from .metrics import classification_metrics

    if world_size() == 1:
        return zero_shot_metrics(model, images_uint8, labels, classifier, **kwargs)
    _share_batch_norm_stats(model)
    lo, hi = shard_bounds(len(images_uint8), world.rank, world.size)
    was_training = model.training
    model.eval()
    try:
        if hi > lo:
            logits = 100.0 * image_features(model, images_uint8[lo:hi], **kwargs) @ classifier
        else:  # fewer test images than ranks
            logits = classifier.new_zeros((0, classifier.shape[1]))
    finally:
        model.train(was_training)
    logits = gather_rows(logits, len(images_uint8))
    return classification_metrics(logits, labels.to(logits.device))
