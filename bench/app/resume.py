"""``bench run --resume RUN_ID|RUN_DIR|latest``: find a stopped run and continue it from its ``last.pt``.

The run continues with the configuration saved in its checkpoint, so only options that cannot change its
numbers (``--out``, ``--progress``, ``--checkpoint-every``) may come with ``--resume``. Under torchrun it
may resume with another number of ranks: the per-rank batch is rescaled so the global batch stays.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ..atomic_files import ProcessLock
from ..config import RunConfig
from ..engine.checkpoint import FORMAT, TRAINING_STATE, saved_ranks
from ..errors import BenchError
from ..results.run_folder import RUNNING_LOCK
from ..results.runs_csv import append_run, read_table
from ..safe_load import load_checkpoint
from .validation import check_saved_names, saved_config, validate_config

# how a run reports (progress bars, live curves): a restarted run takes the new values
REPORTING = ("progress", "log", "wandb_project", "wandb_entity")
# options that cannot change a run's numbers: where it writes, how it reports, how often it checkpoints
ALLOWED_WITH_RESUME = ("out", "checkpoint_every", *REPORTING)


def find_run_dir(target: str, out: str | Path) -> Path:
    """A run folder from a run id (under ``out/runs``), a path to the folder, or ``latest``."""
    out = Path(out).expanduser()
    if target == "latest":
        return _latest_unfinished(out)
    path = Path(target).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        if path.resolve().parent.name != "runs":
            raise BenchError(f"run folder {path} is not inside a results folder's runs/; move it back to OUT/runs/")
        return path
    if "/" not in target and (out / "runs" / target).is_dir():
        return out / "runs" / target
    raise BenchError(f"--resume {target!r} is neither a run id in {out / 'runs'} nor a run folder; pass one of "
                     f"those (with --out if the run is elsewhere) or latest")


def _latest_unfinished(out: Path) -> Path:
    """The stopped run whose ``last.pt`` is newest; a run another process is training now is not stopped."""
    finished = read_table(out / "runs.csv").run_ids()
    candidates = [p.parent for p in (out / "runs").glob("*/last.pt")
                  if p.parent.name not in finished and not (p.parent / "result.json").exists()
                  and not ProcessLock.held(p.parent / RUNNING_LOCK)]
    if not candidates:
        raise BenchError(f"no unfinished run with a last.pt in {out / 'runs'} (runs being trained now are left "
                         f"alone); start one with bench run, or pass --out where the stopped run is")
    return max(candidates, key=lambda p: (p / "last.pt").stat().st_mtime)


def _launch() -> tuple[int, int]:
    """This process's rank and the number of ranks, as torchrun set them (the process group comes later)."""
    from ..distributed.world import launched_by_torchrun

    if not launched_by_torchrun():
        return 0, 1
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def resume_run(target: str, out: str, given=(), values: dict | None = None):
    """Continue the run ``target``; returns its ``runs.csv`` row and the results folder.

    ``given`` names the options the user typed: any other than :data:`ALLOWED_WITH_RESUME` is refused,
    since the saved configuration decides the run. ``values``: the typed values of the allowed ones.
    """
    conflicting = [g for g in given if g not in ALLOWED_WITH_RESUME]
    if conflicting:
        flag = "--" + conflicting[0].replace("_", "-")
        raise BenchError(f"--resume continues a run with the settings saved in its checkpoint; drop {flag} "
                         f"(only --out, --progress, --checkpoint-every, --log and the W&B project/entity may change)")
    run_dir = find_run_dir(target, out)
    results = run_dir.parent.parent
    if target not in ("latest",) and Path(target).expanduser().is_dir() and "out" in given \
            and Path(out).expanduser().resolve() != results.resolve():
        raise BenchError(f"run folder {run_dir} belongs to results folder {results}, not --out {out}; drop --out")
    run_id = run_dir.name
    rank, _ = _launch()
    saved = (run_dir / "result.json").is_file()  # stopped after its result was saved, before the row was appended
    # under torchrun the ranks check on their own, before any process group: another rank than 0 may find the row
    # that rank 0 has just appended from result.json. It ends as rank 0 does: with that row, or rank 0's error
    if run_id in read_table(results / "runs.csv").run_ids() and not (saved and rank != 0):
        raise BenchError(f"run {run_id} already finished (its row is in {results / 'runs.csv'}); start a new run instead")
    if ProcessLock.held(run_dir / RUNNING_LOCK):
        raise BenchError(f"run {run_id} is being trained by another process now; wait for it to end, or stop it and "
                         f"--resume again")
    if saved:
        row = _saved_result(run_dir)
        if rank == 0:
            append_run(results, row)
        return row, results
    changes = {name: value for name, value in (values or {}).items() if name in given and name != "out"}
    if "log" in changes:
        changes["log"] = tuple(changes["log"])
    cfg, ckpt = load_resumable(run_dir, results, changes)
    from .run import run

    return run(cfg, run_id=run_id, resume=ckpt), results


def _saved_result(run_dir: Path) -> dict:
    """The row a finished run saved in its ``result.json``; a damaged or foreign one is a one-line error, never a
    row appended blind."""
    path = run_dir / "result.json"
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        row, why = None, f"not JSON ({type(exc).__name__})"
    else:
        why = f"it names run {row.get('run_id')!r}" if isinstance(row, dict) else f"it holds a {type(row).__name__}"
    if not isinstance(row, dict) or row.get("run_id") != run_dir.name:
        raise BenchError(f"{path} is not run {run_dir.name}'s result ({why}); delete it and --resume again to "
                         f"continue from its last.pt")
    return row


def load_resumable(run_dir: Path, results: Path, changes: dict | None = None) -> tuple[RunConfig, dict]:
    """The configuration saved in ``run_dir/last.pt`` (with ``changes`` and its results folder) and the checkpoint,
    ready for ``Run(cfg, run_dir.name, resume=ckpt)``; a missing or foreign checkpoint is a one-line error."""
    run_id = run_dir.name
    last = run_dir / "last.pt"
    if not last.is_file():
        raise BenchError(f"run {run_id} has no last.pt (it ran with --no-checkpoints or stopped before its first "
                         f"checkpoint); start it again with bench run")
    ckpt = load_checkpoint(last)
    missing = [k for k in ("model", "config", *TRAINING_STATE) if k not in ckpt]
    if ckpt.get("format") != FORMAT or missing:
        why = f"format {ckpt.get('format')!r}, expected {FORMAT}" if ckpt.get("format") != FORMAT else \
            f"no {missing[0]}"
        raise BenchError(f"{last} holds no training state this bench can resume ({why}); bench eval can still "
                         f"evaluate its weights")
    if ckpt.get("run_id", run_id) != run_id:  # copied in from another run: its numbers would be recorded as this one's
        raise BenchError(f"{last} is the checkpoint of run {ckpt['run_id']}, not of run {run_id}; put this run's own "
                         f"last.pt back, or resume run {ckpt['run_id']} from its folder")
    cfg = saved_config(ckpt, last)
    check_saved_names(cfg, last)
    rank, ranks = _launch()
    global_batch = cfg.batch_size * saved_ranks(ckpt, last)
    if global_batch % ranks:
        raise BenchError(f"run {run_id} trained with a global batch of {global_batch} images, which {ranks} ranks "
                         f"cannot share evenly; resume it with a number of ranks that divides {global_batch}")
    # the same global batch under any number of ranks: step k of an epoch is the same images
    cfg = validate_config(dataclasses.replace(cfg, **{"out": str(results), "batch_size": global_batch // ranks,
                                                     **(changes or {})}))
    if rank == 0:
        for stale in run_dir.glob(".*.pt.*.tmp"):  # half-written checkpoints of a killed process
            stale.unlink(missing_ok=True)
    return cfg, ckpt
