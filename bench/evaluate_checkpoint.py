"""Load a bench checkpoint safely and evaluate it again, or classify image files with it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checkpoint import load_weights
from .config import RunConfig
from .errors import BenchError
from .evaluator import build_zero_shot_classifier, image_features, validate
from .io import load_checkpoint
from .model import create_model_from_cfg
from .plugins import get_entry
from .templates import check_templates, fill
from .trainer import autocast_dtype_for, resolve_device
from .validation import check_data_dir, check_device, check_positive


def load_model(path, device) -> tuple[torch.nn.Module, RunConfig, dict]:
    """Rebuild the run's model from its checkpoint; a mismatch is explained, not a shape traceback."""
    ckpt = load_checkpoint(path)
    if "model" not in ckpt or "config" not in ckpt:
        raise BenchError(f"{path} is not a bench checkpoint (no 'model'/'config' entries); "
                         f"for an OpenAI-layout state dict use bench.build_model")
    cfg = RunConfig.from_dict(ckpt["config"])
    model = create_model_from_cfg(cfg.model)
    load_weights(model, ckpt["model"], ckpt, path)
    return model.to(device).eval(), cfg, ckpt


def evaluate_checkpoint(path, templates=None, dataset=None, data_dir=None, limit_test=None, device="auto") -> pd.DataFrame:
    """Zero-shot metrics of a checkpoint, one row per template set (default: the run's)."""
    check_positive("--limit-test", limit_test)
    for name in templates or []:
        get_entry("templates", name)
    if dataset is not None:
        get_entry("datasets", dataset)
    check_data_dir(data_dir)
    check_device(device)
    device = resolve_device(device)
    model, cfg, ckpt = load_model(path, device)
    dataset = dataset or cfg.dataset
    test = get_entry("datasets", dataset).create("test", data_dir or cfg.data_dir, cfg.data_seed)
    test = test.subset(limit_test or cfg.limit_test)
    sets = {name: check_templates(name, get_entry("templates", name).create()) for name in (templates or [cfg.templates])}
    prompts = [p for tpl in sets.values() for p in fill(tpl, test.classes)]
    tokenizer = get_entry("tokenizers", cfg.tokenizer).create(cfg.model.text.context_length, prompts)
    autocast_dtype = autocast_dtype_for(cfg.precision, device)
    images = torch.from_numpy(test.images).permute(0, 3, 1, 2).contiguous().to(device)
    labels = torch.as_tensor(test.labels, device=device)
    rows = []
    for name, tpl in sets.items():
        classifier = build_zero_shot_classifier(model, test.classes, tpl, tokenizer, device, autocast_dtype)
        m = validate(model, images, labels, classifier, autocast_dtype=autocast_dtype)
        rows.append({"checkpoint": str(path), "encoder": cfg.model.encoder, "dataset": dataset, "templates": name,
                     "n_templates": len(tpl), "test_images": len(test), "zeroshot_top1": m["top1"],
                     "zeroshot_top5": m["top5"], "mean_per_class_recall": m["mean_per_class_recall"]})
    return pd.DataFrame(rows)


def read_image(path: str, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8)
    except FileNotFoundError:
        raise BenchError(f"image {path!r} does not exist; pass paths to image files") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise BenchError(f"{path!r} is not an image PIL can read ({type(exc).__name__}); pass PNG or JPEG files") from None


def predict_images(path, image_paths, top_k=3, templates=None, device="auto"):
    """For each image file, the ``top_k`` classes and their probabilities under the zero-shot classifier."""
    check_positive("--top-k", top_k, allow_none=False)
    if templates is not None:
        get_entry("templates", templates)
    check_device(device)
    device = resolve_device(device)
    images = np.stack([read_image(p, 32) for p in image_paths])  # validate inputs before loading the model
    model, cfg, ckpt = load_model(path, device)
    if cfg.model.image_resolution != 32:
        images = np.stack([read_image(p, cfg.model.image_resolution) for p in image_paths])
    classes = ckpt.get("classes") or list(get_entry("datasets", cfg.dataset).create("test", cfg.data_dir, 0).classes)
    name = templates or cfg.templates
    tpl = check_templates(name, get_entry("templates", name).create())
    tokenizer = get_entry("tokenizers", cfg.tokenizer).create(cfg.model.text.context_length, fill(tpl, classes))
    autocast_dtype = autocast_dtype_for(cfg.precision, device)
    classifier = build_zero_shot_classifier(model, classes, tpl, tokenizer, device, autocast_dtype)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    probs = (100.0 * image_features(model, x, autocast_dtype=autocast_dtype) @ classifier).softmax(dim=-1).cpu()
    k = min(top_k, len(classes))
    for p, row in zip(image_paths, probs):
        values, indices = row.topk(k)
        yield str(Path(p)), [(classes[i], float(v)) for v, i in zip(values, indices)]
