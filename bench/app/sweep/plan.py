"""A sweep's plan: its runs, each with a run id fixed by what it computes, and where each run stands.

A planned run's id is ``<encoder>-<config_id>-s<seed>``, the same on every machine and every restart, so a
sweep started again (after a kill, a preemption, on another node) finds each run's folder: a ``result.json``
there means done, a ``last.pt`` means continue from it under the same id. A ``(config_id, seed)`` already in
``runs.csv`` under another id (a ``bench run`` made by hand) counts as done too.

The sweep's own bookkeeping lives in ``OUT/sweep/``: ``claims/<run_id>`` while a process runs it
(:class:`bench.claims.Claim`), ``failed/<run_id>.json`` with the error of a run that failed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...claims import claim_alive, read_claim
from ...config import RunConfig
from ...errors import BenchError
from ...results.columns import config_key
from ...results.run_folder import failure_error, failure_record_path, file_safe, sweep_claim_path
from ...results.runs_csv import read_table
from ..older_rows import sweep_rows

DONE, RUNNING, FAILED, RESUME, TODO = "done", "running", "failed", "resume", "to do"


@dataclass(frozen=True)
class Planned:
    """One run of a sweep: its configuration, its fixed run id, and the options it varies in (for the plan)."""

    cfg: RunConfig
    run_id: str
    varying: dict = field(default_factory=dict, compare=False)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / self.run_id

    @property
    def claim_path(self) -> Path:
        return sweep_claim_path(self.out, self.run_id)

    @property
    def failed_path(self) -> Path:
        return failure_record_path(self.out, self.run_id)

    def label(self) -> str:
        shown = self.varying or {"encoder": self.cfg.model.encoder, "seed": self.cfg.seed}
        return " ".join(f"{k}={v}" for k, v in shown.items())


def planned_run_id(cfg: RunConfig) -> str:
    return f"{file_safe(cfg.model.encoder, keep='-_')}-{config_key(cfg)}-s{cfg.seed}"


def plan(cfgs: list[RunConfig], varying: list[dict] | None = None, writes: bool = True) -> list[Planned]:
    """The planned runs of ``cfgs``, every name, option and encoder checked first, so a typo or a bad option of
    the third encoder fails before the first run starts (each encoder configuration's tower is built once).
    ``writes``: the results folder must be writable (not for ``--dry-run`` and ``--status``, which only read)."""
    from ..validation import check_encoder_builds, check_names, check_run_inputs

    if not cfgs:
        raise BenchError("the sweep plans no run; name at least one encoder")
    outs = {str(Path(c.out).expanduser().resolve()) for c in cfgs}
    if len(outs) > 1:
        raise BenchError(f"the runs of one sweep write into one results folder; out varies ({', '.join(sorted(outs))})"
                         f": set out once, in [base] or with --out")
    planned, built, seen = [], set(), {}
    for i, cfg in enumerate(cfgs):
        check_names(cfg)
        # every point's options, which a point may set beside its model (max_grad_norm, data_dir); the results
        # folder, one for all of them, once
        check_run_inputs(cfg, out=("write" if writes else "read") if i == 0 else None)
        model = repr(cfg.model)  # its text: an encoder option may be a list (widths=[32,64,64]), not hashable
        if model not in built:
            check_encoder_builds(cfg.model.encoder, cfg.model.embed_dim, cfg.model.image_resolution,
                                 dict(cfg.model.encoder_opts))
            built.add(model)
        run_id = planned_run_id(cfg)
        if run_id in seen:
            raise same_runs(seen[run_id], i, f"run (configuration {config_key(cfg)}, seed {cfg.seed})")
        seen[run_id] = i
        planned.append(Planned(cfg, run_id, (varying or [{}] * len(cfgs))[i]))
    return planned


def same_runs(first: int, second: int, what: str) -> BenchError:
    """Points ``first`` and ``second`` (from 0) of a sweep are the same ``what``: refused, not run or merged."""
    return BenchError(f"points {first + 1} and {second + 1} of the plan are the same {what}: they differ only in "
                      f"options that do not change what is computed; drop one")


@dataclass(frozen=True)
class State:
    name: str  # DONE, RUNNING, FAILED, RESUME or TODO
    detail: str = ""


def finished_keys(out: str | Path) -> dict[tuple[str, int], str]:
    """``(config_id, seed) -> run_id`` of every run with a row in ``out/runs.csv``; transfer rows (another dataset
    evaluated, with their run's config id and seed) and rows without a seed (pretrained models) are not runs."""
    table = read_table(Path(out) / "runs.csv")
    if not table.header or "config_id" not in table.header:
        return {}
    frame = table.frame()
    frame = sweep_rows(frame, out)
    return {(str(c), int(s)): str(r) for c, s, r in zip(frame["config_id"], frame["seed"], frame["run_id"])
            if isinstance(c, str) and pd.notna(s)}


def run_state(p: Planned, finished: dict | None = None) -> State:
    """Where a planned run stands, from the files alone (so any process, on any machine, can tell)."""
    finished = finished_keys(p.out) if finished is None else finished
    if (p.run_dir / "result.json").is_file():
        return State(DONE, p.run_id)
    other = finished.get((config_key(p.cfg), p.cfg.seed))
    if other is not None:
        return State(DONE, other)
    holder = read_claim(p.claim_path)
    if holder is not None and claim_alive(p.claim_path, holder):
        return State(RUNNING, f"{holder.get('host', '?')} pid {holder.get('pid', '?')}")
    if p.failed_path.is_file():
        return State(FAILED, failure_error(p.failed_path))
    if (p.run_dir / "last.pt").is_file():
        return State(RESUME, "from its last.pt")
    return State(TODO)


def run_states(planned: list[Planned]) -> list[State]:
    """:func:`run_state` of each planned run, ``runs.csv`` read once for all of them: read again per run, a plan
    of P runs into a folder of N rows costs P x N (minutes for a few hundred runs over a few thousand rows)."""
    finished = finished_keys(planned[0].out) if planned else {}
    return [run_state(p, finished) for p in planned]


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless one: "1 run", "6 runs"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def plan_lines(planned: list[Planned]) -> list[str]:
    """``--dry-run`` and ``--status``: one line per run, then the count of each state."""
    states = run_states(planned)
    width = max(len(p.run_id) for p in planned)
    lines = []
    for i, (p, s) in enumerate(zip(planned, states), 1):
        detail = f" ({s.detail})" if s.detail and s.name != DONE else ""
        lines.append(f"{i:>3}  {p.run_id:<{width}}  {s.name:<7} {p.label()}{detail}")
    counts = {name: sum(s.name == name for s in states) for name in (DONE, RUNNING, FAILED, RESUME, TODO)}
    lines.append(f"{counted(len(planned), 'run')}: " + ", ".join(f"{n} {name}" for name, n in counts.items() if n)
                 + f" -> {planned[0].out}/runs.csv")
    return lines
