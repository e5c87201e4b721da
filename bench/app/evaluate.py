"""Load a bench checkpoint safely and evaluate it again, or classify image files with it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic_files import check_writable_folder
from ..clip.model import create_model_from_cfg
from ..clip.pretrained import is_openai_state_dict, load_openai_state_dict
from ..clip.templates import fill, validated_templates
from ..config import RunConfig
from ..data.loader import to_device_uint8
from ..distributed.world import resolve_device
from ..engine.build import autocast_dtype_for
from ..engine.checkpoint import load_weights
from ..errors import BenchError
from ..evaluation.metrics import classification_metrics
from ..evaluation.zero_shot import build_zero_shot_classifier, image_features
from ..host.manager import get_entry
from ..results.columns import config_key
from ..results.run_folder import confusion_frame, write_csv
from ..safe_load import load_checkpoint
from .validation import check_data_dir, check_device, check_positive


def load_model(path, device, ckpt: dict | None = None) -> tuple[torch.nn.Module, RunConfig, dict]:
    """Rebuild the run's model from its checkpoint (``ckpt``: the file already loaded); a mismatch is explained,
    not a shape traceback."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    if "model" not in ckpt or "config" not in ckpt:
        raise BenchError(f"{path} is not a bench checkpoint (no 'model'/'config' entries) nor an OpenAI-layout "
                         f"state dict; pass a last.pt/best.pt written by bench run")
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
    An OpenAI-format state dict (what :func:`bench.build_model` loads) is evaluated with OpenAI's preprocessing.
    """
    from ..evaluation.suite import FeatureCache, file_digest

    check_eval_inputs(templates, dataset, data_dir, limit_test, device, out)
    device = resolve_device(device)
    ckpt = load_checkpoint(path)
    if is_openai_state_dict(ckpt):
        model, info = load_openai_state_dict(ckpt, device)
        cfg, epoch, encoder, config_id, run_templates = RunConfig(), None, "openai_state_dict", "", "openai"
        context, seed, preprocessing = info["context_length"], None, {k: info[k] for k in ("image_size", "normalization",
                                                                                            "interpolation")}
        autocast_dtype = autocast_dtype_for("auto", device)  # bf16 on CUDA, fp32 on CPU
    else:
        model, cfg, ckpt = load_model(path, device, ckpt)
        epoch, encoder, config_id, run_templates = ckpt.get("epoch"), cfg.model.encoder, config_key(cfg), cfg.templates
        context, seed = cfg.model.text.context_length, cfg.seed
        preprocessing = {"image_size": cfg.model.image_resolution, "normalization": "[-1,1]"}
        autocast_dtype = autocast_dtype_for(cfg.precision, device)
    dataset = dataset or cfg.dataset
    entry = get_entry("datasets", dataset)
    # a bench model takes its own image size: another dataset's images are resized to it once (bench.data.resize)
    size = None if is_openai_state_dict(ckpt) else cfg.model.image_resolution
    opts = dict(cfg.data_opts) if dataset == cfg.dataset else {}
    test = _sized(entry.create("test", data_dir or cfg.data_dir, cfg.data_seed, **opts)
                  .subset(limit_test or cfg.limit_test), size, dataset)
    sets = template_sets(templates or [run_templates])
    tokenizer = get_entry("tokenizers", cfg.tokenizer).create(context, [p for t in sets.values()
                                                                        for p in fill(t, test.classes)])
    digest = file_digest(path)
    protocol = {"checkpoint": str(path), "checkpoint_sha256": digest, "checkpoint_epoch": epoch, "encoder": encoder,
                "config_id": config_id, "seed": seed, "dataset": dataset, "test_images": len(test), **preprocessing,
                **test.info}
    result = evaluate_sets(model, tokenizer, test, sets, device, autocast_dtype, per_template=per_template,
                           suite=suite, cache=FeatureCache(_writable(Path(path).parent / "features")),
                           weights_id=f"ckpt-{digest}",
                           train=lambda: _sized(entry.create("train", data_dir or cfg.data_dir, cfg.data_seed, **opts)
                                                .subset(cfg.limit_train), size, dataset))
    table = pd.DataFrame([{"run_id": f"{Path(path).parent.name}:{row['eval_templates']}", **protocol,
                           "templates": run_templates, **row} for row in result.rows])
    if out is not None:
        write_eval_files(out, table, test.classes, result.per_class, result.confusions, result.tables)
    return table


def _sized(data, size: int | None, dataset: str):
    from ..data.resize import fit_to_size

    return data if size is None else fit_to_size(data, size, dataset)


def check_eval_inputs(templates, dataset, data_dir, limit_test, device, out):
    """Every named input exists before a model is loaded."""
    check_positive("--limit-test", limit_test)
    for name in templates or []:
        get_entry("templates", name)
    if dataset is not None:
        get_entry("datasets", dataset)
    check_data_dir(data_dir)
    check_device(device)
    if out is not None:
        check_writable_folder(out)


def template_sets(names) -> dict:
    return {name: validated_templates(name, get_entry("templates", name).create()) for name in names}


@dataclass
class SetResults:
    """What :func:`evaluate_sets` measured: one row per template set (and single template), with their tables."""

    rows: list = field(default_factory=list)
    per_class: dict = field(default_factory=dict)  # label -> per-class accuracy
    confusions: dict = field(default_factory=dict)  # set name -> confusion matrix
    predictions: dict = field(default_factory=dict)  # set name -> each test image's top-1 class
    tables: dict = field(default_factory=dict)  # "<suite table>-<set>" -> DataFrame


def evaluate_sets(model, tokenizer, test, sets: dict, device, autocast_dtype, *, per_template=False, suite=None,
                  cache=None, weights_id="", train=None) -> SetResults:
    """Zero-shot (and the ``suite``'s evaluations) of ``model`` on ``test`` for each template set of ``sets``.

    The test images are encoded once; each set (and with ``per_template`` each of its templates) gets its own
    classifier. ``train``: a callable giving the linear probe's training split, asked for only when needed.
    """
    from ..evaluation.suite import FeatureCache, run_suite

    cache = cache or FeatureCache(None)
    feats = cache.get(f"{weights_id}-{test.name.replace('/', '_')}-{len(test)}",
                      lambda: image_features(model, to_device_uint8(test.images, device), autocast_dtype=autocast_dtype))
    labels = torch.as_tensor(test.labels)
    out, probe_columns = SetResults(), None
    for name, tpl in sets.items():
        for label, chosen in [(name, tpl)] + ([(f"{name}[{i}]", [t]) for i, t in enumerate(tpl)] if per_template else []):
            classifier = build_zero_shot_classifier(model, test.classes, chosen, tokenizer, device, autocast_dtype)
            m = classification_metrics(100.0 * feats @ classifier.cpu(), labels)
            row = {"eval_templates": label, "template": chosen[0] if label != name else "",
                   "n_templates": len(chosen), "zeroshot_top1": m["top1"], "zeroshot_top5": m["top5"],
                   "mean_per_class_recall": m["mean_per_class_recall"]}
            out.per_class[label] = m["per_class"]
            if label == name:  # one confusion matrix per set; single templates get per-class accuracy only
                out.confusions[label], out.predictions[label] = m["confusion"], m["predictions"]
            if suite is not None and suite.evals and label == name:
                evals = tuple(e for e in suite.evals if e != "probe" or probe_columns is None)
                columns, set_tables = run_suite(model, replace(suite, evals=evals),
                                                train=train() if "probe" in evals else test, test=test,
                                                templates=chosen, tokenizer=tokenizer, device=device,
                                                autocast_dtype=autocast_dtype, cache=cache, weights_id=weights_id)
                if "probe" in evals:
                    probe_columns = {k: v for k, v in columns.items() if k.startswith("probe_")}
                row.update(columns, **(probe_columns or {}))
                out.tables.update({f"{k}-{name}": v for k, v in set_tables.items()})
            out.rows.append(row)
    return out


def write_eval_files(out, table: pd.DataFrame, classes, per_class: dict, confusions: dict, tables: dict):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "eval.csv")
    write_csv(pd.DataFrame({"class": list(classes), **per_class}), out / "per_class.csv")
    for label, cm in confusions.items():
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
        write_csv(confusion_frame(cm, classes), out / f"confusion-{safe}.csv")
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
