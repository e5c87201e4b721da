"""``bench eval --open-clip MODEL --pretrained TAG_OR_FILE``: a pretrained open_clip CLIP measured with bench's
protocol, recorded as rows of ``runs.csv`` that ``bench compare`` and ``bench report`` read like any run's.

Each template set evaluated is one row and one run folder (``runs/<run_id>/``: ``result.json``, per-class
accuracy, the confusion matrix, each test image's prediction for paired tests, and the suite's tables). The row
names the model (``encoder`` ``open_clip:<MODEL>``), its weights (``pretrained``: the tag, or the file with its
digest), its preprocessing and parameter count; the training columns stay blank.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic_files import check_writable_folder
from ..clip.model import count_parameters
from ..clip.pretrained import load_open_clip
from ..config import RunConfig
from ..data.class_split import (
    canonical_holdout,
    check_holdout_spec,
    class_indices,
    holdout_count,
    resolve_holdout,
)
from ..distributed.world import resolve_device
from ..engine.build import autocast_dtype_for, precision_name
from ..errors import BenchError
from ..host.manager import get_entry
from ..results.predictions import FILENAME as PREDICTIONS
from ..results.predictions import save_predictions
from ..results.run_folder import file_safe, provenance, write_class_tables, write_csv
from ..results.runs_csv import finish_run
from .evaluate import (
    check_eval_inputs,
    dataset_list,
    evaluate_sets,
    template_sets,
    write_eval_files,
)
from .dataset_lookup import decode_options, load_target, published_templates


def evaluate_open_clip(model_name: str, pretrained: str | None, templates=None, dataset="cifar10",
                       data_dir=None, limit_test=None, device="auto", per_template: bool = False, suite=None,
                       out=None, results="results", holdout_classes=()) -> pd.DataFrame:
    """Zero-shot (and ``suite``) metrics of an open_clip model, one row per dataset (a name or a list) x template set
    (default: the set the dataset names, else ``openai``, CLIP's 18 CIFAR-10 prompts); each set's row is appended
    to ``results/runs.csv`` (the table's ``recorded`` attribute counts them). ``holdout_classes``: class names whose
    test images count as unseen, for seen, unseen and harmonic top-1 on the same split as a run that held them out."""
    from ..evaluation.suite import file_digest

    if not pretrained:
        raise BenchError("--open-clip needs --pretrained TAG_OR_FILE: an open_clip tag (open_clip.list_pretrained() "
                         "names them; downloaded by open_clip) or a local weights file")
    datasets = dataset_list(dataset) or ["cifar10"]
    check_eval_inputs(templates, datasets, data_dir, limit_test, device, out)
    check_holdout_spec(holdout_classes)
    if holdout_count(holdout_classes) is not None:
        raise BenchError("--holdout-classes COUNT draws classes with a run's seed, and a pretrained model has none; "
                         "name the classes (--holdout-classes cat,truck), e.g. a run's unseen_classes")
    holdout_classes = canonical_holdout(holdout_classes)  # one split in any order, as bench run keeps it
    results = check_writable_folder(results, "--results")
    device = resolve_device(device)
    model, tokenizer, info = load_open_clip(model_name, pretrained, device)
    model_name = info["name"]  # a config file's model is named by its stem
    defaults = RunConfig()
    weights = info["weights_file"]
    digest = file_digest(weights) if weights else None
    autocast_dtype = autocast_dtype_for("auto", device)  # bf16 on CUDA (as CLIP_benchmark's amp), fp32 on CPU
    prov = provenance(device)
    base = {
        "encoder": f"open_clip:{model_name}", "tokenizer": f"open_clip:{model_name}",
        "preset": "pretrained", "device": str(device), "device_name": prov["device_name"],
        "precision": precision_name(autocast_dtype), "torch_threads": torch.get_num_threads(),
        "params": count_parameters(model.model), "limit_test": limit_test,
        "image_size": info["image_size"], "normalization": info["normalization"],
        "interpolation": info["interpolation"], "pretrained": Path(weights).name if weights else pretrained,
        "pretrained_sha256": digest, "eval_checkpoint": weights or f"open_clip:{pretrained}",
        **{k: prov[k] for k in ("time", "git_commit", "git_dirty", "torch_version", "cuda_version", "bench_version",
                                "python_version", "hostname", "command", "numpy_version")},
    }
    rows, parts, records = [], [], []
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    planned = []  # every dataset loaded and its split resolved first: a bad one stops before any row is written
    for name in datasets:
        # images as the dataset holds them: the model's own transform resizes them
        target = load_target(name, published_templates(name), data_dir, defaults.data_seed, limit_test, None,
                             decode_options(name, info["image_size"]))
        unseen = resolve_holdout(holdout_classes, target.test.classes, 0, name) if holdout_classes else ()
        planned.append((name, target, template_sets(templates or [target.templates_name]), unseen))
    for name, target, sets, unseen in planned:
        test = target.test
        result = evaluate_sets(model, tokenizer, test, sets, device, autocast_dtype, per_template=per_template,
                               suite=suite, weights_id=f"openclip-{digest or pretrained}",
                               train=lambda name=name: get_entry("datasets", name).create(
                                   "train", data_dir or defaults.data_dir, defaults.data_seed,
                                   **decode_options(name, info["image_size"])),
                               unseen=class_indices(test.classes, unseen) if unseen else None)
        # a pretrained model has no training set in bench: every dataset it is evaluated on is its own row's dataset
        evaluated = {"dataset": name, "eval_dataset": name, "n_classes": len(test.classes), "test_images": len(test),
                     "native_image_size": target.native_size}
        if unseen:
            evaluated.update(holdout_classes=",".join(holdout_classes), unseen_classes=",".join(unseen))
        for row in result.rows:
            label = row["eval_templates"]
            set_name = label.split("[")[0]
            is_set = label == set_name  # a set's row is a run of its own; its single templates' rows follow, printed
            if is_set:  # the id names the run's folder: a plugin's set name ("mine/short") must not nest it
                run_id = (f"{stamp}-openclip-{_safe(model_name)}-{_safe(base['pretrained'])}-{_safe(set_name)}-"
                          f"{uuid.uuid4().hex[:6]}")
            rows.append({"run_id": run_id if is_set else f"{run_id}:{label}",
                         "config_id": _config_id(model_name, digest or pretrained, label, name, limit_test,
                                                 holdout_classes),
                         "templates": set_name, **base, **evaluated, **row})
            if is_set:
                records.append((run_id, rows[-1], test, result, set_name))
        parts.append((name, test.classes, result))
    for record in records:  # every dataset measured: now the rows
        _record(results, *record)
    recorded = len(records)
    table = pd.DataFrame(rows)
    table.attrs["recorded"] = recorded
    if out is not None:
        write_eval_files(out, table, parts)
    return table


def _record(results: Path, run_id: str, row: dict, test, result, set_name: str):
    """The run folder of one template set's evaluation, then its runs.csv row."""
    run_dir = results / "runs" / run_id
    run_dir.mkdir(parents=True)
    write_class_tables(run_dir, test.classes, result.per_class[set_name], result.confusions[set_name])
    save_predictions(run_dir / PREDICTIONS, test.labels, np.asarray(result.predictions[set_name]), len(test.classes))
    for name, table in result.tables.items():
        if name.endswith(f"-{set_name}"):
            write_csv(table, run_dir / f"{name.removesuffix('-' + set_name)}.csv")
    finish_run(results, run_dir, {k: v for k, v in row.items() if k not in ("template", "n_templates")})


def _config_id(model_name, weights, templates, dataset, limit_test, holdout_classes=()) -> str:
    """10 hex digits naming what was measured: model, weights, templates, data (as bench run's config ids); held-out
    classes enter only when given, so the ids of rows without them stay as they were."""
    key = {"open_clip": model_name, "pretrained": weights, "templates": templates, "dataset": dataset,
           "limit_test": limit_test}
    if holdout_classes:
        key["holdout_classes"] = list(holdout_classes)
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def _safe(text: str) -> str:
    return file_safe(text)[:40]
