"""Live curves in the tools people already watch: TensorBoard and Weights & Biases (``bench run --log``).

What a run logs, on the main rank only:
- the training loss at every ``--log-every`` read-back (``train/loss``, the rows of ``train_log.csv``);
- per epoch, each column of ``history.csv`` under :data:`HISTORY_TAGS` (learning rate, zero-shot top-1 / top-5 /
  mean per-class recall, with ``--holdout-classes`` seen / unseen / harmonic top-1, epoch and evaluation seconds,
  images/s), at the epoch's last step;
- at the end, the run's configuration as hyperparameters with its final metrics (TensorBoard's HParams view, W&B's
  config and summary), and the curves figure.

A resumed run continues its own curves: TensorBoard writes into the same folder with ``purge_step`` at the
checkpoint's step, so the points a killed process wrote from there are dropped, not doubled, and the checkpoint's
rows from that step are logged again (into a folder without earlier event files, ``--log tensorboard`` added on
``--resume``, every row the checkpoint holds, so the curves start at step 0); W&B resumes the same run id (``resume="allow"``) and skips the steps it
already has (a W&B run's steps only increase; the resumed run recomputes the same values where it is exact).

The results table never depends on a logger: one that fails (disk full, a W&B error) warns once and the run goes
on without it. This module imports neither backend until a run asks for it, and not torch: ``bench.config``
checks names with :func:`check_loggers`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import sys
from pathlib import Path

from ..errors import BenchError, one_line_cause

LOGGERS = {"tensorboard": ("tensorboard", "bench[tensorboard]"), "wandb": ("wandb", "bench[wandb]")}
LOSS_TAG = "train/loss"
# history.csv column -> tag
HISTORY_TAGS = {"train_loss": "train/epoch_loss", "lr": "train/lr", "images_per_s": "train/images_per_s",
                "epoch_seconds": "time/epoch_seconds", "eval_seconds": "time/eval_seconds",
                "zeroshot_top1": "zeroshot/top1", "zeroshot_top5": "zeroshot/top5",
                "mean_per_class_recall": "zeroshot/mean_per_class_recall",
                # --holdout-classes: top-1 on the trained classes' images, the held-out ones', their harmonic mean
                "seen_top1": "zeroshot/seen_top1", "unseen_top1": "zeroshot/unseen_top1",
                "harmonic_top1": "zeroshot/harmonic_top1"}
# runs.csv columns logged as the run's hyperparameters and its final metrics
HPARAM_COLUMNS = ("encoder", "templates", "tokenizer", "dataset", "preset", "epochs", "batch_size", "lr",
                  "weight_decay", "loss", "seed", "config_id", "params", "precision", "holdout_classes", "target")
# (zeroshot_top1_no_tta: an encoder's top-1 without its test-time views, in rows of encoders that have them)
FINAL_METRICS = ("zeroshot_top1", "zeroshot_top1_no_tta", "zeroshot_top5", "mean_per_class_recall",
                 "best_zeroshot_top1", "final_train_loss", "seen_top1", "unseen_top1", "harmonic_top1",
                 "time_to_target_seconds")


def check_loggers(names) -> tuple:
    """The logger names, each known; a one-line error names an unknown one."""
    names = tuple(names or ())
    for name in names:
        if name not in LOGGERS:
            raise BenchError(f"unknown logger {name!r}; --log takes {', '.join(LOGGERS)} (comma-separated)")
        if names.count(name) > 1:  # two writers would log every point twice
            raise BenchError(f"--log names {name!r} twice; name each logger once")
    return names


def check_logger_packages(names):
    """Before anything runs: each asked-for logger's package is installed, or one line says what to install."""
    for name in check_loggers(names):
        module, extra = LOGGERS[name]
        if importlib.util.find_spec(module) is None:
            raise BenchError(f"--log {name} needs the {module} package; install it with: pip install '{extra}'")


def wandb_run_id(run_id: str) -> str:
    """A W&B run id for a bench run id: the same on every resume, at most 64 characters W&B accepts."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)
    return clean if len(clean) <= 64 else f"{clean[:51]}-{hashlib.sha1(run_id.encode()).hexdigest()[:12]}"


class TensorBoardLogger:
    name = "tensorboard"

    def __init__(self, log_dir: Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        # a resumed run's folder without event files holds none of its points (--log added on --resume, or the
        # folder removed): nothing to purge, and every checkpointed row to log, not only those from the checkpoint on
        self.holds_points = purge_step is not None and any(Path(log_dir).glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step if self.holds_points else None)

    def replay_from(self, resume_step: int) -> int:
        """The first step of a resumed run's checkpointed rows to log again."""
        return resume_step if self.holds_points else 0

    def scalars(self, step: int, values: dict):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self):
        self.writer.flush()

    def finish(self, step: int, hparams: dict, metrics: dict, figure: Path | None):
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # into this run's own folder (add_hparams would make a sub-run): HParams then lists every run of a sweep
        experiment, start, end = hparams_summary(hparams, {f"hparams/{k}": v for k, v in metrics.items()})
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(f"hparams/{key}", value, step)
        if figure is not None and figure.is_file():
            import numpy as np
            from PIL import Image

            self.writer.add_image("curves", np.asarray(Image.open(figure).convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbLogger:
    name = "wandb"

    def __init__(self, run_id: str, run_dir: Path, config: dict, project: str | None, entity: str | None):
        import wandb

        self.wandb = wandb
        # project and entity from the flags, else W&B's own WANDB_PROJECT / WANDB_ENTITY; WANDB_MODE=offline works
        self.run = wandb.init(id=wandb_run_id(run_id), name=run_id, resume="allow", dir=str(run_dir), config=config,
                              project=project or os.environ.get("WANDB_PROJECT") or "bench",
                              entity=entity or os.environ.get("WANDB_ENTITY"), reinit="create_new")

    def scalars(self, step: int, values: dict):
        if step < self.run.step:  # a resumed run's steps the W&B run already has (its steps only increase)
            return
        self.run.log(values, step=step)

    def replay_from(self, resume_step: int) -> int:
        """The first step of a resumed run's checkpointed rows to log again: an offline W&B run cannot tell what
        the run id holds already, and a resumed W&B run's steps only increase."""
        return resume_step

    def flush(self):
        pass

    def finish(self, step: int, hparams: dict, metrics: dict, figure: Path | None):
        self.run.config.update(hparams, allow_val_change=True)
        self.run.summary.update(metrics)
        if figure is not None and figure.is_file():
            self.run.log({"curves": self.wandb.Image(str(figure))}, step=step)

    def close(self):
        self.run.finish()


class RunLoggers:
    """The loggers of one run; each call goes to every logger still working. A logger that raises is warned about
    once, with the cause, and dropped: the run and its result tables never wait on it."""

    def __init__(self, loggers: list, stream=None):
        self.loggers, self.stream = list(loggers), stream

    def __bool__(self):
        return bool(self.loggers)

    def _each(self, method: str, *args):
        for logger in list(self.loggers):
            self._call(logger, method, *args)

    def _call(self, logger, method: str, *args):
        if logger not in self.loggers:  # dropped by an earlier failure
            return
        try:
            getattr(logger, method)(*args)
        except Exception as exc:  # noqa: BLE001 - a logger must never end a run
            self.loggers.remove(logger)
            print(f"bench: warning: the {logger.name} logger failed ({one_line_cause(exc)}); the run goes on "
                  f"without it, its results table is unaffected", file=self.stream or sys.stderr)

    def loss(self, row: dict):
        self._each("scalars", *_loss_point(row))

    def replay(self, loss_rows: list, history_rows: list, from_step: int):
        """A resumed run's checkpointed rows at ``from_step`` and after (the loggers dropped the stopped
        process's points from there), or all of them for a logger that holds none of the run's points; in step
        order, a step's loss before its epoch row, as the run logged them."""
        points = sorted([(int(r["step"]), 0, _loss_point(r)) for r in loss_rows] +
                        [(int(r["step"]), 1, _epoch_point(r)) for r in history_rows], key=lambda p: p[:2])
        for logger in list(self.loggers):
            start = logger.replay_from(from_step)
            for step, _, point in points:
                if step >= start:
                    self._call(logger, "scalars", *point)
            self._call(logger, "flush")

    def epoch(self, row: dict):
        self._each("scalars", *_epoch_point(row))
        self._each("flush")

    def finish(self, row: dict, step: int, figure: Path | None):
        hparams = {k: row[k] for k in HPARAM_COLUMNS if row.get(k) is not None}
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        metrics = {k: float(row[k]) for k in FINAL_METRICS if row.get(k) is not None and not math.isnan(float(row[k]))}
        self._each("finish", step, hparams, metrics, figure)

    def close(self):
        self._each("close")
        self.loggers = []


def _loss_point(row: dict) -> tuple[int, dict]:
    """A ``train_log.csv`` row as (step, {tag: value})."""
    return int(row["step"]), {LOSS_TAG: float(row["train_loss"])}


def _epoch_point(row: dict) -> tuple[int, dict]:
    """A ``history.csv`` row as (step, {tag: value}), its blanks (an epoch not evaluated) left out."""
    return int(row["step"]), {tag: float(row[col]) for col, tag in HISTORY_TAGS.items()
                              if row.get(col) is not None and not math.isnan(float(row[col]))}


def open_loggers(names, run_id: str, run_dir: Path, config: dict, resume_step: int | None,
                 wandb_project: str | None = None, wandb_entity: str | None = None) -> RunLoggers:
    """The loggers ``names`` of run ``run_id``; one that cannot start warns (as a failing one does)."""
    loggers = RunLoggers([])
    for name in check_loggers(names):
        try:
            if name == "tensorboard":
                # hide what the stopped process wrote from the checkpoint's step on (TensorBoard's reader purges)
                loggers.loggers.append(TensorBoardLogger(run_dir / "tensorboard", resume_step))
            else:
                loggers.loggers.append(WandbLogger(run_id, run_dir, config, wandb_project, wandb_entity))
        except Exception as exc:  # noqa: BLE001 - as a logger failing later: warn, train on
            print(f"bench: warning: the {name} logger could not start ({one_line_cause(exc)}); the run goes on "
                  f"without it", file=sys.stderr)
    return loggers
