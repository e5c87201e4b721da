"""Rows an older bench wrote, read where reading needs a run's configuration (bench.results reads tables without
bench.config, so this lives in the app layer; what a row alone tells is bench.results.columns.with_current_columns).

Two fixes changed what a configuration id covers, and a row keeps the id bench computed when it wrote it:
- 5704f20: a DDP run has the id of its global batch (2 ranks x 16 is the configuration of 1 process x 32). A row
  from before has its per-rank batch's id, which is 1 process x 16's: it pooled with those runs, and a sweep of
  1 x 16 took it for its own run, done, and never trained it.
- a51a997: ``--momentum`` enters the id only under sgd and muon, ``--muon-lr``/``--muon-momentum`` only under muon.
  An AdamW row from before that set one has an id of its own for the run the plain configuration trains.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import pandas as pd

from ..config import RunConfig
from ..results.columns import config_key, is_transfer

# a51a997's options -> the optimizers whose configuration ids they enter now (before: every one, where not default)
_OPTIMIZER_OPTIONS = {"momentum": ("sgd", "muon"), "muon_lr": ("muon",), "muon_momentum": ("muon",)}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.name in _OPTIMIZER_OPTIONS}


def with_current_config_ids(table: pd.DataFrame, run_dir_of: Callable[[str], Path | None],
                            ranks_only: bool = False) -> pd.DataFrame:
    """``table`` with each row's configuration id as bench computes it now, from its run folder's config.json
    (``run_dir_of(run_id)``; None where there is none); a row whose folder or config is gone, unreadable or not a
    whole run config (a model and its epochs: defaults must not fill what a file leaves out) keeps the id it has,
    and so does one that neither fix touches (one process, no optimizer option set for another optimizer): each
    row costs a JSON read, 0.2 s for 4000 runs. ``ranks_only``: only the rows of runs on several ranks (the
    sweep's check of what is done runs once per planned run, where reading every run's config each time would cost
    a sweep of N runs N^2 reads; an AdamW row with a momentum then trains again, its numbers the same, where a DDP
    row would skip a run)."""
    if not {"run_id", "config_id"} <= set(table.columns):
        return table
    ranks = pd.to_numeric(table["world_size"], errors="coerce") if "world_size" in table.columns else \
        pd.Series(1, index=table.index)
    ids = table["config_id"].astype(object).copy()
    for i in table.index[ranks > 1] if ranks_only else table.index:
        run_dir = run_dir_of(str(table.at[i, "run_id"]))
        try:
            saved = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8")) if run_dir else None
            whole = isinstance(saved, dict) and isinstance(saved.get("model"), dict) and "epochs" in saved
            # a config neither fix touches keeps its id: building it to hash it again is most of the cost
            cfg = RunConfig.from_dict(saved) if whole and (ranks[i] > 1 or _set_for_another_optimizer(saved)) \
                else None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):  # unreadable: the recorded id stands
            cfg = None
        if cfg is not None:
            ids.at[i] = config_key(cfg, int(ranks[i]) if ranks[i] > 1 else 1)
    return table.assign(config_id=ids)


def sweep_rows(frame: pd.DataFrame, out) -> pd.DataFrame:
    """The training rows of ``frame`` (read from results folder ``out``; transfer rows, another dataset's numbers
    under their run's id and seed, left out), with ids as a sweep reads them: multi-rank rows' recomputed
    (``ranks_only``). One reading for the sweep's done check, its ``--until`` values and its summary."""
    return with_current_config_ids(frame[~is_transfer(frame)], lambda run_id: Path(out) / "runs" / run_id,
                                   ranks_only=True)


def _set_for_another_optimizer(saved: dict) -> bool:
    """Whether a saved config sets one of a51a997's options away from its default under an optimizer it does not
    enter the id of now."""
    return any(saved.get(name, _DEFAULTS[name]) != _DEFAULTS[name] and saved.get("optimizer", "adamw") not in among
               for name, among in _OPTIMIZER_OPTIONS.items())


def read_sources(specs, results_dir):
    """bench.results.lookup.load_sources, each row with the configuration id bench computes now."""
    from ..results.lookup import load_sources

    sources = load_sources(specs, results_dir)
    for source in sources:
        source.table = with_current_config_ids(source.table, source.run_dirs.get)
    return sources
