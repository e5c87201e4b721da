"""Where a sweep's runs execute: this process (``--concurrent K``), one worker process per GPU of this machine
(``--workers`` / ``--gpus``), Ray tasks (``--launcher ray``) or a Slurm job array through submitit
(``--launcher slurm``; ``cluster = "local"`` runs the same jobs as local processes, for tests and laptops).

Every path ends in :func:`bench.app.sweep.in_process.run_planned`, so each run is claimed before it starts (no run twice,
even when two launchers share one results folder), resumes from its ``last.pt`` after a kill or a preemption,
and writes its record before its row. Remote workers get each run's configuration as a plain dict and the sweep's
data and plugin variables (:data:`FORWARDED_VARIABLES`), and load the same plugins (``--plugins-dir`` / ``-p``,
absolute paths) before they resolve any name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ...engine.determinism import deterministic_mode
from ...engine.faults import stop_on_signal
from ...errors import BenchError, Interrupted, one_line_cause
from .in_process import Outcome, SweepProgress, run_plan, run_planned
from .placement import SLURM_PARAMETERS, WORKER_VARIABLE, Placement, cluster_gpus_per_run, trains_here
from .plan import DONE, FAILED, RUNNING, Planned, run_state, run_states


def launch(planned: list[Planned], placement: Placement, argv, in_worker: bool, echo=print,
           plugins=((), ())) -> list[Outcome]:
    """Run ``planned`` where ``placement`` says (checked by :func:`.placement.check_placement`, except in a worker:
    its parent checked it); ``argv``: this command line, which local workers run again."""
    if trains_here(placement, in_worker):  # a worker's share of the plan, or local runs without workers
        return run_plan(planned, placement.concurrent, echo)
    if placement.launcher == "local":
        return local_workers(planned, argv, placement.workers, placement.gpus, echo)
    remote = [_portable(p) for p in planned]
    if placement.launcher == "ray":
        return ray_sweep(remote, placement, plugins, echo)
    return slurm_sweep(remote, placement.slurm or {}, placement.concurrent, plugins, echo)


def worker_env(index: int, gpu: str | None) -> dict:
    """The environment of sweep worker ``index`` (``bench sweep --workers/--gpus``): one GPU each, if given.

    ``gpu`` counts the GPUs this process sees, as torch numbers them; under a ``CUDA_VISIBLE_DEVICES`` of its own
    the worker gets the device that index stands for."""
    env = {**os.environ, WORKER_VARIABLE: str(index)}
    if gpu is not None:
        visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[int(gpu)] if int(gpu) < len(visible) else gpu
    return env


def local_workers(planned: list[Planned], argv, workers: int, gpus: list[str] | None, echo=print) -> list[Outcome]:
    """``workers`` copies of this command, each seeing one GPU (round robin over ``gpus``), sharing the plan
    through the run claims; their lines come through prefixed with the worker's number."""
    procs = []
    for i in range(workers):
        gpu = gpus[i % len(gpus)] if gpus else None
        procs.append(subprocess.Popen([sys.executable, "-m", "bench", *argv], env=worker_env(i, gpu),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1))
        echo(f"worker {i}: pid {procs[-1].pid}" + (f", GPU {gpu}" if gpu else ""))

    def relay(i, proc):
        for line in proc.stdout:
            echo(f"w{i} | {line.rstrip()}")

    relays = [threading.Thread(target=relay, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in relays:
        t.start()
    with _stop_workers_on_signal(procs):
        codes = [p.wait() for p in procs]
    for t in relays:
        t.join()
    outcomes = _outcomes_from_files(planned)
    if any(c in (130, 143, -15, -2) for c in codes):
        raise Interrupted("sweep workers stopped by a signal; run the same command again to continue")
    crashed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c not in (0, 1)]
    for outcome in outcomes:
        if outcome.status == "unfinished" and crashed:
            outcome.error = "; ".join(crashed)
    return outcomes


@contextlib.contextmanager
def _stop_workers_on_signal(procs):
    """While the workers run, a SIGTERM or SIGINT to this process asks each of them to stop (SIGTERM: each run in
    flight saves its checkpoint and the worker exits 130), and this process waits for them. Without it a SIGTERM
    to the sweep (``kill PID``) ended only this process, and the workers died writing to its closed pipe, each run
    in flight recorded as failed with a BrokenPipeError. A Ctrl-C at a terminal reaches the workers too; the
    SIGTERM after it only repeats the request (a second SIGINT would stop them at once, without a checkpoint)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _outcomes_from_files(planned: list[Planned]) -> list[Outcome]:
    """What became of each run, read back from the results folder (workers elsewhere wrote it)."""
    from ...results.runs_csv import reconcile_runs

    if planned:
        reconcile_runs(planned[0].out)
    outcomes = []
    # "unfinished": a worker stopped before it (crashed, or stopped by a signal)
    for p, state in zip(planned, run_states(planned)):
        status = {DONE: "done", FAILED: "failed", RUNNING: "elsewhere"}.get(state.name, "unfinished")
        outcomes.append(Outcome(p, status, error=state.detail if state.name == FAILED else ""))
    return outcomes


def _portable(p: Planned) -> Planned:
    """Paths absolute, so a worker started in another folder (Ray, Slurm) writes to the same place."""
    cfg = p.cfg
    absolute = {"out": str(Path(cfg.out).expanduser().resolve())}
    if cfg.data_dir is not None:
        absolute["data_dir"] = str(Path(cfg.data_dir).expanduser().resolve())
    return dataclasses.replace(p, cfg=dataclasses.replace(cfg, **absolute))


# Where a run reads its data, vocabulary and image-folder cache from, and which installed plugins load: a Ray node
# has none of the sweep's environment (a Ray cluster's workers start with the node's own), so a sweep that sets
# BENCH_DATASETS_DIR would train there on the node's default folder, or fail to find the data
FORWARDED_VARIABLES = ("BENCH_DATA_DIR", "BENCH_DATASETS_DIR", "BENCH_CACHE_DIR", "BENCH_BPE_PATH",
                       "BENCH_LOAD_PLUGINS", "BENCH_STRICT_PLUGINS")
_PATH_VARIABLES = ("BENCH_DATA_DIR", "BENCH_DATASETS_DIR", "BENCH_CACHE_DIR", "BENCH_BPE_PATH")


def _forwarded_environment() -> dict:
    """This process's :data:`FORWARDED_VARIABLES` that are set, paths absolute (a worker resolves a relative one in
    a folder of its own); an empty BENCH_LOAD_PLUGINS counts (it loads no installed plugin), an empty path not."""
    env = {k: os.environ[k] for k in FORWARDED_VARIABLES
           if os.environ.get(k) or (k not in _PATH_VARIABLES and k in os.environ)}
    return {k: str(Path(v).expanduser().resolve()) if k in _PATH_VARIABLES else v for k, v in env.items()}


@contextlib.contextmanager
def _sweep_environment(payload: dict):
    """The sweep's forwarded variables set for the run, the worker's own restored after it (a Ray worker process
    runs task after task, perhaps of another sweep); a variable the sweep did not set keeps the node's value."""
    env = payload.get("env") or {}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _payload(p: Planned, threads: int | None = None) -> dict:
    # cwd: where the sweep was started, so paths still relative in the config (a dataset imagefolder:PATH, its
    # --transfer datasets) mean there what they meant to the command (a Ray worker starts in a folder of its own);
    # argv: the sweep's command line, which the run's row records as its command (not the Ray worker's or
    # submitit's); env: the sweep's data and plugin variables; threads: the torch thread count a task on this
    # machine trains at (see ray_sweep)
    payload = {"config": p.cfg.to_dict(), "run_id": p.run_id, "varying": p.varying, "cwd": os.getcwd(),
               "argv": list(sys.argv), "env": _forwarded_environment()}
    if threads is not None:
        payload["threads"] = threads
    return payload


def _enter(payload: dict):
    """Work in the folder the sweep was started in, where this machine has it, under its command line and, where
    the sweep gave one, its torch thread count."""
    if os.path.isdir(payload.get("cwd") or ""):
        os.chdir(payload["cwd"])
    if payload.get("argv"):  # provenance reads sys.argv: the row's command is the sweep's
        sys.argv = list(payload["argv"])
    if payload.get("threads"):
        import torch

        torch.set_num_threads(payload["threads"])


def _absolute_plugins(plugins) -> tuple[list, list]:
    """The plugin folders and modules a worker loads: ``--plugins-dir`` and this process's ``BENCH_PLUGINS_DIR``,
    absolute (a worker resolves a relative one in a folder of its own, or has no such variable)."""
    dirs, modules = plugins
    env_dir = os.environ.get("BENCH_PLUGINS_DIR")
    return [str(Path(d).expanduser().resolve()) for d in ([env_dir] if env_dir else []) + list(dirs)], list(modules)


def run_payload(payload: dict, plugins) -> dict:
    """A remote worker's entry point: load the plugins, rebuild the planned run, run it; a plain dict back."""
    from ...config import RunConfig
    from ...host.manager import build_host, set_host

    dirs, modules = plugins
    _enter(payload)  # first: a relative BENCH_PLUGINS_DIR of the worker's means what it means to the sweep
    with _sweep_environment(payload):  # before the host: BENCH_LOAD_PLUGINS decides which plugins load
        set_host(build_host(plugins_dirs=dirs, modules=modules))
        p = Planned(RunConfig.from_dict(payload["config"]), payload["run_id"], payload.get("varying", {}))
        # a stop request (Ray's cancel arrives as a SIGINT in the task's thread) from the start, not only once
        # training runs: the run stops at its next step with its checkpoint saved, its outcome "stopped"; and the
        # run's own --deterministic, which the task held for no run before (run_planned leaves it to its caller)
        with stop_on_signal() as stop, deterministic_mode(p.cfg.deterministic):
            return run_planned(p, stop).to_dict()


def _outcome(planned: dict[str, Planned], result: dict) -> Outcome:
    return Outcome(planned[result["run_id"]], result["status"], result.get("row"), result.get("error", ""),
                   result.get("seconds", 0.0))


def ray_sweep(planned: list[Planned], placement: Placement, plugins, echo=print) -> list[Outcome]:
    """Each run not yet done as one Ray task with ``placement.gpus_per_run`` GPUs (a fraction shares a GPU);
    with ``placement.ray_in_flight`` (``--concurrent K``) at most K tasks handed to Ray at a time, the next one
    as one ends (Ray would start every task its cluster has room for)."""
    try:
        import ray
    except ImportError:
        raise BenchError("--launcher ray needs Ray; install it with: pip install 'bench[ray]'") from None

    address = placement.ray_address
    _connect_ray(ray, placement)
    gpus_per_run = placement.gpus_per_run
    if gpus_per_run is None:  # a cluster's default, from its GPUs (the submitting machine may have none)
        gpus_per_run, shown = cluster_gpus_per_run(ray.cluster_resources().get("GPU", 0),
                                                   {p.cfg.device for p in planned}, placement.label("gpus_per_run"))
        echo(f"Ray: {shown}")
    # Ray runs task after task in one worker process; where the runs disagree on deterministic, a setting of the
    # whole process, each gets a process of its own (max_calls=1; Ray takes it only from ray.remote, not options)
    mixed = len({p.cfg.deterministic for p in planned}) > 1
    remote = ray.remote(max_calls=1)(run_payload) if mixed else ray.remote(run_payload)
    task = remote.options(num_gpus=float(gpus_per_run), num_cpus=1, max_retries=0)
    plugins = _absolute_plugins(plugins)
    # a task of a local Ray trains at this process's torch thread count, as the same run under --launcher local
    # (CPU kernels split their work by it, so the rows are the same bits); Ray would give a task of num_cpus=1 one
    # thread. On a cluster elsewhere each node keeps its own count (the row records torch_threads)
    import torch

    threads = torch.get_num_threads() if address is None else None
    todo = [p for p, s in zip(planned, run_states(planned)) if s.name != DONE]
    by_id = {p.run_id: p for p in planned}
    cap = placement.ray_in_flight or len(todo)
    progress = SweepProgress(planned, min(cap, len(todo)), echo)
    waiting, refs = list(todo), {}

    def submit():
        while waiting and len(refs) < cap:
            p = waiting.pop(0)
            refs[task.remote(_payload(p, threads), plugins)] = p
            progress.start(p, "queued")

    submit()
    outcomes = []
    # Ctrl-C or SIGTERM: every task is cancelled (a queued one never starts; a running one gets a SIGINT, so its run
    # stops at its next step with its checkpoint saved) and the sweep waits for them. Without this the signal ended
    # the driver at once and Ray's shutdown killed the runs in flight without their checkpoints (a SIGTERM exited 1)
    with stop_on_signal() as stop:
        cancelled = False
        while refs:
            if stop.requested and not cancelled:
                echo(f"sweep: {stop.requested}: stopping {len(refs)} task(s); running runs save their checkpoints")
                for ref in refs:
                    ray.cancel(ref, force=False)
                cancelled = True
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.2)  # a timeout: the loop sees a stop request
            if not ready:
                continue
            p = refs.pop(ready[0])
            try:
                outcome = _outcome(by_id, ray.get(ready[0]))
            except Exception as exc:  # noqa: BLE001 - a worker that died (OOM killer, node lost), or a cancelled task
                if cancelled:
                    outcome = _unless_recorded_done(p, Outcome(p, "stopped"))
                else:
                    outcome = Outcome(p, "failed", error=one_line_cause(exc))
            outcomes.append(outcome)
            progress.finish(outcome, trained=outcome.status in ("done", "failed"))
            if not stop.requested:  # after a stop request the runs not handed to Ray stay to do
                submit()
    return _finish_remote(planned, outcomes, stop.requested)


def _connect_ray(ray, placement: Placement):
    """Join ``placement.ray_address``'s cluster, or start a local Ray on this machine's CPUs (unless this process
    has Ray running already)."""
    address = placement.ray_address
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    except ConnectionError as exc:  # an address that answers but is no Ray, a cluster that went away
        if address is None:
            raise
        raise BenchError(f"{placement.label('ray_address')} {address}: Ray could not connect "
                         f"({one_line_cause(exc)}); check the address, or leave it out to start a local Ray "
                         f"for the sweep") from None


def _unless_recorded_done(p: Planned, outcome: Outcome) -> Outcome:
    """``outcome`` for a run whose task or job ended badly, unless the run's own record says it finished first."""
    return Outcome(p, "done") if run_state(p).name == DONE else outcome


def _finish_remote(planned: list[Planned], outcomes: list[Outcome], signal_name: str | None = None) -> list[Outcome]:
    from ...results.runs_csv import reconcile_runs

    reconcile_runs(planned[0].out)
    if signal_name or any(o.status == "stopped" for o in outcomes):
        left = sum(1 for s in run_states(planned) if s.name != DONE)
        raise Interrupted(f"sweep stopped by {signal_name or 'a signal'}: {left} run(s) left; run the same command "
                          f"again to continue")
    return outcomes


class SlurmJob:
    """One job of the array: a chunk of the plan, run ``concurrent`` at a time. On preemption or time-out submitit
    calls :meth:`checkpoint` and requeues the job, which then skips the finished runs and resumes the rest."""

    def __init__(self, payloads: list[dict], plugins, concurrent: int = 1):
        self.payloads, self.plugins, self.concurrent = payloads, plugins, concurrent

    def __call__(self) -> list[dict]:
        from ...config import RunConfig
        from ...host.manager import build_host, set_host

        dirs, modules = self.plugins
        first = self.payloads[0] if self.payloads else {}
        if first:
            _enter(first)  # one sweep's runs: one folder, one command line, one environment
        with _sweep_environment(first):
            set_host(build_host(plugins_dirs=dirs, modules=modules))
            planned = [Planned(RunConfig.from_dict(d["config"]), d["run_id"], d.get("varying", {}))
                       for d in self.payloads]
            return [o.to_dict() for o in run_plan(planned, self.concurrent)]

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmJob(self.payloads, self.plugins, self.concurrent))


def job_chunks(todo: list[Planned], runs_per_job: int) -> list[list[Planned]]:
    """``todo`` in order, ``runs_per_job`` runs to a job; the runs of one job agree on ``deterministic``, a setting
    of the whole process (a plan that agrees on it is cut as it comes)."""
    groups = [[p for p in todo if p.cfg.deterministic == d] for d in (False, True)]
    return [g[i:i + runs_per_job] for g in groups for i in range(0, len(g), runs_per_job)]


def slurm_sweep(planned: list[Planned], slurm: dict, concurrent: int, plugins, echo=print) -> list[Outcome]:
    """The runs not yet done as a submitit job array, ``runs_per_job`` runs per job; waits for every job.
    ``slurm``: the settings :func:`.placement.read_placement` checked."""
    try:
        import submitit
    except ImportError:
        raise BenchError("--launcher slurm needs submitit; install it with: pip install 'bench[slurm]'") from None
    todo = [p for p, s in zip(planned, run_states(planned)) if s.name != DONE]
    if not todo:  # every run done: no job (submitit warns of a batch that submits none)
        return _finish_remote(planned, [])
    runs_per_job = slurm.get("runs_per_job", 1)
    cluster = slurm.get("cluster")
    folder = Path(slurm.get("folder") or Path(planned[0].cfg.out) / "sweep" / "slurm" / "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(name="bench-sweep", **{SLURM_PARAMETERS[k]: v for k, v in slurm.items()
                                                       if k in SLURM_PARAMETERS})
    chunks = job_chunks(todo, runs_per_job)
    plugins = _absolute_plugins(plugins)
    jobs = []
    with executor.batch():  # one job array
        for chunk in chunks:
            jobs.append(executor.submit(SlurmJob([_payload(p) for p in chunk], plugins, concurrent)))
    by_id = {p.run_id: p for p in planned}
    progress = SweepProgress(planned, len(chunks), echo)
    for p in todo:
        progress.start(p, "queued")
    echo(f"submitted {len(jobs)} job(s) of {runs_per_job} run(s) each: {', '.join(str(j.job_id) for j in jobs)} "
         f"(logs in {folder.parent if '%j' in folder.name else folder})")
    outcomes, pending = [], list(zip(jobs, chunks))
    # Ctrl-C or SIGTERM: each job not yet ended is asked to stop (its runs in flight stop at their next step with
    # their checkpoints saved) and the sweep waits for them, then exits 130, as under Ray. Without this the signal
    # ended this process alone (exit 143, no line) while submitit's local jobs went on training unseen. The debug
    # cluster runs each job in this process, inside result(), under the job's own stop handling: no polling there
    with stop_on_signal() as stop:
        stopping = False
        while pending:
            if stop.requested and not stopping:
                echo(f"sweep: {stop.requested}: stopping {len(pending)} job(s); running runs save their checkpoints")
                for job, _ in pending:
                    _stop_job(job)
                stopping = True
            ended = [(job, chunk) for job, chunk in pending if cluster == "debug" or job.done()]
            if not ended:
                time.sleep(0.2)
                continue
            job, chunk = ended[0]
            pending.remove((job, chunk))
            try:
                results = [_outcome(by_id, r) for r in job.result()]
            except Exception as exc:  # noqa: BLE001 - the job itself failed (killed, node lost): its runs failed
                # a run the job finished before it failed (or stopped) is done: its record says so
                error = f"job {job.job_id}: {one_line_cause(exc)}"
                results = [_unless_recorded_done(p, Outcome(p, "stopped") if stopping else
                                                 Outcome(p, "failed", error=error)) for p in chunk]
            for outcome in results:
                outcomes.append(outcome)
                progress.finish(outcome, trained=outcome.status in ("done", "failed"))
    return _finish_remote(planned, outcomes, stop.requested)


def _stop_job(job):
    """Ask a submitit job to stop as a preemption would: SIGTERM to its runs. A local job's controller process
    forwards a SIGTERM to its task (its cancel() sends a SIGINT, then a SIGKILL a second later: no checkpoint); a
    Slurm job gets scancel, which sends SIGTERM and, after the cluster's KillWait, SIGKILL."""
    process = getattr(job, "_process", None)
    if process is not None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    else:
        with contextlib.suppress(Exception):  # a job that ended meanwhile; scancel missing
            job.cancel(check=False)
