"""Where a sweep's runs execute, checked before anything runs or is written: the [sweep] table's settings with
the flags typed over them (``--concurrent``, ``--workers``, ``--gpus``, ``--launcher``, ``--gpus-per-run``,
``--ray-address``) and the [slurm] table with ``--slurm``.

:func:`read_placement` checks each value's form and range, which holds on any machine (so ``--dry-run`` checks
it too). :func:`check_placement` then checks the settings against this machine (its GPUs, the launcher's
package, whether a ``--ray-address`` answers) and the plan (how many runs, on which device, whether the runs
that share a process agree on ``deterministic``), and resolves the defaults. Every failure is one line naming
the option and the fix. The GPU count is read through :func:`visible_gpus` only, so tests can set it.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from dataclasses import dataclass, replace

from ...errors import BenchError
from .ray_address import FORMS, check_form, check_reachable

LAUNCHERS = ("local", "ray", "slurm")
SLURM_PARAMETERS = {  # [slurm] keys -> submitit's AutoExecutor parameters
    "partition": "slurm_partition", "time_min": "timeout_min", "gpus_per_job": "gpus_per_node",
    "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb", "account": "slurm_account", "qos": "slurm_qos",
    "constraint": "slurm_constraint", "array_parallelism": "slurm_array_parallelism", "setup": "slurm_setup",
}
SWEEP_KEYS = ("concurrent", "workers", "gpus", "launcher", "gpus_per_run", "ray_address")  # a sweep file's [sweep]
SLURM_KEYS = ("cluster", *SLURM_PARAMETERS, "runs_per_job", "folder")  # its [slurm]
SLURM_CLUSTERS = (None, "slurm", "local", "debug")
# what each [slurm] value must be, checked before anything is written (submitit would fail on it mid-submission)
SLURM_TYPES = {"runs_per_job": ("int", 1), "time_min": ("int", 1), "gpus_per_job": ("int", 0),
               "cpus_per_task": ("int", 1), "array_parallelism": ("int", 1), "mem_gb": ("number", 0),
               "partition": ("text", 0), "account": ("text", 0), "qos": ("text", 0), "constraint": ("text", 0),
               "folder": ("text", 0), "setup": ("lines", 0)}
# settings that mean something under one launcher only: typed for another, they are an error (from a sweep file,
# which may serve several launchers, they are left unused)
ONLY_WITH = {"workers": "local", "gpus": "local", "gpus_per_run": "ray", "ray_address": "ray"}
EXTRAS = {"ray": ("ray", "Ray"), "slurm": ("submitit", "submitit")}
MAX_GPUS_PER_RUN = 8
# set in the environment of the workers that --workers/--gpus start: each runs its share of the plan, unchecked
WORKER_VARIABLE = "BENCH_SWEEP_WORKER"


def visible_gpus() -> int:
    """The GPUs torch sees on this machine (after ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class Placement:
    """Where the runs go. Before :func:`check_placement`, ``workers``, ``gpus`` and ``gpus_per_run`` may be None
    (their defaults depend on the machine); after it, ``workers`` is a count and ``gpus`` a list or None."""

    concurrent: int = 1  # runs trained at once by one process (on one device)
    launcher: str = "local"  # local, ray or slurm
    workers: int | None = None  # local: worker processes on this machine
    gpus: tuple | str | None = None  # local: GPU indices, one worker each, or "all"
    gpus_per_run: float | None = None  # ray: GPUs (or a fraction of one) each task asks for
    ray_address: str | None = None  # ray: an existing cluster; None starts a local Ray for the sweep
    ray_in_flight: int | None = None  # ray: the most runs in flight at once (--concurrent); None: no cap
    slurm: dict | None = None  # slurm: the [slurm] settings
    typed: frozenset = frozenset()  # the settings typed as flags (the rest came from the sweep file)
    labels: dict | None = None  # setting -> how a message names it (``--gpus`` or ``s.toml: sweep.gpus``)

    def label(self, key: str) -> str:
        return (self.labels or {}).get(key, f"--{key.replace('_', '-')}")


def read_placement(table: dict, flags: dict, slurm_table: dict, slurm_flags, path=None) -> Placement:
    """``table`` (a sweep file's [sweep]) with ``flags`` (the typed ones, by the same keys) over it, and the
    [slurm] table with ``--slurm KEY=VALUE`` pairs over it; each value's form and range checked."""
    settings = {**table, **flags}
    labels = {k: f"--{k.replace('_', '-')}" if k in flags or path is None else f"{path}: sweep.{k}" for k in settings}
    pairs = dict(_slurm_pairs(slurm_flags))
    slurm = {**slurm_table, **pairs}
    placement = Placement(typed=frozenset(flags) | ({"slurm"} if pairs else frozenset()), labels=labels, slurm=slurm)
    label = placement.label
    launcher = settings.get("launcher", "local")
    if launcher not in LAUNCHERS:
        raise BenchError(f"{label('launcher')} must be local, ray or slurm, got {launcher!r}")
    concurrent = _count(settings.get("concurrent", 1), label("concurrent"), "runs trained at once in one process")
    workers = settings.get("workers")
    if workers is not None:
        workers = _count(workers, label("workers"), "worker processes on this machine")
    gpus = _gpu_indices(settings["gpus"], label("gpus")) if settings.get("gpus") is not None else None
    gpus_per_run = settings.get("gpus_per_run")
    if gpus_per_run is not None:
        gpus_per_run = _gpus_per_run(gpus_per_run, label("gpus_per_run"))
    address = settings.get("ray_address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise BenchError(f"{label('ray_address')} must be a Ray address ({FORMS}), got {address!r}; leave it out "
                         f"to start a local Ray")
    if address is not None and launcher == "ray":
        address = address.strip()
        check_form(address, label("ray_address"))
    # under Ray each run is a task of its own, so K runs in one process cannot apply; K given (typed or in the
    # file) caps the runs in flight instead, and left out lets the cluster run as many as it can place
    in_flight = concurrent if launcher == "ray" and "concurrent" in settings else None
    placement = replace(placement, concurrent=concurrent, launcher=launcher, workers=workers, gpus=gpus,
                        gpus_per_run=gpus_per_run, ray_address=address, ray_in_flight=in_flight)
    for key, needs in ONLY_WITH.items():
        if key in flags and launcher != needs and flags[key] is not None:
            raise BenchError(f"{label(key)} applies to --launcher {needs} only, and this sweep uses --launcher "
                             f"{launcher}; drop {label(key)}" + (" or add --launcher ray" if needs == "ray" else ""))
    if pairs and launcher != "slurm":
        raise BenchError(f"--slurm applies to --launcher slurm only, and this sweep uses --launcher {launcher}; drop "
                         f"--slurm or add --launcher slurm")
    if launcher == "slurm":
        _check_slurm(slurm)
    return placement


def trains_here(placement: Placement, in_worker: bool) -> bool:
    """Whether the sweep's runs train in this process (:func:`.launchers.launch`): a worker's share, or local runs
    without workers (a GPU named with --gpus is a worker's only GPU); else workers, Ray tasks or Slurm jobs do."""
    return in_worker or (placement.launcher == "local" and placement.workers == 1 and not placement.gpus)


def check_placement(placement: Placement, cfgs) -> Placement:
    """``placement`` checked against this machine and the plan's runs (``cfgs``), with its defaults resolved:
    ``workers`` a count, ``gpus`` the indices of a worker's GPU each (or None), ``gpus_per_run`` a number (None:
    a Ray cluster's default, decided once joined)."""
    _check_one_mode(placement, cfgs)
    devices = {c.device for c in cfgs}
    if placement.launcher in EXTRAS:
        return _check_remote(placement, devices)
    return _check_local(placement, devices, len(cfgs))


def _check_remote(placement: Placement, devices: set) -> Placement:
    """Ray or Slurm: the GPUs each task or job gets against the runs' devices, the launcher's package, and for
    Ray the cluster's address; ``gpus_per_run`` resolved."""
    checked = placement
    if placement.launcher == "ray":
        address = placement.ray_address
        if address is None and os.environ.get("RAY_ADDRESS", "").strip():
            # ray.init joins RAY_ADDRESS's cluster when given no address, as every Ray tool does; joined that way,
            # it refuses the num_cpus bench gives the local Ray it starts, so the sweep asks for auto instead
            address = "auto"
        # the GPUs of the cluster joined, where RAY_ADDRESS names one: not this machine's for a local Ray
        checked = replace(placement, ray_address=address)
        checked = replace(checked, gpus_per_run=_ray_gpus(checked, devices))
    else:
        _check_slurm_gpus(placement.slurm or {}, devices)
    module, name = EXTRAS[placement.launcher]
    if importlib.util.find_spec(module) is None:
        raise BenchError(f"--launcher {placement.launcher} needs {name}; install it with: "
                         f"pip install 'bench[{placement.launcher}]'")
    if placement.launcher == "ray":  # ray.init retries an address that does not answer for a long time
        check_reachable(checked.ray_address, placement.label("ray_address"))
    return checked


def _check_local(placement: Placement, devices: set, runs: int) -> Placement:
    """This machine's launcher: the runs' CUDA devices against the GPUs torch sees, each worker's GPU, and the
    worker count against the ``runs`` of the plan; ``workers`` and ``gpus`` resolved."""
    label = placement.label
    cuda = _cuda(devices)
    n = visible_gpus() if cuda else 0
    if cuda and not n:  # on this machine every run would fail at its start, one by one
        raise BenchError(f"the runs use --device {cuda[0]}, and torch sees no GPU on this machine; use --device cpu "
                         f"or auto, or --launcher ray|slurm to run them where there are GPUs")
    gpus = _local_gpus(placement, devices)
    # cuda:N past the GPUs there are, where the runs see them all; a worker given one GPU (--gpus, or by default)
    # sees it as cuda:0, and _local_gpus refused any index there
    absent = _past(cuda, n) if gpus is None else []
    if absent:
        raise BenchError(f"the runs use --device {absent[0]}, and torch sees {n} GPU(s) on this machine, numbered "
                         f"from 0; use --device cuda:0 to cuda:{n - 1}, or auto")
    # one worker per GPU by default, but no more than there are runs: a plan of fewer runs than the machine has GPUs
    # (one run, or an adaptive sweep's first round) is not a --workers typed too high
    workers = placement.workers or (min(len(gpus), runs) if gpus else 1)
    if workers > runs:
        raise BenchError(f"{label('workers')} {workers} starts more workers than the plan has runs ({runs}); use "
                         f"{label('workers')} {runs} or fewer")
    return replace(placement, gpus=gpus, workers=workers)


def _check_one_mode(placement: Placement, cfgs):
    """``deterministic`` is a setting of the whole process (torch reads the cuBLAS workspace setting once, when a
    process first uses cuBLAS), so the runs that one process trains must agree on it: every run under the local
    launcher (this process, or each ``--workers``/``--gpus`` worker, which claims runs from the whole plan) and
    every job on submitit's debug cluster (this process). A Ray task is a process of its own for a mixed plan
    (:func:`.launchers.ray_sweep`), and a Slurm job's runs agree on it (:func:`.launchers.job_chunks`)."""
    on = sum(1 for c in cfgs if c.deterministic)
    if not 0 < on < len(cfgs):
        return
    mixed = (f"deterministic varies within the sweep (true for {on} of {len(cfgs)} runs), and it is a setting of the "
             f"whole process")
    own = "run the deterministic runs as a sweep of their own"
    if placement.launcher == "local":
        raise BenchError(f"{mixed}, where --launcher local trains several runs in one process (this one, or each "
                         f"worker); {own}, or use --launcher ray or slurm (each process given runs of one setting)")
    if placement.launcher == "slurm" and (placement.slurm or {}).get("cluster") == "debug":
        raise BenchError(f"{mixed}, where slurm cluster debug runs every job in this process; {own}, or use "
                         f"cluster local or slurm")


def _local_gpus(placement: Placement, devices: set) -> list[str] | None:
    """The GPU of each local worker: ``--gpus`` checked against the GPUs torch sees; by default every visible GPU
    when there are several and the runs may use CUDA."""
    label, value = placement.label("gpus"), placement.gpus
    indexed = sorted(d for d in devices if d.startswith("cuda:"))
    if value is None:
        shared = sorted(devices & {"auto", "cuda"})
        n = visible_gpus() if shared else 0
        if n < 2:
            return None
        # a worker sees its one GPU as cuda:0, so a run pinned to cuda:N would fail at its start (N >= 1) or land on
        # whichever GPU its worker has (N = 0); runs that all name their GPU keep the one process that sees them all
        if indexed:
            raise BenchError(f"the runs mix --device {indexed[0]} with --device {shared[0]}, and with {shared[0]} "
                             f"among them each worker gets one of this machine's {n} GPUs, seen as cuda:0; drop the "
                             f"index (use {shared[0]}), or give every run a cuda:N to run them in one process")
        return [str(i) for i in range(n)]
    shown = value if value == "all" else ",".join(value)
    n = visible_gpus()
    if not n:
        raise BenchError(f"{label} {shown}: torch sees no GPU on this machine; leave {label} out (use --workers N "
                         f"for worker processes on the CPU)")
    gpus = [str(i) for i in range(n)] if value == "all" else list(value)
    missing = [g for g in gpus if int(g) >= n]
    if missing:
        raise BenchError(f"{label} {shown}: there is no GPU {missing[0]}, this machine has {n} (0 to {n - 1}); name "
                         f"GPUs below {n}, or all")
    cpu = sorted(d for d in devices if d == "cpu")
    if cpu:
        raise BenchError(f"{label} gives each worker a GPU, but the runs use --device cpu; drop {label} (use "
                         f"--workers N for CPU workers) or --device cpu")
    if indexed:
        raise BenchError(f"{label} gives each worker one GPU as cuda:0; drop --device {indexed[0]} (use auto or cuda)")
    return gpus


def _ray_gpus(placement: Placement, devices: set) -> float | None:
    """GPUs per Ray task. A local Ray (no ``--ray-address``) has only this machine's GPUs to give: 1 by default
    when torch sees a GPU, else 0. A cluster's default is left None, decided once joined from the cluster's own
    GPUs (:func:`cluster_gpus_per_run`): the machine a sweep is submitted from (a login node) may have none. Ray sets
    a task's ``CUDA_VISIBLE_DEVICES`` to the GPUs it gets, numbered from cuda:0."""
    label, value = placement.label("gpus_per_run"), placement.gpus_per_run
    cuda = _cuda(devices)
    if placement.ray_address is not None and value is None:
        _check_numbering(cuda, 1, f"{label} 1 (the default on a cluster with GPUs)")
        return None
    n = visible_gpus()
    if placement.ray_address is None and cuda and not n:  # as on the local launcher: every run would fail at start
        raise BenchError(f"the runs use --device {cuda[0]}, and torch sees no GPU on this machine for the local Ray; "
                         f"use --device cpu or auto, or --ray-address of a cluster with GPUs")
    default = value is None
    if default:
        value = 1 if n else 0
    shown = f"{label} {value:g}" + (" (the default: torch sees no GPU on this machine)" if default and not n else
                                    " (the default)" if default else "")
    if placement.ray_address is None:
        if value > 0 and not n:
            raise BenchError(f"{label} {value:g}: this machine has no GPU for the local Ray to share; use "
                             f"{label} 0 (CPU runs), or --ray-address of a cluster with GPUs")
        if value > n:
            raise BenchError(f"{label} {value:g}: no run could start, this machine has {n} GPU(s) for the local "
                             f"Ray; use {label} {n} or less")
    _check_no_gpu(cuda, value, shown, label)
    _check_numbering(cuda, max(1, math.ceil(value)), shown)  # a fraction is a share of one GPU
    return value


def cluster_gpus_per_run(cluster_gpus: float, devices: set, label: str) -> tuple[float, str]:
    """A Ray cluster's default GPUs per run, once joined: 1 where it has a GPU, else 0; with the line that says
    so. Runs on ``--device cuda`` where the cluster has none are refused, as the placement check refuses them."""
    value = 1 if cluster_gpus >= 1 else 0
    shown = f"{label} {value} (the default: the cluster has {cluster_gpus:g} GPU(s))"
    _check_no_gpu(_cuda(devices), value, shown, label)
    return value, shown


def _check_no_gpu(cuda: list[str], value: float, shown: str, label: str):
    if value == 0 and cuda:
        raise BenchError(f"{shown} gives each run no GPU, but the runs use --device {cuda[0]}; give them GPUs "
                         f"(e.g. {label} 1) or use --device auto")


def _check_numbering(cuda: list[str], seen: int, shown: str):
    past = _past(cuda, seen)
    if past:
        raise BenchError(f"{shown} gives each Ray task {seen} GPU(s), numbered from cuda:0, but the runs use "
                         f"--device {past[0]}; drop the index (use cuda or auto)")


def _check_slurm_gpus(slurm: dict, devices: set):
    """A job sees the ``gpus_per_job`` GPUs it asks for, numbered from cuda:0 (Slurm and submitit's local cluster
    set its ``CUDA_VISIBLE_DEVICES`` to them; the local cluster to none when it asks for none)."""
    cuda = _cuda(devices)
    given = slurm.get("gpus_per_job")
    # no cluster named: submitit picks Slurm where srun is on the PATH, else its local cluster
    cluster = slurm.get("cluster") or ("slurm" if shutil.which("srun") else "local")
    if not cuda or cluster == "debug" or (given is None and cluster != "local"):
        return  # a Slurm partition may give a job GPUs it did not ask for; debug runs the jobs in this process
    if not given:
        raise BenchError(f"slurm gpus_per_job is {'not set' if given is None else 0}, so each job gets no GPU, but "
                         f"the runs use --device {cuda[0]}; set slurm gpus_per_job=1 (or more) or use --device auto")
    past = _past(cuda, given)
    if past:
        raise BenchError(f"slurm gpus_per_job {given} gives each job {given} GPU(s), numbered from cuda:0, but the "
                         f"runs use --device {past[0]}; drop the index (use cuda or auto)")


def _cuda(devices) -> list[str]:
    """The runs' CUDA devices (``cuda``, ``cuda:N``), sorted."""
    return sorted(d for d in devices if d.startswith("cuda"))


def _past(cuda: list[str], n: int) -> list[str]:
    """The ``cuda:N`` of ``cuda`` that a process seeing ``n`` GPUs, numbered from cuda:0, does not have."""
    return [d for d in cuda if d[5:].isdigit() and int(d[5:]) >= n]


def _count(value, label: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{label} must be a whole number of at least 1 ({what}), got {value!r}")
    return value


def _gpu_indices(value, label: str) -> tuple[str, ...] | str:
    """``all``, ``"0,1"``, a bare index or a list of indices (sweep files) -> ``"all"`` or the indices as strings."""
    if isinstance(value, str) and value.strip() == "all":
        return "all"
    if isinstance(value, list):
        parts = [str(v) if isinstance(v, int) and not isinstance(v, bool) else "?" for v in value]
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [str(value)]
    else:
        parts = [p.strip() for p in str(value).split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise BenchError(f"{label} takes GPU indices separated by commas (0,1,...) or all, got {value!r}")
    if len(set(parts)) != len(parts):
        raise BenchError(f"{label} names a GPU twice ({value!r}); name each once (two workers on one GPU: "
                         f"--workers 2 --gpus 0)")
    return tuple(parts)


def _gpus_per_run(value, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BenchError(f"{label} must be a number of GPUs (e.g. 1, or 0.25 to share one), got {value!r}")
    if not 0 <= value <= MAX_GPUS_PER_RUN:
        raise BenchError(f"{label} must be between 0 and {MAX_GPUS_PER_RUN}, got {value:g}")
    if value > 1 and value != int(value):
        raise BenchError(f"{label} {value:g}: a run takes a fraction of one GPU or whole GPUs; use "
                         f"{math.floor(value)} or {math.ceil(value)}")
    return value


def _slurm_pairs(values):
    for pair in values or ():
        if "=" not in pair:
            raise BenchError(f"--slurm {pair!r} is not KEY=VALUE; write it like --slurm partition=gpu")
        key, value = pair.split("=", 1)
        try:
            yield key.strip(), json.loads(value)
        except ValueError:
            yield key.strip(), value


def _check_slurm(slurm: dict):
    unknown = [k for k in slurm if k not in SLURM_KEYS]
    if unknown:
        raise BenchError(f"unknown slurm setting {unknown[0]!r}; use {', '.join(sorted(SLURM_PARAMETERS))}, cluster, "
                         f"runs_per_job or folder")
    for key, (kind, low) in SLURM_TYPES.items():
        value = slurm.get(key)
        if value is None:
            continue
        whole = isinstance(value, int) and not isinstance(value, bool)
        ok = {"int": whole and value >= low, "number": (whole or isinstance(value, float)) and value > 0,
              "text": isinstance(value, str) and value.strip() != "",
              "lines": isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]
        if not ok:
            wanted = {"int": f"at least {low}, got {value!r} (a whole number)", "number": f"above 0, got {value!r}",
                      "text": f"text, got {value!r}",
                      "lines": f'a list of shell lines (["module load cuda"]), got {value!r}'}[kind]
            raise BenchError(f"slurm {key} must be {wanted}")
    if slurm.get("cluster") not in SLURM_CLUSTERS:
        raise BenchError(f"slurm cluster must be slurm, local or debug, got {slurm.get('cluster')!r}")
