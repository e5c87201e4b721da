"""The evaluation suite beyond zero-shot top-k: retrieval, linear probe and robustness to corruptions.

:func:`run_suite` takes a model already on its device plus the run's data, and returns flat columns for
the result row and per-item tables for the run folder. Both ``bench run --evals ...`` (on the final
weights in memory) and ``bench eval CHECKPOINT`` (on a checkpoint) call it, so the two agree.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic_files import atomic_write_bytes
from ..data.corruptions import CORRUPTIONS, PROTOCOL, SEVERITIES, corrupt
from ..data.datasets import ArrayDataset
from ..data.loader import to_device_uint8
from .probe import VAL_FRACTION, WEIGHT_DECAYS, linear_probe
from .retrieval import caption_labels, retrieval_metrics
from .zero_shot import (
    classifier_from_features,
    image_features,
    prompt_features,
    zero_shot_metrics,
)


@dataclass(frozen=True)
class SuiteOptions:
    evals: tuple = ()  # which of EVALS to run
    robust_limit: int | None = None  # corrupt only the first N test images (None = all)
    robust_severities: tuple = SEVERITIES  # severities 1..5 to evaluate
    corruptions: tuple = CORRUPTIONS  # corruption names
    probe_weight_decays: tuple = WEIGHT_DECAYS  # grid searched on the validation split
    probe_val_fraction: float = VAL_FRACTION  # share of train held out for the search
    seed: int = 0  # seed of corruption noise and of the probe's validation split


class FeatureCache:
    """Normalised image features kept in memory and, with a folder, on disk as ``<key>.pt``.

    The key names the weights, the images and the precision (:func:`features`), so a cached file is only ever
    reused for the same model and data; the probe's weight-decay search reuses one extraction.
    """

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else None
        self.memory: dict[str, torch.Tensor] = {}

    def get(self, key: str, compute) -> torch.Tensor:
        if key in self.memory:
            return self.memory[key]
        path = self.folder / f"{key}.pt" if self.folder else None
        if path is not None and path.is_file():
            feats = torch.load(path, map_location="cpu", weights_only=True)
        else:
            feats = compute().cpu()
            if path is not None:
                import io

                path.parent.mkdir(parents=True, exist_ok=True)
                buffer = io.BytesIO()
                torch.save(feats, buffer)
                atomic_write_bytes(path, buffer.getvalue())
        self.memory[key] = feats
        return feats


def file_digest(path, n_chars: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:n_chars]


def data_digest(data: ArrayDataset, n_chars: int = 12) -> str:
    """A digest of a split's images and labels: two folders holding a split of one name (``--data-dir``, an image
    folder rewritten in place) are other data, and their features are other features."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (data.images, data.labels):
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:n_chars]


def features(model, data: ArrayDataset, device, autocast_dtype, cache: FeatureCache, key: str) -> torch.Tensor:
    """``data``'s normalised image features under ``model``, through ``cache``: keyed by ``key`` (the weights),
    the split's name, size and contents, and the precision they were computed in."""
    precision = str(autocast_dtype).removeprefix("torch.") if autocast_dtype is not None else "fp32"
    return cache.get(f"{key}-{data.name.replace('/', '_')}-{len(data)}-{data_digest(data)}-{precision}",
                     lambda: image_features(model, to_device_uint8(data.images, device), autocast_dtype=autocast_dtype))


def run_suite(model, opts: SuiteOptions, *, train: ArrayDataset, test: ArrayDataset, templates, tokenizer, device,
              autocast_dtype=None, cache: FeatureCache | None = None, weights_id: str = "model",
              text_features: torch.Tensor | None = None) -> tuple[dict, dict]:
    """Columns for the result row and tables (name -> DataFrame) for the run folder.

    The prompt table (``test``'s classes x ``templates``) is encoded once, for retrieval and robustness alike;
    ``text_features``: its :func:`bench.evaluation.zero_shot.prompt_features` under these weights, where the caller
    has them already (then it is not encoded here at all)."""
    model.eval()
    cache = cache or FeatureCache()
    classes = list(test.classes)
    columns, tables = {}, {}
    test_feats = features(model, test, device, autocast_dtype, cache, weights_id)
    test_labels = torch.as_tensor(test.labels)
    if text_features is None and ("retrieval" in opts.evals or "robustness" in opts.evals):
        text_features = prompt_features(model, classes, templates, tokenizer, device, autocast_dtype)
    if "retrieval" in opts.evals:
        text = text_features.cpu()
        columns.update(retrieval_metrics(test_feats, test_labels, text, caption_labels(len(classes), len(templates))))
        columns["retrieval_captions"] = len(text)
    if "probe" in opts.evals:
        train_feats = features(model, train, device, autocast_dtype, cache, weights_id)
        probe = linear_probe(train_feats, torch.as_tensor(train.labels), test_feats, test_labels, len(classes),
                             opts.probe_weight_decays, opts.probe_val_fraction, opts.seed)
        tables["probe_per_class"] = pd.DataFrame({"class": classes, "accuracy": probe.pop("probe_per_class")})
        columns.update(probe, probe_train_images=len(train), probe_val_fraction=opts.probe_val_fraction)
    if "robustness" in opts.evals:
        classifier = classifier_from_features(text_features.to(device), len(classes), len(templates))
        robust_cols, tables["robustness"] = robustness(model, test.subset(opts.robust_limit), classifier, device,
                                                       autocast_dtype, opts)
        columns.update(robust_cols)
    return columns, tables


def robustness(model, test: ArrayDataset, classifier: torch.Tensor, device, autocast_dtype, opts: SuiteOptions):
    """Zero-shot top-1 with ``classifier`` (the template set's zero-shot weights) on each corruption x severity; row
    columns hold the mean over severities per corruption (``robust_<name>``), the mean over corruptions
    (``robust_mean``) and the clean top-1 on the same images (``robust_clean``), so the drop is read against
    like-for-like images."""
    labels = torch.as_tensor(test.labels, device=device)

    def top1(images: np.ndarray) -> float:
        return zero_shot_metrics(model, to_device_uint8(images, device), labels, classifier,
                                 autocast_dtype=autocast_dtype)["top1"]

    rows = [{"corruption": "clean", "severity": 0, "top1": top1(test.images)}]
    for name in opts.corruptions:
        for severity in opts.robust_severities:
            rows.append({"corruption": name, "severity": severity,
                         "top1": top1(corrupt(test.images, name, severity, opts.seed))})
    table = pd.DataFrame(rows)
    per = table[table.corruption != "clean"].groupby("corruption", sort=False)["top1"].mean()
    columns = {f"robust_{name}": float(v) for name, v in per.items()}
    columns.update(robust_mean=float(per.mean()), robust_clean=rows[0]["top1"], robust_images=len(test),
                   robust_severities=",".join(map(str, opts.robust_severities)), robust_protocol=PROTOCOL)
    return columns, table
