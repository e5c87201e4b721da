"""The transfer evaluations a sweep's finished runs lack: ``--transfer`` is not part of the configuration id (it
adds evaluations, it does not change what is trained), so a sweep run again with a new ``--transfer`` finds its
runs finished and does not train them again. It evaluates instead each finished run's final weights
(``runs/<run id>/last.pt``) on the datasets whose transfer rows ``runs.csv`` lacks, through ``bench eval``'s own
code (:func:`bench.app.evaluate.evaluate_checkpoint`), so each row is the one ``bench eval <run>/last.pt --dataset
...`` records.

It runs in the sweep's own process after the training runs, whatever the launcher (Ray and Slurm workers only
train). While it evaluates a run it holds that run's claim (``OUT/sweep/claims/<planned run id>``), so two sweeps
on one folder never both evaluate one run; a sweep that finds the claim taken leaves the run to its holder.
``runs.csv`` refuses a run id it already holds in any case (:func:`bench.results.runs_csv.append_run`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...claims import Claim
from ...errors import BenchError, one_line_cause
from ...results.columns import config_key
from ...results.runs_csv import read_table
from ..transfer import spec_run_id
from ..transfer_spec import TransferSpec, parse_transfer
from .plan import Planned, counted, finished_keys


@dataclass(frozen=True)
class Missing:
    """A finished run of the plan and the ``--transfer`` entries of its configuration that have no row."""

    planned: Planned
    run_id: str  # the finished run's id in runs.csv: the planned id, or that of a run made by hand
    specs: tuple  # TransferSpec, in the order --transfer lists them

    @property
    def checkpoint(self) -> Path:
        return self.planned.out / "runs" / self.run_id / "last.pt"

    def datasets(self) -> str:
        return ", ".join(_label(s) for s in self.specs)


def _label(spec: TransferSpec) -> str:
    return f"{spec.dataset}@{spec.templates}" if spec.templates else spec.dataset


def missing_transfers(planned: list[Planned]) -> list[Missing]:
    """The finished runs of ``planned`` (a row in ``runs.csv``) whose configuration's ``--transfer`` datasets have
    no transfer row there (ids from :func:`bench.app.transfer.spec_run_id`), in plan order."""
    if not planned or not any(p.cfg.transfer for p in planned):
        return []
    out = planned[0].out
    finished = finished_keys(out)
    have = read_table(out / "runs.csv").run_ids()
    found = []
    for p in planned:
        run_id = finished.get((config_key(p.cfg), p.cfg.seed)) if p.cfg.transfer else None
        if run_id is None:  # not finished: its own run records its transfer rows
            continue
        specs = tuple(s for s in parse_transfer(p.cfg.transfer, p.cfg.dataset)
                      if spec_run_id(run_id, s, p.cfg.templates) not in have)
        if specs:
            found.append(Missing(p, run_id, specs))
    return found


def pending_lines(planned: list[Planned]) -> list[str]:
    """``--dry-run`` and ``--status``: the finished runs with transfer evaluations to do, one line per set of
    datasets (those without a ``last.pt`` apart, since a sweep cannot evaluate them)."""
    groups: dict[tuple[str, bool], int] = {}
    for m in missing_transfers(planned):
        key = (m.datasets(), m.checkpoint.is_file())
        groups[key] = groups.get(key, 0) + 1
    return [f"{counted(n, 'finished run')}: transfer to {datasets} to evaluate" if has_weights else
            f"{counted(n, 'finished run')} without last.pt: transfer to {datasets} cannot be evaluated"
            for (datasets, has_weights), n in groups.items()]


def backfill_transfers(planned: list[Planned], echo=print, echo_err=print) -> int:
    """Evaluate each finished run of ``planned`` on the ``--transfer`` datasets it has no row for, and record those
    rows; returns how many runs' evaluations failed (said on stderr, one line each; the others go on). A run
    without ``last.pt`` is a warning: there is nothing to evaluate."""
    failed = 0
    for m in missing_transfers(planned):
        if not m.checkpoint.is_file():
            echo_err(f"bench: warning: finished run {m.run_id} has no last.pt (deleted, or trained with "
                     f"--no-checkpoints), so its transfer to {m.datasets()} is not evaluated; put its last.pt back "
                     f"in {m.checkpoint.parent}, or train the run again into another --out")
            continue
        claim = Claim(m.planned.claim_path)
        if not claim.acquire():
            echo(f"transfer of finished run {m.run_id}: another process holds the run, left to it")
            continue
        try:
            again = missing_transfers([m.planned])  # read after the claim: another sweep may have recorded them
            if again:
                echo(f"transfer of finished run {m.run_id}: " + _evaluate(again[0]))
        except Exception as exc:  # noqa: BLE001 - one run's evaluation must not end the others'
            failed += 1
            why = str(exc) if isinstance(exc, BenchError) else one_line_cause(exc)
            echo_err(f"bench: transfer of finished run {m.run_id} to {m.datasets()} failed: {why}; fix the cause "
                     f"and run the same command again, or run bench eval {m.checkpoint} --dataset ...")
        finally:
            claim.release()
    return failed


def _evaluate(m: Missing) -> str:
    """``bench eval <run>/last.pt --dataset D,...`` (``--templates T`` for each ``D@T``) on the run's own
    ``--device``, as the run's own transfers were evaluated; the datasets' top-1 as a short text."""
    from ..evaluate import evaluate_checkpoint

    by_templates: dict = {}  # one evaluation per template set given, as bench eval's --templates applies to all
    for spec in m.specs:
        by_templates.setdefault(spec.templates, []).append(spec)
    wanted = {spec_run_id(m.run_id, s, m.planned.cfg.templates): _label(s) for s in m.specs}
    shown, recorded = [], 0
    for templates, specs in by_templates.items():
        table = evaluate_checkpoint(str(m.checkpoint), templates=[templates] if templates else None,
                                    dataset=[s.dataset for s in specs], device=m.planned.cfg.device)
        recorded += table.attrs["recorded"]
        shown += [f"{wanted[run_id]} top-1 {top1:.4f}" for run_id, top1 in zip(table["run_id"], table["zeroshot_top1"])
                  if run_id in wanted]
    # a checkpoint bench eval does not record (another run's, copied in) is said in its note on stderr
    where = f" -> {m.planned.out / 'runs.csv'}" if recorded else " (not recorded)"
    return ", ".join(shown) + where
