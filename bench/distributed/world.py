"""A run's world: the device it trains on and the process group torchrun asks for.

``bench run`` becomes data-parallel when started by ``torchrun`` (or anything that sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``): NCCL when the run's device is CUDA,
each rank on ``cuda:LOCAL_RANK``; gloo on CPU. Without those variables nothing here starts a process
group and every helper is the single-process identity, so the plain path stays plain.

This module imports only torch and the base modules, so :mod:`bench.clip.loss` can use the collectives
of :mod:`bench.distributed.collectives` without pulling in the engine.
"""
from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import BenchError

# what torchrun (and torch.distributed.launch, and most Slurm recipes) export for every worker
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """Who this process is in the run; ``backend`` None means a plain single-process run."""

    device: torch.device  # this rank's device (cuda:LOCAL_RANK under torchrun on GPUs)
    rank: int = 0  # global rank, 0 .. size - 1
    size: int = 1  # number of ranks (processes) in the run
    local_rank: int = 0  # rank on this node: the GPU index
    backend: str | None = None  # "nccl", "gloo", or None when not distributed

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0 writes result tables, checkpoints and plots, and prints; the others only train."""
        return self.rank == 0

    def describe(self) -> str:
        nodes = self.size // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", self.size)))
        return f"{self.size} ranks on {nodes} node(s), backend {self.backend}, rank 0 on {self.device}"


def launched_by_torchrun() -> bool:
    return all(var in os.environ for var in _LAUNCH_VARS)


def init_distributed(device_name: str = "auto", cuda_graph: bool = False) -> World:
    """Join the process group torchrun set up (once per process), or describe a plain run.

    Under torchrun, ``--device auto``/``cuda`` put each rank on ``cuda:LOCAL_RANK`` with NCCL and
    ``--device cpu`` runs gloo. The group is destroyed at interpreter exit. ``cuda_graph``: the training
    step, its all-reduces included, will be captured as a CUDA graph. A world of one rank is a plain run
    unless ``BENCH_FORCE_DDP=1``.
    """
    device = resolve_device(device_name)
    if not launched_by_torchrun():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            raise BenchError("RANK and WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not: start distributed "
                             "runs with torchrun (see docs/distributed.md), or unset RANK and WORLD_SIZE")
        return World(device)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if device.index is not None and int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > 1:
            raise BenchError(f"--device {device_name} under torchrun with several ranks per node: each rank takes "
                             f"cuda:LOCAL_RANK; pass --device cuda (or auto), and pick GPUs with CUDA_VISIBLE_DEVICES")
        if device.index is None:
            if local_rank >= torch.cuda.device_count():
                raise BenchError(f"rank {rank} has LOCAL_RANK {local_rank} but this node sees "
                                 f"{torch.cuda.device_count()} GPU(s); lower --nproc_per_node")
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if size == 1 and os.environ.get("BENCH_FORCE_DDP") != "1":
        # one rank is a plain run, as open_clip, timm, Accelerate and Lightning treat it: no process group, no DDP
        # wrapper, so `torchrun --nproc_per_node 1` costs nothing. BENCH_FORCE_DDP=1 keeps both, to measure what
        # DDP's reducer costs a step (docs/distributed.md)
        return World(device, 0, 1, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if backend == "nccl" and cuda_graph:
            # torch's CUDA-graph notes: NCCL's async error handling polls events, which a captured
            # all-reduce does not have; it must be off before the group exists
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")
        dist.init_process_group(backend)
        atexit.register(shutdown)
    return World(device, rank, size, local_rank, dist.get_backend())


def shutdown():
    """Leave the process group (torch warns when a process exits still holding one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0, or a plain process. Under torchrun before (or without) the process group, the launch's ``RANK`` says:
    a resumed run that only appends its saved row never starts the group, and its other ranks must not print."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return not launched_by_torchrun() or int(os.environ["RANK"]) == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def log_main(world: World, message: str):
    """One line on stderr from rank 0 only (N ranks would print it N times), written whole: ``print`` writes the
    text and its newline apart, so the lines of ``--concurrent`` runs' threads ran into each other."""
    if world.is_main:
        sys.stderr.write(f"bench: {message}\n")
        sys.stderr.flush()


def broadcast_object(obj, world: World):
    """Rank 0's ``obj`` on every rank (picklable; for small things such as the run id)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def mean_over_ranks(value: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of ``value`` over the ranks (a copy; ``value`` itself when there is one process). Every rank calls
    it at the same point."""
    if not world.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world.size


@torch.no_grad()
def reduce_epoch_stats(stats: dict, world: World) -> dict:
    """Per-rank epoch stats from the trainer -> the run's: mean loss, images summed, slowest rank's seconds."""
    if not world.distributed:
        return stats
    sums = torch.tensor([stats["train_loss"], stats["images"]], dtype=torch.float64, device=world.device)
    seconds = torch.tensor([stats["seconds"]], dtype=torch.float64, device=world.device)
    dist.all_reduce(sums)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    return {**stats, "train_loss": float(sums[0]) / world.size, "images": int(sums[1]), "seconds": float(seconds[0])}


def resolve_device(name: str) -> torch.device:
    """``name`` as :func:`bench.app.validation.check_device` accepts it (the caller checks it first), resolved on this
    machine: ``auto`` picks CUDA when torch sees a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {name} asked for CUDA, but torch sees no GPU; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BenchError(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s), numbered from 0")
    return device
