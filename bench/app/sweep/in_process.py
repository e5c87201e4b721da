"""A sweep's runs in this process: each claimed, built fresh or resumed, trained and recorded; K at a time.

``--concurrent K`` runs K runs at once, one thread each. On CUDA each run has its own stream (and, through
:mod:`bench.engine.cuda_graph`, its own captured graph and memory pool), so while one run's host prepares its
next step the GPU executes the others' kernels: at batch 32 one run leaves most of an H200 idle. Each run
computes exactly what it computes alone: its model is initialised under a lock (:data:`bench.app.run.GLOBAL_RNG`:
initialisation draws from the global generators), every random draw of training comes from the run's own generator, and on CPU each thread
uses the process's intra-op thread count, so the kernels split their work the same way (tested bit for bit).

A run that fails (a NaN loss, out of memory, a plugin error) is recorded in ``OUT/sweep/failed/`` with its
error in one line and the sweep goes on; a stop request (Ctrl-C, SIGTERM) stops every run at its next step with
its checkpoint saved, so the same command continues them.
"""
from __future__ import annotations

import contextlib
import json
import queue
import shutil
import threading
import time
from dataclasses import dataclass, replace

from ...atomic_files import atomic_write_text
from ...claims import Claim
from ...engine.determinism import deterministic_mode
from ...engine.faults import stop_on_signal
from ...errors import BenchError, Interrupted, one_line_cause
from ...results.runs_csv import reconcile_runs
from .plan import DONE, Planned, run_state, run_states


@dataclass
class Outcome:
    """What became of one planned run in this process."""

    planned: Planned
    status: str  # "done", "skipped" (finished before), "elsewhere" (another process runs it), "failed", "stopped"
    row: dict | None = None
    error: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"run_id": self.planned.run_id, "status": self.status, "row": self.row, "error": self.error,
                "seconds": self.seconds}


class SweepProgress:
    """One line per run start and finish, and after each finish the sweep's state: done / total, in flight,
    failed, and an ETA from the runs finished so far."""

    def __init__(self, planned: list[Planned], slots: int, echo=print):
        self.index = {p.run_id: i for i, p in enumerate(planned, 1)}
        self.total, self.slots, self.echo = len(planned), max(1, slots), echo
        self.finished, self.failed, self.running, self.durations = 0, 0, 0, []
        self.lock = threading.Lock()

    def _tag(self, p: Planned) -> str:
        return f"[{self.index.get(p.run_id, '?')}/{self.total}]"

    def start(self, p: Planned, verb: str = "start"):
        """``verb``: start, resume, or queued (a task handed to Ray or Slurm)."""
        with self.lock:
            self.running += 1
            self.echo(f"{self._tag(p)} {verb} {p.label()} ({p.run_id})")

    def finish(self, outcome: Outcome, trained: bool):
        p = outcome.planned
        with self.lock:
            self.running -= trained
            self.finished += outcome.status in ("done", "skipped", "failed")
            self.failed += outcome.status == "failed"
            if outcome.status == "done":
                self.durations.append(outcome.seconds)
                row = outcome.row or {}
                self.echo(f"{self._tag(p)} done {p.label()}: zero-shot top-1 {row.get('zeroshot_top1', float('nan')):.4f}"
                          f" in {outcome.seconds:.1f} s")
            elif outcome.status == "skipped":
                self.echo(f"{self._tag(p)} {p.label()}: already in {p.out}/runs.csv, skipped")
            elif outcome.status == "elsewhere":
                self.echo(f"{self._tag(p)} {p.label()}: running in another process, left to it")
            elif outcome.status == "failed":
                self.echo(f"{self._tag(p)} FAILED {p.label()}: {outcome.error}")
            if trained:
                self.echo(self.line())

    def line(self) -> str:
        left = self.total - self.finished
        eta = ""
        if self.durations and left:
            seconds = sum(self.durations) / len(self.durations) * left / min(self.slots, left)
            eta = f", ETA {_duration(seconds)}"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"sweep: {self.finished}/{self.total} finished, {self.running} in flight{failed}{eta}"


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s" if m else f"{s}s"


def run_planned(p: Planned, stop=None, progress: SweepProgress | None = None, own_stream: bool = False) -> Outcome:
    """Claim ``p`` and run it to its row (fresh, or resumed from its ``last.pt``), unless it is done or taken.
    ``own_stream``: on CUDA, on a stream of its own (one of ``--concurrent``'s threads)."""
    claim = Claim(p.claim_path)
    if not claim.acquire():
        outcome = Outcome(p, "elsewhere")
        if progress:
            progress.finish(outcome, trained=False)
        return outcome
    started, trained = time.perf_counter(), False
    try:
        if run_state(p).name == DONE:  # finished by another process between the plan and the claim
            outcome = Outcome(p, "skipped")
        else:
            job, resumed = _build(p, stop)
            job.log_name = p.run_id
            trained = True
            if progress:
                progress.start(p, "resume" if resumed else "start")
            with contextlib.ExitStack() as entered:
                try:
                    if own_stream:
                        entered.enter_context(_run_stream(p.cfg.device))
                except BaseException:  # built (its folder locked) but never entered: nothing else lets the lock go
                    job.abandon()
                    raise
                entered.enter_context(job)
                while not job.done:
                    job.step()
            row = job.finish()
            p.failed_path.unlink(missing_ok=True)
            outcome = Outcome(p, "done", row, seconds=time.perf_counter() - started)
    except Interrupted as exc:
        outcome = Outcome(p, "stopped", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one run's failure must not end the sweep
        error = str(exc) if isinstance(exc, BenchError) else one_line_cause(exc)
        p.failed_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p.failed_path, json.dumps({"run_id": p.run_id, "error": error, "type": type(exc).__name__,
                                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        outcome = Outcome(p, "failed", error=error, seconds=time.perf_counter() - started)
    finally:
        claim.release()
    if progress:
        progress.finish(outcome, trained)
    return outcome


def _build(p: Planned, stop):
    from ..resume import REPORTING, load_resumable
    from ..run import Run

    if (p.run_dir / "last.pt").is_file():
        # how it reports may change on a restart (what it computes may not: that is in the run id)
        cfg, ckpt = load_resumable(p.run_dir, p.out, {k: getattr(p.cfg, k) for k in REPORTING})
        return Run(cfg, p.run_id, ckpt, stop=stop), True
    if p.run_dir.exists():  # started, killed before its first checkpoint: start again, keeping what it wrote
        shutil.move(p.run_dir, p.run_dir.with_name(f".{p.run_id}.abandoned-{time.strftime('%Y%m%d-%H%M%S')}"))
    return Run(p.cfg, p.run_id, stop=stop), False


def run_plan(planned: list[Planned], concurrent: int = 1, echo=print) -> list[Outcome]:
    """Every planned run not yet done, ``concurrent`` (at least 1, checked by :func:`.placement.read_placement`)
    at a time in this process; returns their outcomes.

    Raises :class:`~bench.errors.Interrupted` after a stop request, once every run in flight has saved.
    """
    if concurrent > 1:  # bars of several runs would garble each other: one line per epoch instead
        planned = [replace(p, cfg=replace(p.cfg, progress=False)) for p in planned]
    progress = SweepProgress(planned, concurrent, echo)
    outcomes: list[Outcome] = []
    # one setting for the process: check_placement refused a plan whose runs here would not agree on it
    with deterministic_mode(planned[0].cfg.deterministic if planned else False), stop_on_signal() as stop:
        if concurrent == 1:
            for p in planned:
                outcomes.append(run_planned(p, stop, progress))
                if stop.requested:
                    break
        else:
            outcomes = _run_threads(planned, concurrent, stop, progress)
    if planned:
        reconcile_runs(planned[0].out)
    stopped = [o for o in outcomes if o.status == "stopped"]
    if stopped or stop.requested:
        left = sum(1 for s in run_states(planned) if s.name != DONE)
        raise Interrupted(f"sweep stopped by {stop.requested or 'a signal'}: {len(stopped)} run(s) in flight saved "
                          f"their checkpoints, {left} run(s) left; run the same command again to continue")
    return outcomes


def _run_threads(planned: list[Planned], concurrent: int, stop, progress: SweepProgress) -> list[Outcome]:
    import torch

    todo: queue.Queue = queue.Queue()
    for p in planned:
        todo.put(p)
    outcomes, lock = [], threading.Lock()
    threads_per_op = torch.get_num_threads()  # a new thread starts at the default; kernels split by this count

    def worker():
        torch.set_num_threads(threads_per_op)
        while not stop.requested:
            try:
                p = todo.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = run_planned(p, stop, progress, own_stream=True)
            except Exception as exc:  # noqa: BLE001 - outside the run's own handling (its claim): still its outcome
                outcome = Outcome(p, "failed", error=one_line_cause(exc))
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=worker, name=f"sweep-{i}", daemon=True)
               for i in range(min(concurrent, len(planned)))]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():  # a timed join, so the main thread keeps taking signals
            t.join(timeout=0.2)
    finished = {o.planned.run_id for o in outcomes}
    # a run no thread reported (one died on a BaseException): unfinished, so the sweep does not end as if it ran
    outcomes += [Outcome(p, "unfinished") for p in planned if p.run_id not in finished and not stop.requested]
    order = {p.run_id: i for i, p in enumerate(planned)}
    return sorted(outcomes, key=lambda o: order[o.planned.run_id])


def _run_stream(device_name: str):
    """A CUDA stream of the run's own for this thread (a no-op context on CPU)."""
    import torch

    from ...distributed.world import resolve_device

    device = resolve_device(device_name)
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.Stream(device=device))

