"""One training run end to end: registry lookups -> data and model -> trainer -> evaluator -> result tables."""
from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import compact_embedding
from .config import RunConfig
from .cuda_graph import CudaGraphStep
from .data import ArrayDataset, DeviceLoader, to_device_uint8
from .errors import BenchError
from .evaluator import build_zero_shot_classifier, trim_tokens, validate
from .io import atomic_write_text, save_checkpoint
from .loss import ClipLoss
from .model import count_parameters, create_model_from_cfg
from .plugins import get_entry
from .results import append_run, plot_curves, provenance, write_csv
from .templates import check_templates, fill
from .trainer import (TrainState, autocast_dtype_for, build_optimizer, build_scheduler, compile_towers,
                      resolve_device, set_backend_flags, text_mode_for, train_epoch)


@dataclass
class Components:
    """What the registry names resolve to for one configuration."""

    templates: list
    train: ArrayDataset
    test: ArrayDataset
    tokenizer: object

    @property
    def classes(self):
        return self.train.classes


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_names(cfg: RunConfig):
    """Resolve every registered name first, so a typo fails before any data is read."""
    for kind, name in (("encoders", cfg.model.encoder), ("tokenizers", cfg.tokenizer), ("templates", cfg.templates),
                       ("datasets", cfg.dataset)):
        get_entry(kind, name)


def check_out_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create results folder {str(out)!r} ({exc.strerror}); pass a writable --out") from None
    if not os.access(out, os.W_OK):
        raise BenchError(f"results folder {str(out)!r} is not writable; pass a writable --out")
    return out


def load_components(cfg: RunConfig, eval_templates: list | None = None) -> Components:
    templates = check_templates(cfg.templates, get_entry("templates", cfg.templates).create())
    dataset = get_entry("datasets", cfg.dataset)
    train = dataset.create("train", cfg.data_dir, cfg.data_seed).subset(cfg.limit_train)
    test = dataset.create("test", cfg.data_dir, cfg.data_seed).subset(cfg.limit_test)
    if train.classes != test.classes:
        raise BenchError(f"dataset {cfg.dataset!r}: train and test splits name different classes")
    prompts = fill(templates + list(eval_templates or []), train.classes)
    tokenizer = get_entry("tokenizers", cfg.tokenizer).create(cfg.model.text.context_length, prompts)
    return Components(templates, train, test, tokenizer)


def new_run_id(cfg: RunConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    encoder = "".join(c if c.isalnum() or c in "-_" else "-" for c in cfg.model.encoder)
    return f"{stamp}-{encoder}-s{cfg.seed}-{uuid.uuid4().hex[:6]}"


def checkpoint_payload(state: TrainState, cfg: RunConfig, classes, generator, metrics: dict, with_optimizer: bool):
    from . import __version__
    from .trainer import _unwrap

    payload = {
        "model": _unwrap(state.model).state_dict(),
        "config": cfg.to_dict(),
        "classes": list(classes),
        "epoch": state.epoch,
        "step": state.step,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "history": state.history,
        "bench_version": __version__,
    }
    if with_optimizer:
        payload.update(optimizer=state.optimizer.state_dict(), scheduler=state.scheduler.state_dict(),
                       generator=generator.get_state(), torch_rng=torch.get_rng_state())
    return payload


def run(cfg: RunConfig, run_id: str | None = None) -> dict:
    """Train, evaluate zero-shot every ``eval_every`` epochs, write the run folder and a ``runs.csv`` row."""
    check_names(cfg)
    out = check_out_dir(cfg.out)
    device = resolve_device(cfg.device)
    set_backend_flags(device)
    seed_everything(cfg.seed)
    parts = load_components(cfg)
    autocast_dtype = autocast_dtype_for(cfg.precision, device)
    channels_last = cfg.channels_last and device.type == "cuda"

    model = create_model_from_cfg(cfg.model).to(device)
    n_params = count_parameters(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    prompt_tokens = trim_tokens(parts.tokenizer(fill(parts.templates, parts.classes))).to(device)
    # speed (docs/performance.md): exact sparse token-embedding updates; the step as one CUDA graph
    compact = compact_embedding.install(model, prompt_tokens) if cfg.compact_embedding else None
    text_mode = text_mode_for(len(prompt_tokens), cfg.batch_size, device)
    use_graph = cfg.cuda_graph and device.type == "cuda" and text_mode == "all"
    train_model = compile_towers(model) if cfg.compile else model
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    loader = DeviceLoader(parts.train, cfg.batch_size, device, len(parts.templates), generator,
                          channels_last=channels_last)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, device, capturable=use_graph)
    if compact is not None:
        compact_embedding.attach(compact, optimizer)
    scheduler = build_scheduler(optimizer, cfg.epochs * len(loader), cfg.warmup_steps)
    state = TrainState(train_model, optimizer, scheduler, ClipLoss(cfg.loss), prompt_tokens, autocast_dtype, text_mode)
    step_fn = CudaGraphStep() if use_graph else None
    test_images = to_device_uint8(parts.test.images, device)
    test_labels = torch.as_tensor(parts.test.labels, device=device)

    run_id = run_id or new_run_id(cfg)
    run_dir = out / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    atomic_write_text(run_dir / "config.json", cfg.to_json())

    best, metrics, train_seconds, train_images = None, {}, 0.0, 0
    for epoch in range(cfg.epochs):
        stats = train_epoch(state, loader, len(loader), cfg.log_every, cfg.progress,
                            desc=f"epoch {epoch + 1}/{cfg.epochs}", step_fn=step_fn)
        state.epoch = epoch + 1
        train_seconds += stats["seconds"]
        train_images += stats["images"]
        row = {"epoch": state.epoch, "step": state.step, "train_loss": stats["train_loss"],
               "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": stats["seconds"],
               "images_per_s": stats["images"] / max(stats["seconds"], 1e-9),
               "zeroshot_top1": np.nan, "zeroshot_top5": np.nan, "mean_per_class_recall": np.nan}
        if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
            classifier = build_zero_shot_classifier(model, parts.classes, parts.templates, parts.tokenizer, device,
                                                    autocast_dtype)
            metrics = validate(model, test_images, test_labels, classifier, autocast_dtype=autocast_dtype,
                               channels_last=channels_last)
            row.update(zeroshot_top1=metrics["top1"], zeroshot_top5=metrics["top5"],
                       mean_per_class_recall=metrics["mean_per_class_recall"])
        state.history.append(row)
        write_csv(pd.DataFrame(state.history), run_dir / "history.csv")
        if cfg.save_checkpoints:
            is_best = not np.isnan(row["zeroshot_top1"]) and (best is None or row["zeroshot_top1"] > best["zeroshot_top1"])
            save_checkpoint(checkpoint_payload(state, cfg, parts.classes, generator, row, True), run_dir / "last.pt")
            if is_best:
                save_checkpoint(checkpoint_payload(state, cfg, parts.classes, generator, row, False), run_dir / "best.pt")
        if not np.isnan(row["zeroshot_top1"]) and (best is None or row["zeroshot_top1"] > best["zeroshot_top1"]):
            best = row

    history = pd.DataFrame(state.history)
    plot_curves(history, run_dir / "curves.png", title=f"{cfg.model.encoder} on {cfg.dataset} ({run_id})")
    per_class = pd.DataFrame({"class": list(parts.classes), "accuracy": metrics["per_class"],
                              "support": metrics["confusion"].sum(axis=1)})
    write_csv(per_class, run_dir / "per_class.csv")
    write_csv(pd.DataFrame(metrics["confusion"], index=list(parts.classes), columns=list(parts.classes))
              .rename_axis("true").reset_index(), run_dir / "confusion.csv")
    row = run_row(cfg, run_id, device, n_params, train_seconds, train_images, metrics, history, best, parts,
                  autocast_dtype)
    append_run(out, row)
    return row


def run_row(cfg, run_id, device, n_params, train_seconds, train_images, metrics, history, best, parts, autocast_dtype):
    prov = provenance(device)
    return {
        "run_id": run_id, "time": prov["time"], "encoder": cfg.model.encoder, "tokenizer": cfg.tokenizer,
        "templates": cfg.templates, "dataset": cfg.dataset, "preset": cfg.preset, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "loss": cfg.loss,
        "seed": cfg.seed, "device": str(device), "device_name": prov["device_name"],
        "precision": "bf16" if autocast_dtype is not None else "fp32", "params": n_params,
        "train_seconds": round(train_seconds, 3), "train_images_per_s": round(train_images / max(train_seconds, 1e-9), 2),
        "zeroshot_top1": metrics["top1"], "zeroshot_top5": metrics["top5"],
        "mean_per_class_recall": metrics["mean_per_class_recall"],
        "final_train_loss": float(history["train_loss"].iloc[-1]),
        "best_epoch": int(best["epoch"]) if best else None,
        "best_zeroshot_top1": float(best["zeroshot_top1"]) if best else None,
        "limit_train": cfg.limit_train, "limit_test": cfg.limit_test, "train_images": len(parts.train),
        "test_images": len(parts.test), "eval_templates": cfg.templates, "image_size": cfg.model.image_resolution,
        "normalization": "[-1,1]",
        **{k: prov[k] for k in ("git_commit", "git_dirty", "torch_version", "cuda_version", "bench_version",
                                "python_version", "hostname", "command")},
    }
