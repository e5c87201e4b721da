"""``bench sweep`` from its parsed options: the plan (a sweep file's points or the flags' cross product), where
its runs go, then the runs, the transfer evaluations that finished runs lack (:mod:`.backfill`), a summary over
seeds and the exit status.

Every check runs before the first run starts or the first file is written: options, names and encoders
(:func:`.plan.plan`), and where the runs go (:mod:`.placement`). The options and names are checked first, before
torch and pandas load (:func:`bench.app.validation.check_before_heavy_imports`); these then load with the
command's GC held off, as the engine does where the runs train in this process (:mod:`bench.app.own_process`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ...errors import BenchError
from .placement import SWEEP_KEYS, WORKER_VARIABLE, check_placement, read_placement, trains_here


@dataclass(frozen=True)
class SweepRequest:
    """What ``bench sweep`` was asked, by parameter name."""

    file: str | None  # a sweep file, or None for the flags form
    encoders: tuple = ()  # the flags form's lists
    templates: tuple = ()
    seeds: tuple = ()
    dry_run: bool = False
    status: bool = False
    slurm: tuple = ()  # --slurm KEY=VALUE pairs
    options: dict = field(default_factory=dict)  # the placement options (SWEEP_KEYS) and bench run's, by name
    given: frozenset = frozenset()  # the parameter names typed on the command line
    argv: tuple = ()  # the whole command line (local workers run it again)
    until: str | None = None  # --until METRIC:HALFWIDTH: seeds in rounds (:mod:`.adaptive`)
    min_seeds: int | None = None
    max_seeds: int | None = None
    own_process: bool = False  # this process is the command (:mod:`bench.app.own_process`)


def sweep_command(request: SweepRequest, run_params, echo=print, echo_err=print) -> int:
    """Plan, check and run the sweep; returns the exit status (1 when runs failed or stayed unfinished).

    ``run_params``: ``bench run``'s click parameters a sweep file may set (see :mod:`.points`).
    """
    from ...host.manager import plugin_options
    from .points import configs_from_file, configs_from_lists
    from .precision import parse_until

    until = parse_until(request.until, request.min_seeds, request.max_seeds)
    typed = {key: request.options[key] for key in SWEEP_KEYS if key in request.given}  # over the file's [sweep]
    flags = {k: v for k, v in request.options.items() if k not in SWEEP_KEYS}
    if request.file is not None:
        if request.encoders or request.templates or request.seeds:
            raise BenchError("--encoder, --templates and --seeds form a sweep without a file; with FILE, put them "
                             "in its [grid]")
        from .toml_file import read_sweep_file

        spec = read_sweep_file(request.file)
        cfgs, varying = configs_from_file(spec, flags, set(request.given), run_params)
        placement = read_placement(spec.sweep, typed, spec.slurm, request.slurm, spec.path)
    else:
        if until is not None and request.seeds:
            raise BenchError("--until picks each configuration's seeds (0, 1, 2, ...); drop --seeds")
        cfgs, varying = configs_from_lists(request.encoders, request.templates, request.seeds, flags)
        placement = read_placement({}, typed, {}, request.slurm)
    from ..own_process import import_the_engine, imports_without_gc
    from ..validation import check_before_heavy_imports

    # the plan and the transfers a sweep adds to finished runs read runs.csv with pandas, and import torch; a prefix
    # name (timm:NAME) is looked up by its plugin's resolver, which may import torch: in the window too
    with imports_without_gc(request.own_process):
        check_before_heavy_imports(cfgs)  # names and options: the plan checks them again after torch's import
        from .backfill import backfill_transfers, pending_lines
        from .plan import plan, plan_lines

    in_worker = WORKER_VARIABLE in os.environ
    if until is not None:
        from .adaptive import adaptive_sweep

        seeds_given = request.file is not None and any(c.seed != 0 or "seed" in v for c, v in zip(cfgs, varying))
        return adaptive_sweep(cfgs, varying, until, placement, show=request.dry_run or request.status,
                              in_worker=in_worker, argv=request.argv, plugins=plugin_options(request.argv),
                              seeds_given=seeds_given, report=_report, echo=echo, echo_err=echo_err,
                              own_process=request.own_process)
    if not (request.dry_run or request.status or in_worker):
        placement = check_placement(placement, cfgs)  # before the plan builds every encoder
    if not (request.dry_run or request.status) and trains_here(placement, in_worker):
        import_the_engine(request.own_process)  # before the plan builds towers, whose cycles the freeze would keep
    planned = plan(cfgs, varying, writes=not (request.dry_run or request.status))
    if request.dry_run or request.status:
        for line in plan_lines(planned) + pending_lines(planned):
            echo(line)
        return 0
    from ...atomic_files import make_folder
    from .launchers import launch

    make_folder(planned[0].out)
    outcomes = launch(planned, placement, argv=list(request.argv), in_worker=in_worker, echo=echo,
                      plugins=plugin_options(request.argv))
    if in_worker:  # the parent evaluates the finished runs' missing transfers and reports
        return 0
    # finished runs a new --transfer asks more of: evaluated in this process whatever the launcher (an evaluation
    # takes seconds, where a worker, a Ray task or a Slurm job costs its start)
    failed_transfers = backfill_transfers(planned, echo, echo_err)
    return max(_report(planned, outcomes, echo, echo_err), 1 if failed_transfers else 0)


def _report(planned, outcomes, echo, echo_err) -> int:
    from ...results.columns import config_key
    from ..summary import sweep_summary_lines

    out = planned[0].out
    for line in sweep_summary_lines(out, {(config_key(p.cfg), p.cfg.seed) for p in planned}):
        echo(line)
    failed = [o for o in outcomes if o.status == "failed"]
    unfinished = [o for o in outcomes if o.status == "unfinished"]
    if failed:
        echo_err(f"bench: {len(failed)} of {len(planned)} runs failed (errors in {out}/sweep/failed/); fix the "
                 f"cause and run the same command again to retry them")
    if unfinished:
        why = f" ({unfinished[0].error})" if unfinished[0].error else ""
        echo_err(f"bench: {len(unfinished)} of {len(planned)} runs unfinished{why}; run the same command again to "
                 f"continue them")
    return 1 if failed or unfinished else 0
