"""Zero-shot transfer: a model evaluated on datasets it was not trained on, each with its own class names and
template set, its images resized once to the model's input; one ``runs.csv`` row and one run folder each.

``bench run --transfer stl10,cifar100@openai`` evaluates the final weights on each listed dataset after training;
``bench eval CHECKPOINT --dataset stl10`` does it for a finished run. A transfer row is keyed by its own run id,
``<training run id>@<dataset>`` (``+<template set>`` when not the dataset's default set), so ``runs.csv`` keeps one row per run id and every tool that reads it (append,
``--rebuild`` from ``result.json`` records, lookups, paired tests) works unchanged; ``source_run_id`` links the
row to its training run and ``eval_dataset`` names what was evaluated (on the training run's own row it equals
``dataset``). Its folder ``runs/<run id>/`` holds ``result.json``, ``config.json`` (the training run's),
``per_class.csv``, ``confusion.csv`` and ``predictions.npy``.

A transfer dataset's template set is the one given after ``@``, else the one its registration names
(``register(name, factory, summary, templates="...")``), else the run's own set.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..data.datasets import ROW_INFO
from ..results.columns import CONFIG_COLUMNS, MACHINE_COLUMNS
from ..results.run_folder import file_safe, write_class_tables
from .dataset_lookup import Target, dataset_templates, decode_options, load_target, zero_shot_templates
from .transfer_spec import SEPARATOR, TransferSpec, parse_transfer

# What a transfer row repeats of its training run's row: what the model is (stop_at_target too: a model stopped
# early is another model), and where and how it was made. Its measurements (accuracies, times, the suite's
# columns, held-out accuracies) are the home dataset's, left out.
KEPT_COLUMNS = (*CONFIG_COLUMNS, *MACHINE_COLUMNS, "config_id", "time", "seed", "device", "params", "train_images",
                "normalization", "eval_checkpoint", "deterministic", "world_size", "global_batch_size", "resumes",
                "unseen_classes", "stop_at_target", "git_commit", "git_dirty", "bench_version", "python_version",
                "command", "numpy_version")


def load_targets(cfg) -> list[Target]:
    """A run's ``--transfer`` datasets, read from their default folders with the run's data seed and ``--limit-test``."""
    size = cfg.model.image_resolution
    return [load_target(s.dataset, s.templates or zero_shot_templates(s.dataset, cfg.templates), None, cfg.data_seed,
                        cfg.limit_test, size, decode_options(s.dataset, size))
            for s in parse_transfer(cfg.transfer, cfg.dataset)]


def evaluate_target(model, target: Target, tokenizer, device, world, autocast_dtype=None,
                    channels_last: bool = False) -> dict:
    """Zero-shot metrics of ``model`` on ``target``: its classes' template classifier, the images sharded over ranks
    (every rank takes part and gets the same metrics)."""
    import torch

    from ..data.loader import to_device_uint8
    from ..evaluation.zero_shot import build_zero_shot_classifier, validate_sharded

    classifier = build_zero_shot_classifier(model, target.test.classes, target.templates, tokenizer, device,
                                            autocast_dtype)
    images = to_device_uint8(target.test.images, device)
    labels = torch.as_tensor(target.test.labels, device=device)
    return validate_sharded(model, images, labels, classifier, world, autocast_dtype=autocast_dtype,
                            channels_last=channels_last)


def safe_name(text: str) -> str:
    """A file-name-safe form of a dataset or template-set name; a short digest keeps names that had to change apart."""
    safe = file_safe(text)
    if safe != text or len(safe) > 60:
        safe = f"{safe[:48]}-{hashlib.sha1(str(text).encode()).hexdigest()[:8]}"
    return safe


def transfer_run_id(run_id: str, dataset: str, templates: str | None = None) -> str:
    """``<run id>@<dataset>``, then ``+<template set>`` when it is not the dataset's default."""
    return f"{run_id}{SEPARATOR}{safe_name(dataset)}" + (f"+{safe_name(templates)}" if templates else "")


def spec_run_id(run_id: str, spec: TransferSpec, run_templates: str) -> str:
    """The id of the transfer row of ``spec`` (a ``--transfer`` entry) for run ``run_id``, whose own template set is
    ``run_templates``: ``+TEMPLATES`` only for a set other than the one the dataset is evaluated with by default, as
    ``bench eval --dataset D --templates T`` names that evaluation."""
    default = dataset_templates(spec.dataset, check=False) or run_templates
    return transfer_run_id(run_id, spec.dataset, spec.templates if spec.templates not in (None, default) else None)


def transfer_row(base: dict, run_id: str, target: Target, metrics: dict, **extra) -> dict:
    """A transfer row: ``base`` (the training run's row) cut to :data:`KEPT_COLUMNS`, then this evaluation's
    dataset, protocol and metrics; ``extra`` overrides (the provenance of a later ``bench eval``)."""
    row = {"run_id": run_id, **{k: v for k, v in base.items() if k in KEPT_COLUMNS and k != "run_id"}}
    row.update(source_run_id=base["run_id"], eval_dataset=target.dataset, eval_templates=target.templates_name,
               n_classes=len(target.test.classes), test_images=len(target.test), native_image_size=target.native_size,
               **{k: target.test.info[k] for k in ROW_INFO if k in target.test.info},
               zeroshot_top1=metrics["top1"], zeroshot_top5=metrics["top5"],
               mean_per_class_recall=metrics["mean_per_class_recall"], **extra)
    return row


def record_transfer(out, row: dict, target: Target, metrics: dict, config: dict, replace: bool = False):
    """The transfer row's run folder (``config.json``: ``config``, the training run's), then its ``runs.csv`` row;
    ``replace``: in place of the row of that run id already there (one an earlier attempt of the run wrote)."""
    import numpy as np

    from ..atomic_files import atomic_write_text
    from ..results.predictions import FILENAME as PREDICTIONS
    from ..results.predictions import save_predictions
    from ..results.runs_csv import finish_run

    run_dir = Path(out) / "runs" / row["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, sort_keys=True, default=str))
    classes = target.test.classes
    write_class_tables(run_dir, classes, np.asarray(metrics["per_class"], dtype=float),
                       np.asarray(metrics["confusion"], dtype=np.int64))
    save_predictions(run_dir / PREDICTIONS, target.test.labels, np.asarray(metrics["predictions"]), len(classes))
    finish_run(out, run_dir, row, replace=replace)
