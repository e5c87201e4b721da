"""Build results folders the way ``bench run`` leaves them, without training (fast, exact numbers)."""
from pathlib import Path

import json

import numpy as np
import pandas as pd

from bench.results.run_folder import write_csv
from bench.results.runs_csv import append_run

CLASSES = ["cat", "dog", "frog"]

# A results folder an older bench wrote (its README says how): runs.csv and the run folders' small files, no
# checkpoints. OLD_FLAGS: the flags its runs trained with, besides --templates and --seeds.
OLD_RESULTS = Path(__file__).resolve().parent / "old_results" / "bench-7bd3d82"
# two runs of OLD_FLAGS whose ids that bench computed otherwise: on 2 ranks x --batch-size 16, and AdamW with
# --momentum 0.9 (its README says more)
OLD_ID_RESULTS = OLD_RESULTS.with_name("bench-7bd3d82-ids")
OLD_FLAGS = ["--preset", "smoke", "--dataset", "synthetic", "--no-progress", "--embed-dim", "32", "--text-width", "32",
             "--text-layers", "1", "--text-heads", "2", "--encoder-opt", "width=8"]


def make_row(run_id, encoder="a", seed=0, top1=0.5, templates="seed", **extra):
    row = {"run_id": run_id, "config_id": f"cfg-{encoder}-{templates}", "encoder": encoder, "tokenizer": "clip_bpe",
           "templates": templates, "dataset": "synthetic", "preset": "smoke", "epochs": 1, "batch_size": 16,
           "lr": 1e-4, "weight_decay": 0.01, "loss": "clip", "limit_train": 64, "limit_test": 30, "image_size": 32,
           "precision": "fp32", "seed": seed, "zeroshot_top1": top1, "zeroshot_top5": min(1.0, top1 + 0.3),
           "mean_per_class_recall": top1, "train_seconds": 10.0 + seed, "params": 1000 if encoder == "a" else 2000,
           "test_images": 30, "eval_templates": templates, "normalization": "[-1,1]", "device_name": "x86_64",
           "hostname": "box", "torch_version": "2.x"}
    row.update(extra)
    return row


def write_results(folder: Path, rows, run_folders=True) -> Path:
    for row in rows:
        append_run(folder, row)
        if run_folders:
            d = folder / "runs" / row["run_id"]
            d.mkdir(parents=True, exist_ok=True)
            (d / "config.json").write_text("{}")
            write_csv(pd.DataFrame({"epoch": [1, 2], "step": [4, 8], "train_loss": [3.0, 2.5],
                                    "zeroshot_top1": [row["zeroshot_top1"] - 0.1, row["zeroshot_top1"]]}), d / "history.csv")
            write_csv(pd.DataFrame({"step": [2, 4, 6, 8], "epoch": [1, 1, 2, 2], "train_loss": [3.2, 2.9, 2.6, 2.4]}),
                      d / "train_log.csv")
            write_csv(pd.DataFrame({"class": CLASSES, "accuracy": [row["zeroshot_top1"], 0.2, 0.9],
                                    "support": [10, 10, 10]}), d / "per_class.csv")
            cm = np.array([[5, 3, 2], [1, 2, 7], [0, 1, 9]])
            write_csv(pd.DataFrame(cm, index=CLASSES, columns=CLASSES).rename_axis("true").reset_index(),
                      d / "confusion.csv")
    return folder


def record_eval_every(folder: Path, rows, every: int):
    """Give the run folders of ``rows`` a ``config.json`` recording ``--eval-every`` ``every``: runs.csv has no column
    for it, so the result tables read it there."""
    for row in rows:
        (folder / "runs" / row["run_id"] / "config.json").write_text(json.dumps({"eval_every": every}))


def write_with_predictions(folder: Path, rows, hits, labels) -> Path:
    """A results folder whose runs kept predictions.npy: ``hits[i]`` marks the test images run i got right (a
    miss predicts the next class)."""
    from bench.results.predictions import save_predictions

    write_results(folder, rows)
    for row, right in zip(rows, hits):
        top1 = np.where(right, labels, (labels + 1) % len(CLASSES))
        save_predictions(folder / "runs" / row["run_id"] / "predictions.npy", labels, top1, len(CLASSES))
    return folder
