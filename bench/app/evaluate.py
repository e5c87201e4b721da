"""Load a bench checkpoint safely and evaluate it again, or classify image files with it."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..clip.model import create_model_from_cfg
from ..clip.templates import fill, validated_templates
from ..config import RunConfig, check_device
from ..data.loader import to_device_uint8
from ..distributed.world import resolve_device
from ..engine.checkpoint import load_weights
from ..engine.step import autocast_dtype_for
from ..errors import BenchError
from ..evaluation.metrics import classification_metrics
from ..evaluation.zero_shot import build_zero_shot_classifier, image_features
from ..files import check_writable_folder, load_checkpoint
from ..host.manager import get_entry
from ..results.run_files import write_csv
from ..results.tables import config_key
from .validation import check_data_dir, check_positive


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


def evaluate_checkpoint(path, templates=None, dataset=None, data_dir=None, limit_test=None, device="auto",
                        per_template: bool = False, suite=None, out=None) -> pd.DataFrame:
    """Zero-shot metrics of a checkpoint, one row per template set (default: the run's).

    ``per_template`` adds one row per single template of each set (the template-set ablation). ``suite``
    (a :class:`bench.evaluation.suite.SuiteOptions`) adds retrieval, linear-probe and robustness columns to each set's
    row. Every row records the protocol: checkpoint and its digest, templates, image size, normalisation.
    With ``out``, the table, per-class accuracies, confusion matrices and suite tables are written there.
    """
    from ..evaluation.suite import FeatureCache, file_digest, run_suite

    check_positive("--limit-test", limit_test)
    for name in templates or []:
        get_entry("templates", name)
    if dataset is not None:
        get_entry("datasets", dataset)
    check_data_dir(data_dir)
    check_device(device)
    if out is not None:
        check_writable_folder(out)
    device = resolve_device(device)
    model, cfg, ckpt = load_model(path, device)
    dataset = dataset or cfg.dataset
    entry = get_entry("datasets", dataset)
    test = entry.create("test", data_dir or cfg.data_dir, cfg.data_seed).subset(limit_test or cfg.limit_test)
    sets = {name: validated_templates(name, get_entry("templates", name).create()) for name in (templates or [cfg.templates])}
    prompts = [p for tpl in sets.values() for p in fill(tpl, test.classes)]
    tokenizer = get_entry("tokenizers", cfg.tokenizer).create(cfg.model.text.context_length, prompts)
    autocast_dtype = autocast_dtype_for(cfg.precision, device)
    digest = file_digest(path)
    cache = FeatureCache(_writable(Path(path).parent / "features"))
    feats = cache.get(f"ckpt-{digest}-{test.name.replace('/', '_')}-{len(test)}",
                      lambda: image_features(model, to_device_uint8(test.images, device), autocast_dtype=autocast_dtype))
    labels = torch.as_tensor(test.labels)
    protocol = {"checkpoint": str(path), "checkpoint_sha256": digest, "checkpoint_epoch": ckpt.get("epoch"),
                "encoder": cfg.model.encoder, "config_id": config_key(cfg), "seed": cfg.seed, "dataset": dataset,
                "test_images": len(test), "image_size": cfg.model.image_resolution, "normalization": "[-1,1]"}
    rows, per_class, confusions, tables = [], {}, {}, {}
    probe_columns = None
    for name, tpl in sets.items():
        for label, chosen in [(name, tpl)] + ([(f"{name}[{i}]", [t]) for i, t in enumerate(tpl)] if per_template else []):
            classifier = build_zero_shot_classifier(model, test.classes, chosen, tokenizer, device, autocast_dtype)
            m = classification_metrics(100.0 * feats @ classifier.cpu(), labels)
            row = {"run_id": f"{Path(path).parent.name}:{label}", **protocol, "templates": cfg.templates,
                   "eval_templates": label, "template": chosen[0] if label != name else "",
                   "n_templates": len(chosen), "zeroshot_top1": m["top1"], "zeroshot_top5": m["top5"],
                   "mean_per_class_recall": m["mean_per_class_recall"]}
            per_class[label] = m["per_class"]
            if label == name:  # one confusion matrix per set; single templates get per-class accuracy only
                confusions[label] = m["confusion"]
            if suite is not None and suite.evals and label == name:
                evals = tuple(e for e in suite.evals if e != "probe" or probe_columns is None)
                train = entry.create("train", data_dir or cfg.data_dir, cfg.data_seed).subset(cfg.limit_train) \
                    if "probe" in evals else test
                columns, set_tables = run_suite(model, replace(suite, evals=evals), train=train, test=test,
                                                templates=chosen, tokenizer=tokenizer, device=device,
                                                autocast_dtype=autocast_dtype, cache=cache, weights_id=f"ckpt-{digest}")
                if "probe" in evals:
                    probe_columns = {k: v for k, v in columns.items() if k.startswith("probe_")}
                row.update(columns, **(probe_columns or {}))
                tables.update({f"{k}-{name}": v for k, v in set_tables.items()})
            rows.append(row)
    table = pd.DataFrame(rows)
    if out is not None:
        write_eval_files(out, table, test.classes, per_class, confusions, tables)
    return table


def write_eval_files(out, table: pd.DataFrame, classes, per_class: dict, confusions: dict, tables: dict):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "eval.csv")
    write_csv(pd.DataFrame({"class": list(classes), **per_class}), out / "per_class.csv")
    for label, cm in confusions.items():
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
        write_csv(pd.DataFrame(cm, index=list(classes), columns=list(classes)).rename_axis("true").reset_index(),
                  out / f"confusion-{safe}.csv")
    for name, t in tables.items():
        write_csv(t, out / f"{name}.csv")


def _writable(folder: Path) -> Path | None:
    """The feature cache folder beside the checkpoint, or None (memory only) where it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


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
    tpl = validated_templates(name, get_entry("templates", name).create())
    tokenizer = get_entry("tokenizers", cfg.tokenizer).create(cfg.model.text.context_length, fill(tpl, classes))
    autocast_dtype = autocast_dtype_for(cfg.precision, device)
    classifier = build_zero_shot_classifier(model, classes, tpl, tokenizer, device, autocast_dtype)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    probs = (100.0 * image_features(model, x, autocast_dtype=autocast_dtype) @ classifier).softmax(dim=-1).cpu()
    k = min(top_k, len(classes))
    for p, row in zip(image_paths, probs):
        values, indices = row.topk(k)
        yield str(Path(p)), [(classes[i], float(v)) for v, i in zip(values, indices)]
