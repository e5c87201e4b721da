"""Repeats and sweeps: the cross product of encoders x template sets x seeds into one results folder.

A configuration is done when ``runs.csv`` holds a row with its ``config_id`` and seed; with
``skip_existing`` those are not run again, so a sweep that was interrupted (or extended with a new
encoder) continues where it stopped. A run killed half-way has no row and is run again from scratch.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

from ..config import RunConfig
from ..errors import BenchError
from ..results.runs_table import read_runs
from ..results.tables import config_key


def parse_seeds(values) -> list[int]:
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise BenchError(f"--seeds takes integers separated by commas, got {','.join(map(str, values))!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise BenchError(f"--seeds must be distinct integers >= 0, got {','.join(map(str, values))!r}")
    return seeds


def plan(base: RunConfig, encoders, templates, seeds) -> list[RunConfig]:
    """Every configuration of the cross product, encoder-major (all seeds of one configuration together).

    Every name, option and encoder is checked first, so a typo or a bad option of the third encoder fails
    before the first run starts (each encoder configuration's vision tower is built once for that).
    """
    from .run import check_names
    from .validation import check_encoder_builds, check_run_inputs

    cfgs, built = [], set()
    for encoder, tpl, seed in itertools.product(encoders or [base.model.encoder], templates or [base.templates],
                                                seeds or [base.seed]):
        cfg = replace(base, model=replace(base.model, encoder=encoder), templates=tpl, seed=seed)
        check_names(cfg)
        if cfg.model not in built:  # the rest of a run's inputs vary only with its model, not templates or seed
            check_run_inputs(cfg)
            check_encoder_builds(encoder, cfg.model.embed_dim, cfg.model.image_resolution, dict(cfg.model.encoder_opts))
            built.add(cfg.model)
        cfgs.append(cfg)
    return cfgs


def completed(out) -> set[tuple[str, int]]:
    """``(config_id, seed)`` of every run with a row in ``out/runs.csv``."""
    runs = read_runs(Path(out))
    if not len(runs) or "config_id" not in runs.columns:
        return set()
    return {(str(c), int(s)) for c, s in zip(runs["config_id"], runs["seed"]) if isinstance(c, str)}


def sweep(cfgs: list[RunConfig], skip_existing: bool = False, echo=print, on_row=None) -> list[dict]:
    """Run each configuration not already in the results folder; returns the new rows (each also passed to
    ``on_row`` as soon as it is written)."""
    done = completed(cfgs[0].out) if skip_existing and cfgs else set()
    from .run import run

    rows = []
    for i, cfg in enumerate(cfgs, 1):
        label = f"[{i}/{len(cfgs)}] {cfg.model.encoder} templates={cfg.templates} seed={cfg.seed}"
        if (config_key(cfg), cfg.seed) in done:
            echo(f"{label}: already in {cfg.out}/runs.csv, skipped")
            continue
        echo(f"{label}: running")
        rows.append(run(cfg))
        if on_row is not None:
            on_row(rows[-1], cfg)
    return rows
