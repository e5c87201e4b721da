"""One training run end to end: registry lookups -> data and model -> trainer -> evaluator -> result tables."""
from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic_files import ProcessLock, atomic_write_text
from ..clip.model import averages_views, count_parameters, create_model_from_cfg
from ..clip.prompts import prompt_table
from ..clip.templates import fill, load_templates
from ..clip.tokenizer import own_vocabulary
from ..config import RunConfig
from ..data.class_split import class_indices, resolve_holdout, without_classes
from ..data.datasets import ROW_INFO, ArrayDataset
from ..data.loader import DeviceLoader, to_device_uint8
from ..data.resize import fit_to_size
from ..engine.determinism import deterministic_mode
from ..distributed.world import broadcast_object, init_distributed, log_main, mean_over_ranks, reduce_epoch_stats
from ..engine.build import autocast_dtype_for, build_engine, set_backend_flags, uses_channels_last
from ..engine.checkpoint import (CheckpointSaver, RunProgress, load_weights, plain, restore_training,
                                 resume_precision, resume_threads_note)
from ..engine.epoch_loop import bars_shown
from ..engine.faults import FiniteWatch, stop_on_signal
from ..engine.prewarm import prewarm
from ..errors import BenchError, Interrupted
from ..evaluation.holdout import seen_unseen_metrics
from ..evaluation.target import check_target_measured, first_reached, parse_target, target_columns
from ..evaluation.zero_shot import classifier_from_features, prompt_features, validate_sharded
from ..host.manager import get_entry
from ..results.columns import config_key
from ..results.predictions import FILENAME as PREDICTIONS
from ..results.predictions import save_predictions
from ..results.run_folder import RUNNING_LOCK, file_safe, plot_curves, provenance, write_class_tables, write_csv
from ..results.runs_csv import finish_run
from .dataset_lookup import dataset_split
from .transfer import evaluate_target, load_targets, record_transfer, spec_run_id, transfer_row
from .transfer_spec import TransferSpec
from .validation import (check_encoder_forward, check_image_size, check_names, check_prompt_tokens,
                         check_run_inputs)


@dataclass
class Components:
    """What the registry names resolve to for one configuration."""

    templates: list
    train: ArrayDataset  # the whole training split (the linear probe's), held-out classes included
    test: ArrayDataset
    tokenizer: object
    unseen: tuple = ()  # classes held out of training (--holdout-classes), in the dataset's order
    trained: ArrayDataset | None = None  # what training sees: ``train`` without the held-out classes

    def __post_init__(self):
        if self.trained is None:
            self.trained = self.train

    @property
    def classes(self):
        """Every class: the zero-shot classifier chooses among all of them, held out or not."""
        return self.train.classes


# Held from a run's seeding to the end of its model's initialisation, the only draws from the global generators
# (training draws from the run's own generator), so runs built in several threads at once initialise as alone.
GLOBAL_RNG = threading.Lock()


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_out_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create results folder {str(out)!r} ({exc.strerror}); pass a writable --out") from None
    for folder in (out, out / "runs"):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise BenchError(f"results folder {str(folder)!r} is not writable; pass a writable --out")
    lock = out / "runs.csv.lock"  # every run's row is appended under it: found now, not after training
    if lock.exists() and not (lock.is_file() and os.access(lock, os.R_OK | os.W_OK)):
        raise BenchError(f"{str(lock)!r} is not a file writable for you, so the run's row could not be appended; "
                         f"make it one (or delete it: bench makes it again), or pass another --out")
    return out


def load_components(cfg: RunConfig, eval_templates: list | None = None, drawn: tuple = ()) -> Components:
    """Templates, both splits at the model's image size (resized here, once, where the dataset's differs) and the
    tokenizer. ``drawn``: the held-out classes a resumed run recorded when it started (its last.pt's
    ``unseen_classes``), kept rather than drawn again."""
    templates = load_templates(cfg.templates)
    splits = {split: dataset_split(cfg.dataset, split, cfg.data_dir, cfg.data_seed, dict(cfg.data_opts), limit)
              for split, limit in (("train", cfg.limit_train), ("test", cfg.limit_test))}
    for data in splits.values():
        check_image_size(cfg, data)
    train, test = (fit_to_size(splits[s], cfg.model.image_resolution, cfg.dataset) for s in ("train", "test"))
    if train.classes != test.classes:
        raise BenchError(f"dataset {cfg.dataset!r}: train and test splits name different classes")
    if "probe" in cfg.evals:  # the probe runs after training: what it cannot do is said before
        from ..evaluation.probe import check_probe_labels

        check_probe_labels(train.labels)
    # the tokenizer knows every class's prompts (a held-out class's too): the fallback vocabulary is built from them
    prompts = fill(templates + list(eval_templates or []), train.classes)
    tokenizer = get_entry("tokenizers", cfg.tokenizer).create(cfg.model.text.context_length, prompts)
    if drawn and cfg.holdout_classes:
        # the split the run's first part trained on: numpy keeps no promise that a seed's stream stays the same
        # across its versions, and a count drawn again elsewhere would train the rest of the run on other classes
        missing = [c for c in drawn if c not in train.classes]
        if missing:
            raise BenchError(f"the run held out class {missing[0]!r}, which dataset {cfg.dataset!r} does not have "
                             f"now; resume it with the data it trained on")
        unseen = tuple(c for c in train.classes if c in drawn)
    else:
        unseen = resolve_holdout(cfg.holdout_classes, train.classes, cfg.seed, cfg.dataset)
    if cfg.target is not None:
        check_target_measured(parse_target(cfg.target).metric, test.labels, class_indices(test.classes, unseen))
    trained = without_classes(train, unseen)
    if unseen and not len(trained):
        raise BenchError(f"no training images are left once {', '.join(unseen)} are held out; raise --limit-train")
    return Components(templates, train, test, tokenizer, unseen, trained)


def new_run_id(cfg: RunConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{file_safe(cfg.model.encoder, keep='-_')}-s{cfg.seed}-{uuid.uuid4().hex[:6]}"


class LossLog:
    """Training loss every ``log_every`` steps (``train_log.csv``), for curves finer than one point per epoch.

    The trainer reports the running mean of the epoch so far; this keeps the mean of each window instead,
    so late steps are not averaged with the first ones. Rows and the current window live in the run's
    :class:`RunProgress`, so a checkpoint holds them and a resumed run continues them exactly.
    """

    def __init__(self, progress: RunProgress, on_row=None):
        self.progress, self.on_row = progress, on_row

    @property
    def rows(self) -> list:
        return self.progress.loss_log

    def callback(self, epoch: int, start_step: int, resumed: bool):
        if not resumed:  # a new epoch: its first window starts at its first step
            self.progress.loss_window = (0, 0.0)

        def on_log(step: int, running_mean: float):
            steps = step - start_step
            total = running_mean * steps
            last_steps, last_total = self.progress.loss_window
            window = (total - last_total) / max(steps - last_steps, 1)
            self.progress.loss_log.append({"step": step, "epoch": epoch, "train_loss": window})
            if self.on_row is not None:
                self.on_row(self.progress.loss_log[-1])
            self.progress.loss_window = (steps, total)

        return on_log


def run(cfg: RunConfig, run_id: str | None = None, resume: dict | None = None) -> dict:
    """Train, evaluate zero-shot every ``eval_every`` epochs, write the run folder and a ``runs.csv`` row.

    Every input is read and checked before the first byte is written. ``resume`` is the ``last.pt`` of run
    ``run_id`` (see :mod:`bench.app.resume`): the run continues from it and ends as if never stopped.
    ``cfg.deterministic`` holds torch's deterministic settings for the whole run, and only for it.
    """
    with deterministic_mode(cfg.deterministic):
        job = Run(cfg, run_id, resume)
        with job:
            while not job.done:
                job.step()
        return job.finish()


class Run:
    """One training run as explicit phases: build (the constructor), :meth:`step` (one epoch, then its end:
    evaluation, history, checkpoints), :meth:`finish` (the run's files and its ``runs.csv`` row).

    :func:`run` drives one run through them; a sweep's in-process runner can hold several and step them in turn. Between
    ``with run:`` and its exit a stop request (Ctrl-C, SIGTERM) is honoured at the next step, and leaving waits
    for the checkpoint being written. ``stop``: a :class:`bench.engine.faults.StopRequest` shared by the runs of
    a sweep runner whose main thread owns the signal handlers; by default the run installs its own.
    """

    def __init__(self, cfg: RunConfig, run_id: str | None = None, resume: dict | None = None, stop=None):
        self.cfg, self.resume, self._shared_stop = cfg, resume, stop
        self.log_name: str | None = None
        self._text = None  # (step, prompt features): see _prompt_features
        self.started = time.perf_counter()
        self._running = None  # the run folder's lock (main rank), once taken: see _release
        self._build_engine(run_id)
        try:
            self._create_run_folder(run_id)
        except BaseException:  # failing after the lock was taken: nothing else would let it go
            self._release()
            raise
        self._contexts = None

    def _build_engine(self, run_id):
        """Every input read and checked, the model, loader and engine built; nothing written yet."""
        cfg, resume = self.cfg, self.resume
        check_names(cfg)
        check_run_inputs(cfg)
        self.world = world = init_distributed(cfg.device, cfg.cuda_graph)  # a plain run unless started by torchrun
        self.device = device = world.device
        last = Path(cfg.out) / "runs" / str(run_id) / "last.pt"
        precision = cfg.precision
        if resume is not None:  # the precision it trained in, not what "auto" means on this device (checked first)
            precision, note = resume_precision(resume, cfg.precision, device, last)
            if note:
                log_main(world, note)
        autocast_dtype_for(precision, device)  # a precision this device cannot run stops here, before any data loads
        recipe = cfg.recipe()
        set_backend_flags(recipe, device)  # before the encoder's data-dependent initialisation runs on the device
        drawn = tuple(resume.get("unseen_classes") or ()) if resume is not None else ()  # the split it trained on
        with GLOBAL_RNG:  # the seed, then every draw of initialisation, before another thread's run reseeds
            seed_everything(cfg.seed)
            self.parts = parts = load_components(cfg, drawn=drawn)
            self.model = model = create_model_from_cfg(cfg.model)
        check_encoder_forward(get_entry("encoders", cfg.model.encoder), model.visual, cfg.model.image_resolution,
                              cfg.model.embed_dim)
        if resume is not None:  # into the bare CLIP, before any wrapper (see docs/distributed.md)
            load_weights(model, resume["model"], resume, last)
        model.to(device)
        self.n_params = count_parameters(model)
        # held-out classes have no row: the text tower never trains on their prompts
        prompt_tokens = prompt_table(parts.templates, parts.trained.classes, parts.tokenizer)
        check_prompt_tokens(prompt_tokens, parts.tokenizer, get_entry("tokenizers", cfg.tokenizer),
                            cfg.model.text.vocab_size, parts.templates, parts.trained.classes)
        prompt_tokens = prompt_tokens.to(device)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.loader = DeviceLoader(parts.trained, cfg.batch_size, device, len(parts.templates), self.generator,
                                   channels_last=uses_channels_last(recipe, device), pad=cfg.crop_pad,
                                   shard=(world.rank, world.size), cutout=cfg.cutout, flip=cfg.flip)
        recipe = replace(cfg.recipe(steps_per_epoch=len(self.loader)), precision=precision)
        steps = cfg.epochs * len(self.loader)
        if cfg.warmup_steps > steps and resume is None:  # a preset's warm-up on a shortened run: never at --lr
            log_main(world, f"note: --lr-warmup-steps {cfg.warmup_steps} (the {cfg.preset} preset's, unless given) is "
                            f"longer than the run's {steps} steps, so the learning rate never reaches --lr {cfg.lr:g} "
                            f"and never decays; give a shorter --lr-warmup-steps")

        setup = getattr(model.visual, "setup_from_data", None)
        if setup is not None and resume is None:  # a resumed run's weights are the checkpoint's
            # under the run's seed, on forked RNG states: the draws of everything after are those of a run without it
            with GLOBAL_RNG, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(cfg.seed)
                setup(self.loader.images)
        # the prewarm trains a copy made before the engine changes the model (compact rows, compile)
        spare = copy.deepcopy(model) if cfg.prewarm_steps else None
        self.engine = engine = build_engine(model, prompt_tokens, recipe, world)
        self.state, self.autocast_dtype, self.channels_last = engine.state, engine.autocast_dtype, engine.channels_last
        self.prewarm_seconds = 0.0
        if spare is not None:  # the same step on a throwaway copy, alone on its rank (no DDP, no collectives)
            self.prewarm_seconds = prewarm(build_engine(spare, prompt_tokens, recipe), self.loader,
                                           cfg.prewarm_steps, cfg.seed)
        self.test_images = to_device_uint8(parts.test.images, device)
        self.test_labels = torch.as_tensor(parts.test.labels, device=device)
        self.targets = load_targets(cfg)  # --transfer: read and resized now, so a bad dataset fails before training

    def _create_run_folder(self, run_id):
        """The first write: every input has been read by now."""
        cfg, world, resume = self.cfg, self.world, self.resume
        self.out = check_out_dir(cfg.out)
        self.run_id = run_id = broadcast_object(run_id or new_run_id(cfg), world)
        self.run_dir = run_dir = self.out / "runs" / run_id
        self.progress, saved_step = RunProgress(), None
        if resume is not None:
            self.progress = restore_training(resume, self.state, self.generator, self.device, world.size,
                                             run_dir / "last.pt", len(self.parts.trained))
            saved_step = resume["step"]
            note = resume_threads_note(resume, self.device)
            if note:
                log_main(world, note)
        elif world.is_main:
            run_dir.mkdir(parents=True, exist_ok=False)
            atomic_write_text(run_dir / "config.json", cfg.to_json())
        if world.is_main:  # a resumed run's check happened before it was built; this closes the race
            try:
                self._running = ProcessLock(run_dir / RUNNING_LOCK)
            except BlockingIOError:
                raise BenchError(f"run {run_id} is being trained by another process; wait for it to end, or stop "
                                 f"it and --resume again") from None
            except OSError as exc:
                raise BenchError(f"cannot write {run_dir / RUNNING_LOCK} ({exc.strerror}); make run folder "
                                 f"{run_dir} writable for you") from None
        if world.distributed:
            log_main(world, f"run {run_id}: {world.describe()}, global batch {cfg.batch_size * world.size}")
        header = {"config": cfg.to_dict(), "classes": list(self.parts.classes), **own_vocabulary(self.parts.tokenizer)}
        if self.parts.unseen:  # as drawn: bench eval reads them here rather than drawing them again
            header["unseen_classes"] = list(self.parts.unseen)
        self.saver = CheckpointSaver(run_dir, self.state, header, self.generator, run_id, self.progress, world,
                                     saved_step, enabled=cfg.save_checkpoints)
        self.loggers = self._open_loggers(saved_step)
        self.loss_log = LossLog(self.progress, on_row=self.loggers.loss)

    def _open_loggers(self, resume_step):
        """TensorBoard / W&B (``--log``), on the main rank only; where TensorBoard writes is said once.

        A resumed run's loggers drop what the stopped process logged from the checkpoint's step on (it may have
        gone further, or not as far) and are given again the rows the checkpoint holds from that step, so each
        point is logged once and equals ``train_log.csv`` / ``history.csv``.
        """
        from ..results.loggers import RunLoggers, open_loggers

        cfg = self.cfg
        if not cfg.log or not self.world.is_main:
            return RunLoggers([])
        config = {**cfg.to_dict(), "config_id": config_key(cfg, self.world.size)}
        loggers = open_loggers(cfg.log, self.run_id, self.run_dir, config, resume_step, cfg.wandb_project,
                               cfg.wandb_entity)
        if resume_step is not None:
            loggers.replay(self.progress.loss_log, self.state.history, resume_step)
        if "tensorboard" in cfg.log:
            log_main(self.world, f"TensorBoard logs in {self.run_dir / 'tensorboard'}; view every run with: "
                                 f"tensorboard --logdir {self.out / 'runs'}")
        return loggers

    def __enter__(self):
        self._contexts = contextlib.ExitStack()
        try:
            self.stop = self._shared_stop if self._shared_stop is not None else \
                self._contexts.enter_context(stop_on_signal(self.world))
            self._contexts.enter_context(self.saver)  # leaving waits for the checkpoint being written
        except BaseException:  # not entered, so no __exit__ comes: leave as a failed run does
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc_info):
        if exc_info[0] is not None:  # stopped or failed: finish() (which logs the end) will not come
            self.loggers.close()
        contexts, self._contexts = self._contexts, None
        try:
            return contexts.__exit__(*exc_info)
        except BaseException:  # leaving failed (the last checkpoint could not be written): no finish() comes either
            if exc_info[0] is None:
                self.loggers.close()
            exc_info = sys.exc_info()
            raise
        finally:
            if exc_info[0] is not None:  # after the checkpoint being written is on disk: then it may be resumed
                self._release()

    def abandon(self):
        """A built run that will not be entered (what it was to run under could not be set up): its loggers closed
        and its lock released, as leaving ``with run:`` on an error does."""
        self.loggers.close()
        self._release()

    def _release(self):
        if self._running is not None:
            self._running.release()
            self._running = None

    @property
    def done(self) -> bool:
        """All epochs trained, or (``--stop-at-target``) an evaluated epoch reached the target. Read from the
        history, which a checkpoint holds, so a run resumed after its target epoch finishes at once."""
        return self.state.epoch >= self.cfg.epochs or self.reached_target_at() is not None

    def reached_target_at(self) -> int | None:
        """With ``--stop-at-target``, the epoch whose evaluation first reached the target so far, else None."""
        if not (self.cfg.stop_at_target and self.cfg.target):
            return None
        reached = first_reached(self.state.history, parse_target(self.cfg.target))
        return reached[0] if reached else None

    def step(self) -> dict:
        """Train the next epoch and end it; returns its history row."""
        return self.end_epoch(self.train_epoch())

    def train_epoch(self) -> dict:
        """One epoch of steps, with checkpoints and stop checks on the way; its statistics over all ranks."""
        return reduce_epoch_stats(self._epoch_steps(), self.world)

    def end_epoch(self, stats: dict) -> dict:
        """Evaluate when due, append the history row, write the curves' tables, checkpoint, honour a stop."""
        cfg, state, progress, world = self.cfg, self.state, self.progress, self.world
        state.epoch += 1
        progress.train_seconds += stats["seconds"]
        progress.train_images += stats["images"]
        row = {"epoch": state.epoch, "step": state.step, "train_loss": stats["train_loss"],
               "lr": float(state.optimizer.param_groups[0]["lr"]), "epoch_seconds": stats["seconds"],
               "images_per_s": stats["images"] / max(stats["seconds"], 1e-9),
               "zeroshot_top1": np.nan, "zeroshot_top5": np.nan, "mean_per_class_recall": np.nan,
               "eval_seconds": np.nan}
        if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
            row.update(self.evaluate())
        # wall time since this process started the run (start-up, evaluations and checkpoints included)
        row["elapsed_seconds"] = round(time.perf_counter() - self.started, 3)
        row = plain(row)
        if not bars_shown(cfg.progress):  # logs and batch jobs still see the run advance
            prefix = f"{self.log_name}: " if self.log_name else ""  # a sweep's concurrent runs share one log
            log_main(world, prefix + epoch_line(row, cfg.epochs))
        state.history.append(row)
        self.loggers.epoch(row)
        if world.is_main:
            write_csv(pd.DataFrame(state.history), self.run_dir / "history.csv")
            write_csv(pd.DataFrame(self.loss_log.rows), self.run_dir / "train_log.csv")
        best = progress.best
        is_best = not np.isnan(row["zeroshot_top1"]) and (best is None or row["zeroshot_top1"] > best["zeroshot_top1"])
        if is_best:  # best.pt first: a kill before last.pt lands resumes from the epoch before and writes both again,
            # where a kill after last.pt (which records the new best) would leave the best epoch without its best.pt
            progress.best = row
            self.saver.save_best(row)
        self.saver.save_last(row)
        if self.reached_target_at() == state.epoch:  # evaluated metrics are on the host already: no extra sync
            log_main(world, f"{self.log_name + ': ' if self.log_name else ''}target {cfg.target} reached at epoch "
                            f"{state.epoch}; stopping there (--stop-at-target)")
        if self.stop.agreed(collective_point=True) and not self.done:
            raise _interrupted(self.stop, state, self.saver, self.run_id, self.out)
        return row

    def evaluate(self) -> dict:
        """Zero-shot on the test split, sharded over ranks; kept in the progress for checkpoints and the row."""
        started = time.perf_counter()
        metrics = self._zero_shot()
        self.progress.metrics = plain({**metrics, "per_class": metrics["per_class"].tolist(),
                                       "confusion": metrics["confusion"].tolist()})
        return dict(zeroshot_top1=metrics["top1"], zeroshot_top5=metrics["top5"],
                    mean_per_class_recall=metrics["mean_per_class_recall"], **self._seen_unseen(metrics),
                    eval_seconds=time.perf_counter() - started)  # metrics are on the host: synced

    def _seen_unseen(self, metrics: dict) -> dict:
        """With held-out classes: top-1 on the test images of trained and of held-out classes, and their harmonic
        mean; ``zeroshot_top1`` stays the top-1 over every test image."""
        if not self.parts.unseen:
            return {}
        unseen = class_indices(self.parts.classes, self.parts.unseen)
        return seen_unseen_metrics(metrics["predictions"], self.parts.test.labels, unseen)

    def _without_tta(self) -> dict:
        """Zero-shot top-1 once more with the encoder's test-time augmentation off, for an encoder that has one
        (a true ``test_time_augmentation`` attribute), so a row shows what the averaged views add; every rank
        takes part, as in :meth:`evaluate`."""
        visual = self.model.visual
        if not averages_views(visual):  # the test a sweep's --until asks before the run (reports_without_tta)
            return {}
        visual.test_time_augmentation = False
        try:
            return {"zeroshot_top1_no_tta": self._zero_shot()["top1"]}
        finally:
            visual.test_time_augmentation = True

    def _zero_shot(self) -> dict:
        """Zero-shot metrics of the current weights on the test split: the template classifier, images sharded."""
        parts = self.parts
        classifier = classifier_from_features(self._prompt_features(), len(parts.classes), len(parts.templates))
        return validate_sharded(self.model, self.test_images, self.test_labels, classifier, self.world,
                                autocast_dtype=self.autocast_dtype, channels_last=self.channels_last)

    def _prompt_features(self) -> torch.Tensor:
        """The prompt table's text features (every class x template) under the current weights, encoded once per
        weights: the last evaluation, the one without test-time augmentation and the suite share them. Keyed by the
        optimizer step; nothing changes the text tower between steps."""
        step = self.state.step
        if self._text is None or self._text[0] != step:
            parts = self.parts
            self._text = (step, prompt_features(self.model, parts.classes, parts.templates, parts.tokenizer,
                                                self.device, self.autocast_dtype))
        return self._text[1]

    def finish(self) -> dict:
        """The run's row; on the main rank also its curves, per-class, confusion and predictions files, the
        evaluation suite, ``result.json`` and the ``runs.csv`` row. Finished or failed, the run's lock goes."""
        try:
            return self._finish()
        finally:
            self._release()

    def _finish(self) -> dict:
        cfg, progress, world, parts = self.cfg, self.progress, self.world, self.parts
        metrics = {**progress.metrics, "per_class": np.asarray(progress.metrics["per_class"], dtype=float),
                   "confusion": np.asarray(progress.metrics["confusion"], dtype=np.int64),
                   "predictions": np.asarray(progress.metrics["predictions"])}
        history = pd.DataFrame(self.state.history)
        row = self._row(metrics, history)
        row.update(world_size=world.size, global_batch_size=cfg.batch_size * world.size, resumes=progress.resumes,
                   prewarm_seconds=round(self.prewarm_seconds, 3))  # --prewarm-steps: before train_seconds' clock
        row.update(self._without_tta())
        row.update(eval_dataset=cfg.dataset, n_classes=len(parts.classes), **self._holdout_columns(metrics))
        transfers = self._transfer()  # every rank takes part; the rows are written below, before the run's own
        if world.is_main:
            self._write_results(row, history, metrics, transfers)
        return row

    def _write_results(self, row: dict, history: pd.DataFrame, metrics: dict, transfers: list):
        """The main rank's files of a finished run, its transfer rows, then ``result.json`` and its own row."""
        cfg, parts, run_dir = self.cfg, self.parts, self.run_dir
        plot_curves(history, run_dir / "curves.png", title=f"{cfg.model.encoder} on {cfg.dataset} ({self.run_id})")
        suite_columns = run_eval_suite(cfg, self.model, parts, self.device, self.autocast_dtype, run_dir, self.run_id,
                                       epoch=self.state.epoch, text_features=self._prompt_features() if cfg.evals
                                       else None)
        write_class_tables(run_dir, parts.classes, metrics["per_class"], metrics["confusion"])
        save_predictions(run_dir / PREDICTIONS, parts.test.labels, metrics["predictions"], len(parts.classes))
        row.update(suite_columns)
        # the run's own row last: it marks the run finished, so a run stopped before it resumes and writes all again
        for target, target_metrics in transfers:
            # DATASET@TEMPLATES other than the dataset's default set: +TEMPLATES in the id, as bench eval names it
            run_id = spec_run_id(self.run_id, TransferSpec(target.dataset, target.templates_name), cfg.templates)
            transfer = transfer_row(row, run_id, target, target_metrics,
                                    eval_seconds=round(target_metrics["eval_seconds"], 3))
            # an attempt that died before the run's own row wrote this row already: the finishing attempt's takes its
            # place (resumes, times), as its result.json does; no one else records a row for an unfinished run
            record_transfer(self.out, transfer, target, target_metrics, cfg.to_dict(), replace=True)
        finish_run(self.out, run_dir, row)
        self.loggers.finish(row, self.state.step, run_dir / "curves.png")
        self.loggers.close()

    def _holdout_columns(self, metrics: dict) -> dict:
        """The held-out classes as configured (``holdout_classes``: names, or the count drawn with the seed) and as
        drawn (``unseen_classes``), with the final weights' seen, unseen and harmonic top-1."""
        if not self.parts.unseen:
            return {}
        return {"holdout_classes": ",".join(self.cfg.holdout_classes), "unseen_classes": ",".join(self.parts.unseen),
                **self._seen_unseen(metrics)}

    def _transfer(self) -> list:
        """``--transfer``: zero-shot metrics of the final weights on each other dataset, with its own classes and
        template set, through the run's tokenizer (the text tower sees those class names for the first time)."""
        out = []
        for target in self.targets:
            started = time.perf_counter()
            metrics = evaluate_target(self.model, target, self.parts.tokenizer, self.device, self.world,
                                      self.autocast_dtype, self.channels_last)
            out.append((target, {**metrics, "eval_seconds": time.perf_counter() - started}))
        return out

    def _epoch_steps(self) -> dict:
        """One epoch, checkpointed every ``cfg.checkpoint_every`` steps; stops cleanly on a signal or a NaN loss."""
        cfg, engine, loader, progress, saver, stop = (self.cfg, self.engine, self.loader, self.progress, self.saver,
                                                      self.stop)
        epoch, world, loss_log = self.state.epoch, self.world, self.loss_log
        n = len(loader)
        if progress.epoch is None:  # a fresh epoch draws its order; a resumed one replays the saved one
            progress.order = loader.epoch_permutation()  # the whole split's: resumable under any number of ranks
        state = engine.state
        start, order = progress.epoch, loader.epoch_order(progress.order)
        watch = FiniteWatch(engine.device, world)

        def describe(step):
            return f"epoch {(step - 1) // n + 1}, batch {(step - 1) % n + 1} of {n}"

        def on_step(epoch_progress, loss):
            watch.update(state.step, loss)
            progress.epoch = epoch_progress
            periodic = cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and epoch_progress.steps < n
            stopping = stop.agreed(collective_point=periodic or epoch_progress.steps % cfg.log_every == 0)
            if periodic or stopping:
                watch.check(describe, saver.describe)  # never checkpoint weights a NaN step has touched
                saver.save_last()
            if stopping:
                raise _interrupted(stop, state, saver, saver.run_id, Path(cfg.out))

        log_loss = loss_log.callback(epoch + 1, state.step - (start.steps if start else 0), resumed=start is not None)
        if start is not None and (start.steps % cfg.log_every == 0 or start.steps == n):
            # a mid-epoch checkpoint (or a stop after the epoch's last step) is taken in on_step, before that step's
            # loss read-back: make the row the uninterrupted run made there, from the same running sum
            log_loss(state.step, float(start.loss_sum) / start.steps)

        def on_log(step, mean):  # the loss was just read back anyway: a free moment to look for a NaN
            watch.check(describe, saver.describe)
            log_loss(step, mean)

        stats = engine.train_epoch(loader.iter_from(start.steps if start else 0, order, epoch), n,
                                   log_every=cfg.log_every, progress=cfg.progress if world.is_main else False,
                                   desc=f"epoch {epoch + 1}/{cfg.epochs}", on_log=on_log, on_step=on_step, start=start,
                                   # the logged loss is the run's (all ranks'), as history.csv's
                                   reduce_loss=(lambda total: mean_over_ranks(total, world)) if world.distributed
                                   else None)
        watch.check(describe, saver.describe)
        progress.epoch, progress.order = None, None
        return stats

    def _row(self, metrics: dict, history: pd.DataFrame) -> dict:
        """The run's ``runs.csv`` row: configuration, size, timings, metrics and provenance."""
        cfg, parts, progress, engine, best = self.cfg, self.parts, self.progress, self.engine, self.progress.best
        train_seconds, train_images = progress.train_seconds, progress.train_images
        prov = provenance(self.device)
        return {
            "run_id": self.run_id, "config_id": config_key(cfg, self.world.size), "time": prov["time"],
            "encoder": cfg.model.encoder, "tokenizer": cfg.tokenizer,
            "templates": cfg.templates, "dataset": cfg.dataset, "preset": cfg.preset, "epochs": cfg.epochs,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "loss": cfg.loss,
            "optimizer": cfg.optimizer,  # what --lr means depends on it (AdamW's step size, or SGD's multiplier)
            "seed": cfg.seed, "device": str(self.device), "device_name": prov["device_name"],
            "precision": engine.precision, "params": self.n_params,
            "skipped_steps": engine.skipped_steps(),  # fp16: steps its loss scaling skipped on an overflow
            "train_seconds": round(train_seconds, 3),
            "train_images_per_s": round(train_images / max(train_seconds, 1e-9), 2),
            # airbench's timed span: every training step, then the final evaluation with its test-time augmentation;
            # the evaluations of earlier epochs are left out (each timed on its own in history.csv)
            "train_eval_seconds": round(train_seconds + float(history["eval_seconds"].iloc[-1]), 3),
            "zeroshot_top1": metrics["top1"], "zeroshot_top5": metrics["top5"],
            "mean_per_class_recall": metrics["mean_per_class_recall"],
            "final_train_loss": float(history["train_loss"].iloc[-1]),
            # --target: whether and when an evaluated epoch first reached it, on train_seconds' clock
            **target_columns(cfg.target, cfg.stop_at_target, self.state.history),
            "best_epoch": int(best["epoch"]) if best else None,
            "best_zeroshot_top1": float(best["zeroshot_top1"]) if best else None,
            "limit_train": cfg.limit_train, "limit_test": cfg.limit_test, "train_images": len(parts.trained),
            "test_images": len(parts.test), "eval_templates": cfg.templates, "image_size": cfg.model.image_resolution,
            "normalization": "[-1,1]", "eval_checkpoint": "final epoch", "deterministic": cfg.deterministic,
            # how the data was made, where it says (imagefolder's split; the load-time resize and the images' size)
            **{k: parts.train.info[k] for k in ROW_INFO if k in parts.train.info},
            **({"data_opts": json.dumps(dict(cfg.data_opts), sort_keys=True)} if cfg.data_opts else {}),
            # CPU kernels split work by thread count, so bit-identical reruns need the same count
            "torch_threads": torch.get_num_threads(),
            **{k: prov[k] for k in ("git_commit", "git_dirty", "torch_version", "cuda_version", "bench_version",
                                    "python_version", "hostname", "command", "numpy_version")},
        }


def run_eval_suite(cfg: RunConfig, model, parts: Components, device, autocast_dtype, run_dir: Path, run_id: str,
                   epoch: int | None = None, text_features=None) -> dict:
    """Retrieval, linear probe and robustness on the final weights (``--evals``), those of ``epoch`` (default: the
    last; earlier for a run stopped at its target); tables go to the run folder. ``text_features``: the prompt
    table's features under these weights, where the run has them already (its last evaluation's)."""
    if not cfg.evals:
        return {}
    from ..evaluation.suite import FeatureCache, run_suite
    from .evaluate import suite_options

    opts = suite_options(cfg, cfg.evals)  # as bench eval of the run's checkpoint builds it
    columns, tables = run_suite(model, opts, train=parts.train, test=parts.test, templates=parts.templates,
                                tokenizer=parts.tokenizer, device=device, autocast_dtype=autocast_dtype,
                                cache=FeatureCache(run_dir / "features"), weights_id=f"final-e{epoch or cfg.epochs}",
                                text_features=text_features)
    for name, table in tables.items():
        write_csv(table, run_dir / f"{name}.csv")
    return columns


def epoch_line(row: dict, epochs: int) -> str:
    """One line per finished epoch for logs: loss, zero-shot top-1 when evaluated, and the epoch's times."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if not np.isnan(row["zeroshot_top1"]):
        parts.append(f"zero-shot top-1 {row['zeroshot_top1']:.4f}")
    parts.append(f"train {row['epoch_seconds']:.2f} s ({row['images_per_s']:,.0f} images/s)")
    if not np.isnan(row["eval_seconds"]):
        parts.append(f"eval {row['eval_seconds']:.2f} s")
    return ", ".join(parts)


def _interrupted(stop, state, saver, run_id, out) -> Interrupted:
    saver.wait()  # the checkpoint just asked for is on disk before the message says so
    quiet = not saver.world.is_main  # every rank stops here; rank 0 alone says so, as it alone prints
    if saver.saved_step != state.step:
        return Interrupted(f"stopped by {stop.requested} at step {state.step}; {saver.describe()}", quiet)
    return Interrupted(f"stopped by {stop.requested} at step {state.step}, checkpoint saved; continue with: "
                       f"bench run --resume {run_id} --out {out}", quiet)
