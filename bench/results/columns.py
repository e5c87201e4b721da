"""What each column of a results table is: configuration, protocol, machine or metric (accuracies are fractions,
higher is better), and the configuration key that names a configuration over seeds."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re

import numpy as np
import pandas as pd

from ..errors import BenchError
from ..evaluation.target import HOLDOUT_TARGET_METRICS
from .metric_units import is_accuracy

# What defines a configuration in a table (besides config_id, the hash of the full config).
CONFIG_COLUMNS = ["encoder", "tokenizer", "templates", "eval_templates", "dataset", "preset", "epochs", "batch_size",
                  "lr", "weight_decay", "optimizer", "loss", "limit_train", "limit_test", "image_size", "precision"]
# zero-shot transfer and held-out classes (bench.app.transfer, bench.data.class_split): the dataset a row evaluates
# (its training dataset's own evaluation when missing) and the classes its training left out, as configured
CONFIG_COLUMNS += ["eval_dataset", "holdout_classes"]


# Configuration fields that do not change what is trained or measured, left out of the key.
# Columns that describe how a number was measured; compare warns when they differ.
PROTOCOL_COLUMNS = ["dataset", "test_images", "image_size", "normalization", "eval_checkpoint",
                    "retrieval_captions", "probe_train_images", "probe_val_fraction", "robust_images",
                    "robust_severities", "robust_protocol"]


MACHINE_COLUMNS = ["device_name", "hostname", "torch_version", "cuda_version", "torch_threads"]

# The column a report adds naming each configuration (bench.results.report), which its figures group and colour by
# (bench.results.figures).
LABEL = "configuration"


# The headline numbers, in the order summaries show them.
SUMMARY_METRICS = ["zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "retrieval_i2t_r1", "retrieval_t2i_r1",
                   "probe_top1", "robust_mean", "train_seconds"]


LOWER_IS_BETTER = {"final_train_loss", "train_seconds", "train_eval_seconds"}


OTHER_METRICS = ["final_train_loss", "train_seconds", "train_eval_seconds", "train_images_per_s", "params"]


# Time to a --target (bench.evaluation.target.target_columns): what the run aimed at, and whether and when it got
# there. Not metrics: a run that never reached its target has its epochs and time blank (censored at train_seconds, not
# missing), so a mean or a t-test of the runs that reached it favours whichever side missed more often;
# bench.results.time_to_target summarises them (Kaplan-Meier medians, the log-rank test). The long table carries
# them, beside the target they refer to.
TARGET_COLUMNS = ("target", "stop_at_target")
TIME_TO_TARGET = ("reached_target", "epochs_to_target", "time_to_target_seconds")


# Generalized zero-shot accuracy with held-out classes (bench.evaluation.holdout).
HOLDOUT_METRICS = HOLDOUT_TARGET_METRICS  # one list: the metrics a run with held-out classes reports


_FAMILY_ORDER = ["zeroshot_", "mean_per_class_recall", "harmonic_top1", "seen_top1", "unseen_top1", "best_zeroshot_", "retrieval_i2t_", "retrieval_t2i_",
                 "probe_top", "probe_", "robust_mean", "robust_clean", "robust_"]


def _metric_order(name: str):
    family = next(i for i, p in enumerate(_FAMILY_ORDER + [""]) if name.startswith(p))
    number = re.search(r"(\d+)(_no_tta)?$", name)  # zeroshot_top1_no_tta right after zeroshot_top1
    return family, int(number.group(1)) if number else 0, name


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a wide table: accuracies (zero-shot, retrieval, probe, robustness), then the rest."""
    acc = sorted((c for c in df.columns if is_accuracy(c) and pd.api.types.is_numeric_dtype(df[c])), key=_metric_order)
    return acc + [c for c in OTHER_METRICS if c in df.columns and pd.api.types.is_numeric_dtype(df[c])]


def _flat(d: dict, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


@functools.lru_cache(maxsize=None)
def _defaults(cls) -> dict:
    """The flat defaults of a config class, built once: a sweep's plan asks for the key of every run (shared, so
    never changed by its callers)."""
    return _flat(cls().to_dict())


def config_key(cfg, ranks: int = 1) -> str:
    """10 hex digits naming a configuration: every field that shapes training or evaluation except the seed.
    ``ranks``: the processes it trained on, whose per-rank ``batch_size`` makes the global batch that training
    sees: 2 ranks x 16 is the configuration of one process x 32 (one process's keys are as they were).

    Only fields that differ from the ``RunConfig`` defaults enter the hash, so adding a new field (with its
    default) to ``RunConfig`` leaves the keys of existing results unchanged.
    Fields whose metadata says ``config_id: False`` (``bench.config.not_in_id``) never enter it; those whose
    ``config_id`` names another field (``bench.config.in_id_when``) enter it only while that field is true.
    """
    if ranks != 1:
        cfg = dataclasses.replace(cfg, batch_size=cfg.batch_size * ranks)
    excluded = {f.name for f in dataclasses.fields(cfg) if not _in_id(f.metadata.get("config_id", True), cfg)}
    default = _defaults(type(cfg))
    values = {k: v for k, v in _flat(cfg.to_dict()).items()
              if k.split(".")[0] not in excluded and default.get(k, object()) != v}
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _in_id(rule, cfg) -> bool:
    if isinstance(rule, tuple):  # (field, values): while that field's value is one of them
        return getattr(cfg, rule[0]) in rule[1]
    return bool(getattr(cfg, rule)) if isinstance(rule, str) else bool(rule)


def is_true(value) -> bool:
    """A boolean column's cell as read back from a CSV (``reached_target``, ``stop_at_target``, ``git_dirty``): a
    bool, or its text once a blank in the column made it objects."""
    return value is True or (isinstance(value, (bool, np.bool_)) and bool(value)) or str(value).strip() == "True"


def has_value(value) -> bool:
    """Whether a cell holds a value: not None, NaN or a blank."""
    return not ((pd.api.types.is_scalar(value) and pd.isna(value)) or str(value).strip() == "")


def group_columns(df: pd.DataFrame) -> list[str]:
    """Columns whose values together name a configuration in ``df``: the config id, plus the evaluated template
    set where it is not the trained one (``bench eval --templates`` rows of one checkpoint) and the evaluated
    dataset (a run's transfer rows share its config id)."""
    if "config_id" in df.columns and df["config_id"].notna().all():
        return ["config_id"] + [c for c in ("eval_templates", "eval_dataset") if c in df.columns]
    cols = [c for c in CONFIG_COLUMNS if c in df.columns]
    if not cols:
        raise BenchError("the table has no configuration columns (encoder, templates, ...); is it a bench results table?")
    return cols


def repeated_seeds(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """True on each row whose configuration (``keys``, and ``config_id`` where every row has one) and seed a later
    row of ``df`` has too: that seed trained again (``bench run --seeds 0,1`` twice into one folder). It is the same
    run again, bit for bit where bench is deterministic, not another sample, so pooling both would count one seed
    twice and narrow the spread. Rows without a seed (pretrained models' evaluations) are never repeats."""
    if "seed" not in df.columns or not len(df):
        return pd.Series(False, index=df.index)
    keys = list(dict.fromkeys([*keys, *(["config_id"] if "config_id" in df.columns and df["config_id"].notna().all()
                                        else []), "seed"]))
    # the latest by the time each row records (ISO text sorts in time), else the row written last
    ordered = df.sort_values("time", kind="stable", na_position="first") if "time" in df.columns else df
    later = ordered[keys].astype(str).duplicated(keep="last").reindex(df.index)
    return df["seed"].notna() & later


def repeated_seeds_note(dropped: pd.DataFrame, where: str = "") -> str:
    """One line saying which runs :func:`repeated_seeds` left out (``where``: e.g. " of B")."""
    ids = ", ".join(dropped["run_id"].astype(str).head(3)) + (", ..." if len(dropped) > 3 else "")
    return (f"{len(dropped)} run(s){where} left out ({ids}): a later run of the same configuration and seed replaces "
            f"each (a seed trained again is the same run again, not another sample)")


def with_eval_dataset(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``eval_dataset`` on every row: a row without one (a table from before transfer rows, or an
    older row of a mixed table) evaluated its own ``dataset``."""
    if "dataset" not in df.columns:
        return df
    if "eval_dataset" not in df.columns:
        return df.assign(eval_dataset=df["dataset"])
    if df["eval_dataset"].isna().any():
        return df.assign(eval_dataset=df["eval_dataset"].where(df["eval_dataset"].notna(), df["dataset"]))
    return df


# A column an earlier bench wrote under another name -> its name now. 7bd3d82 and before: --warm-up's time,
# warmup_seconds (now --prewarm-steps and prewarm_seconds, bench.app.run).
RENAMED_COLUMNS = {"warmup_seconds": "prewarm_seconds"}
# The robust_protocol of those rows' robustness numbers (bench.data.corruptions.PROTOCOL now): their contrast pulled
# each image towards its mean over all channels, shifting hues (ca939d5 made it per channel, as make_cifar_c.py)
OLD_ROBUST_PROTOCOL = "contrast over all channels (before ca939d5)"


def with_current_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as bench writes its rows now, from rows an older bench wrote (a results folder kept over an upgrade):
    ``eval_dataset`` filled in (:func:`with_eval_dataset`), a renamed column read under its name now (a table
    mixing old and new rows would show one quantity as two half-empty columns), and, on the training rows that
    wrote ``warmup_seconds``, ``skipped_steps`` 0 (that bench trained no fp16, whose loss scaling alone skips a
    step) and, where they measured robustness, the ``robust_protocol`` they measured it by, so that bench compare
    warns before setting their ``robust_contrast`` and ``robust_mean`` against today's. Other robustness rows that
    recorded no protocol keep it blank (bench cannot tell which contrast they measured), in a column of its own
    where their table has none, so that bench compare warns of them against today's whatever else the table holds.
    """
    df = with_eval_dataset(df)
    old_rows = df["warmup_seconds"].notna() if "warmup_seconds" in df.columns else None  # rows of 7bd3d82 and before
    for old, new in RENAMED_COLUMNS.items():
        if old in df.columns:
            merged = df[new].where(df[new].notna(), df[old]) if new in df.columns else df[old]
            df = df.assign(**{new: merged}).drop(columns=[old])
    if "robust_clean" in df.columns and "robust_protocol" not in df.columns:
        # compare skips a protocol column that one side lacks: without it such a side's numbers passed unwarned
        df = df.assign(robust_protocol=pd.Series(None, index=df.index, dtype=object))
    if old_rows is None:
        return df
    skipped = df["skipped_steps"] if "skipped_steps" in df.columns else pd.Series(np.nan, index=df.index)
    df = df.assign(skipped_steps=skipped.where(skipped.notna() | ~old_rows, 0))
    if "robust_clean" in df.columns:
        measured = old_rows & df["robust_clean"].notna()
        df = df.assign(robust_protocol=df["robust_protocol"].where(df["robust_protocol"].notna() | ~measured,
                                                                   OLD_ROBUST_PROTOCOL))
    return df


def is_transfer(df: pd.DataFrame) -> pd.Series:
    """Rows that evaluate another dataset than the one their model trained on (``eval_dataset != dataset``)."""
    if "eval_dataset" not in df.columns or "dataset" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["eval_dataset"].notna() & (df["eval_dataset"].astype(str) != df["dataset"].astype(str))
