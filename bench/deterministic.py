"""Bit-identical reruns: a row gather whose gradient is deterministic, and the switches of ``--deterministic``.

Why the gather: ``table[index]`` differentiates into ``index_put_(..., accumulate=True)``. On a CPU with
more than one thread, torch runs that accumulation as parallel atomic float adds once it has 32,768 or
more elements (``GRAIN_SIZE``), so repeated rows are summed in whatever order the threads reach them,
and two runs of the same command part in the last bit within a few steps. Measured on this project's
training step (``scripts/cpu_determinism.py``, ``results/cpu_determinism/``): the backward of these
gathers (the prompt tree's positional embeddings and end-of-text rows, the caption rows at batch 128)
were the only ops of the step whose outputs differed between identical executions. ``F.embedding`` computes the same forward
(``index_select``), and its CPU backward splits the table's rows over the threads, each row summed in
index order: the same bits at any thread count and from run to run, and faster. On CUDA, torch does not
list its backward among the nondeterministic ops of ``use_deterministic_algorithms``, and up to 3,072
indices (every gather of the step, at the presets' batch sizes) it is one kernel with no host sync, as
CUDA graphs need; neither its speed nor its bits have been measured on a GPU yet.

``--deterministic`` is for CUDA, where cuBLAS, cuDNN and atomics otherwise vary from run to run; on a
CPU, runs at one thread count are bit-identical without it.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

# cuBLAS picks a reduction order per workspace; a fixed workspace per stream makes it repeatable (torch's docs)
CUBLAS_DETERMINISTIC = ":4096:8"


def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 2-D ``table`` and an integer ``index`` of any shape, with a deterministic backward."""
    return F.embedding(index, table)


@contextlib.contextmanager
def deterministic_mode(enabled: bool):
    """Within the block, torch uses only deterministic algorithms (an op without one raises, naming itself),
    cuDNN deterministic kernels without autotuning, and cuBLAS a fixed workspace; the previous settings
    come back afterwards (sweeps and tests run several configurations in one process)."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    # read by cuBLAS when torch creates its handle's workspace, and by torch's own check before each cuBLAS call
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        algorithms, warn_only, cudnn_deterministic, cudnn_benchmark, workspace = previous
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.backends.cudnn.benchmark = cudnn_benchmark
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace
