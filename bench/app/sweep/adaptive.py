"""``bench sweep --until METRIC:HALFWIDTH``: seeds in rounds, each configuration until its mean is precise enough.

Each round is an ordinary plan of (configuration, seed) runs handed to :func:`.launchers.launch`, so
``--concurrent``, ``--workers``/``--gpus``, Ray and Slurm run it as they run any sweep. Between rounds the state
is read back from the results folder (each run's ``result.json``, and ``runs.csv`` for runs made by hand) and
:func:`.precision.stage` replays the schedule over it. Nothing else is kept, so a sweep killed mid-round and
started again with the same command finishes that round, then goes on exactly as it would have. A worker
(``--workers``/``--gpus``) runs its share of the current round and exits; its parent starts the next round.
Several copies of the command on one results folder (a plain Slurm job array) share each round through the run
claims, and a copy whose share is done waits for the runs the others hold before it decides the next round.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ...config import RunConfig
from ...errors import BenchError
from ..own_process import import_the_engine
from .placement import check_placement, trains_here
from .backfill import backfill_transfers, pending_lines
from .plan import RUNNING, Planned, counted, finished_keys, plan, plan_lines, planned_run_id, run_states, same_runs
from .precision import AT_MAX, PRECISE, Stage, Until, check_metric, stage

WAIT_SECONDS = 5.0  # how often a copy of the command looks whether the runs others hold have finished


@dataclass(frozen=True)
class Configuration:
    """One configuration of the sweep at seed 0, with the options that tell it apart from the others."""

    cfg: RunConfig
    varying: dict
    key: str  # its config_id

    def at(self, seed: int) -> Planned:
        cfg = replace(self.cfg, seed=seed)
        return Planned(cfg, planned_run_id(cfg), {**self.varying, "seed": seed})

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.varying.items()) or f"encoder={self.cfg.model.encoder}"


def configurations(cfgs: list[RunConfig], varying: list[dict]) -> list[Configuration]:
    """The sweep's points with their seeds dropped, each configuration once, in first-seen order."""
    from ...results.columns import config_key

    seen, out = {}, []
    for i, (cfg, shown) in enumerate(zip(cfgs, varying)):
        conf = Configuration(replace(cfg, seed=0), {k: v for k, v in shown.items() if k != "seed"}, config_key(cfg))
        if conf.key not in seen:
            seen[conf.key] = (i, conf.cfg)
            out.append(conf)
        elif seen[conf.key][1] != conf.cfg:  # not just another seed: the same runs, as plan() refuses them
            raise same_runs(seen[conf.key][0], i, f"runs (configuration {conf.key})")
    return out


def metric_values(out: str | Path, metric: str, keys: set) -> dict[tuple[str, int], float]:
    """``(config_id, seed) -> value`` of every finished run in ``out`` of the configurations ``keys``: from the
    runs' records, and from ``runs.csv`` for a run whose folder is gone or elsewhere (the records win where both
    have it). Other runs in the folder are left alone, and so are transfer rows (another dataset evaluated, with
    their run's config id and seed)."""
    import pandas as pd

    from ...results.runs_csv import read_table, run_records
    from ..older_rows import sweep_rows

    def ours(config_id, world_size) -> bool:
        # only the sweep's configurations' rows and records (the folder may hold thousands of other runs), and the
        # runs on several ranks, whose id an older bench computed otherwise (bench.app.older_rows): read as the
        # sweep's check of what is done reads them
        return config_id in keys or pd.to_numeric(world_size, errors="coerce") > 1

    rows = []
    table = read_table(Path(out) / "runs.csv")
    if table.header and "config_id" in table.header:
        frame = table.frame()
        world = frame["world_size"] if "world_size" in frame.columns else pd.Series(1, index=frame.index)
        rows += frame[[ours(c, w) for c, w in zip(frame["config_id"], world)]].to_dict("records")
    rows += [r for r in run_records(out).values() if ours(r.get("config_id"), r.get("world_size", 1))]
    frame = pd.DataFrame(rows)
    values = {}
    if len(frame):
        frame = sweep_rows(frame, out)
    for row in frame.to_dict("records") if len(frame) else []:
        if row.get("config_id") not in keys:
            continue
        value = row.get(metric)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise BenchError(f"run {row.get('run_id')} in {out} has no {metric} (made without the --evals that "
                             f"report it?); --until needs it of every run: move the run out of {out}, or choose "
                             f"another --out")
        values[(row["config_id"], int(row["seed"]))] = value
    return values


def stages(configs: list[Configuration], until: Until) -> list[Stage]:
    values = metric_values(configs[0].cfg.out, until.metric, {conf.key for conf in configs})
    by_key = {conf.key: {} for conf in configs}
    for (key, seed), value in values.items():
        by_key[key][seed] = value
    return [stage(by_key[conf.key], until) for conf in configs]


def adaptive_sweep(cfgs, varying, until: Until, placement, *, show: bool, in_worker: bool, argv, plugins,
                   seeds_given: bool, report, echo=print, echo_err=print, own_process: bool = False) -> int:
    """Check, then show (``show``: ``--dry-run``/``--status``) or run the rounds; returns the exit status.

    ``report(planned, outcomes, echo, echo_err)``: the sweep's report of a round with failed or unfinished
    runs (exit status 1); ``seeds_given``: the sweep file names seeds, which ``--until`` replaces; ``own_process``:
    this process is the command (:mod:`bench.app.own_process`)."""
    configs = configurations(cfgs, varying)
    check_metric(until, [c.cfg for c in configs])
    if not (show or in_worker):  # the first round is the largest one every restart can start with
        placement = check_placement(placement, [c.at(s).cfg for c in configs for s in range(until.min_seeds)])
    if not show and trains_here(placement, in_worker):
        import_the_engine(own_process)  # once, before the plan builds towers, whose cycles the freeze would keep
    plan([c.cfg for c in configs], [c.varying for c in configs], writes=not show)  # every name, option and encoder
    if seeds_given and not in_worker:
        echo_err("bench: note: --until picks each configuration's seeds (0, 1, 2, ...); the seeds the sweep file "
                 "names are not used")
    if show:
        for line in status_lines(configs, until):
            echo(line)
        return 0
    from ...atomic_files import make_folder
    from .launchers import launch

    make_folder(configs[0].cfg.out)
    if not in_worker:
        echo(f"adaptive sweep: each configuration until the 95% interval of its mean {until.metric} is within "
             f"{_width(until.metric, until.halfwidth)}, {until.min_seeds} to {until.max_seeds} seeds")
    before = None
    while True:
        current = stages(configs, until)
        planned = [conf.at(seed) for conf, st in zip(configs, current) for seed in st.todo]
        if not planned:
            if in_worker:  # the parent reports
                return 0
            break
        progress = [(st.n, st.todo, st.done) for st in current]
        if progress == before:
            _no_progress(planned, until)
        before = progress
        if not in_worker:  # numbered by the schedule's replay, not by this process: a restart goes on counting
            echo(f"round {max(st.round for st in current if st.todo)}: {counted(len(planned), 'run')}")
            for conf, st in zip(configs, current):
                if st.todo:
                    echo(f"  {conf.label()}: seeds {_seeds(st.todo)} ({_so_far(until.metric, st)})")
        outcomes = launch(planned, placement, argv=list(argv), in_worker=in_worker, echo=echo, plugins=plugins)
        if in_worker:  # a worker runs its share of one round; the parent decides the next
            return 0
        if any(o.status in ("failed", "unfinished") for o in outcomes):
            return report(planned, outcomes, echo, echo_err)
        _wait_for_others(planned, echo)
    return _finish(configs, until, stages(configs, until), echo, echo_err)


def _no_progress(planned: list[Planned], until: Until):
    """A round that ended with every run done by its files, yet no more values than before: runs whose
    ``result.json`` exists but cannot be read, and that ``runs.csv`` has no row for. Running the round again
    would find them done again, without end."""
    named = ", ".join(p.run_id for p in planned[:3]) + (", ..." if len(planned) > 3 else "")
    raise BenchError(f"{len(planned)} run(s) count as done (their result.json exists) but give no {until.metric}: "
                     f"their records cannot be read and runs.csv has no row for them ({named}); delete those run "
                     f"folders to run them again")


def _wait_for_others(planned: list[Planned], echo):
    """Wait while other processes hold runs of this round (another copy of the command on the same folder)."""
    told = False
    while True:
        held = [p for p, s in zip(planned, run_states(planned)) if s.name == RUNNING]
        if not held:
            return
        if not told:
            echo(f"waiting for {len(held)} run(s) of this round that other processes hold")
            told = True
        time.sleep(WAIT_SECONDS)


def _finish(configs, until: Until, current: list[Stage], echo, echo_err) -> int:
    from ...results.runs_csv import reconcile_runs
    from ..summary import sweep_summary_lines

    out = configs[0].cfg.out
    reconcile_runs(out)  # a run killed between its record and its row
    failed_transfers = backfill_transfers(_finished_runs(configs), echo, echo_err)
    for conf, st in zip(configs, current):
        echo(f"  {conf.label()}: {_so_far(until.metric, st)}, {_stopped(until, st)}")
    for line in sweep_summary_lines(out, {(conf.key, seed) for conf, st in zip(configs, current)
                                          for seed in range(st.n)}):
        echo(line)
    short = [conf.label() for conf, st in zip(configs, current) if st.stop == AT_MAX]
    if short:
        echo_err(f"bench: note: {len(short)} of {len(configs)} configuration(s) reached --max-seeds "
                 f"{until.max_seeds} with the interval still wider than {_width(until.metric, until.halfwidth)} "
                 f"({'; '.join(short)}); raise --max-seeds to go on")
    return 1 if failed_transfers else 0


def _finished_runs(configs: list[Configuration]) -> list[Planned]:
    """Every finished run (a row in ``runs.csv``) of the configurations, in their order, by seed."""
    done = finished_keys(configs[0].cfg.out)
    return [conf.at(seed) for conf in configs for seed in sorted(s for key, s in done if key == conf.key)]


def status_lines(configs: list[Configuration], until: Until) -> list[str]:
    """``--dry-run`` and ``--status``: per configuration its id, n, mean and half-width so far and the next
    round (or why it stopped); then the current round's runs, one line each, as a plain sweep shows them."""
    current = stages(configs, until)
    ids = [f"{conf.cfg.model.encoder}-{conf.key}" for conf in configs]
    width = max(len(i) for i in ids)
    lines = [f"until the 95% interval of the mean {until.metric} is within {_width(until.metric, until.halfwidth)} "
             f"({until.min_seeds} to {until.max_seeds} seeds a configuration):"]
    for i, (conf, run_id, st) in enumerate(zip(configs, ids, current), 1):
        then = f"round {st.round}: seeds {_seeds(st.todo)}" if st.todo else f"stop: {_stopped(until, st)}"
        lines.append(f"{i:>3}  {run_id:<{width}}  {_so_far(until.metric, st):<28} {then}  {conf.label()}")
    planned = [conf.at(seed) for conf, st in zip(configs, current) for seed in st.todo]
    counts = {PRECISE: 0, AT_MAX: 0, None: 0}
    for st in current:
        counts[st.stop] += 1
    lines.append(f"{counted(len(configs), 'configuration')}: {counts[PRECISE]} precise, {counts[AT_MAX]} at "
                 f"--max-seeds, {counts[None]} with a round to run ({counted(len(planned), 'run')})")
    if planned:
        lines += plan_lines(planned)
    return lines + pending_lines(_finished_runs(configs))


def _seeds(seeds) -> str:
    seeds = sorted(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _width(metric: str, value: float) -> str:
    from ...results.columns import is_accuracy

    if math.isinf(value):
        return "±inf"
    return f"±{100 * value:.2f} pp" if is_accuracy(metric) else f"±{value:.4g}"


def _so_far(metric: str, st: Stage) -> str:
    from ...results.views import fmt_value

    if not st.done:
        return "n=0"
    if st.done < 2:
        return f"n={st.done}, {fmt_value(st.mean, metric)}"
    return f"n={st.done}, {fmt_value(st.mean, metric)} {_width(metric, st.halfwidth)}"


def _stopped(until: Until, st: Stage) -> str:
    if st.stop == PRECISE:
        return f"precise ({_width(until.metric, st.halfwidth)} <= {_width(until.metric, until.halfwidth)})"
    if st.stop == AT_MAX:
        return f"at --max-seeds {until.max_seeds}, still wider than {_width(until.metric, until.halfwidth)}"
    return f"seeds {_seeds(st.todo)} to run"
