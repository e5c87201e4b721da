"""``--deterministic``: torch's switches for bit-identical reruns on CUDA, held for the length of a run.

On CUDA, cuBLAS, cuDNN and atomics otherwise vary from run to run; on a CPU, runs at one thread count are
bit-identical without it (the one CPU source of variation, a gather's backward, is fixed for every run by
:func:`bench.deterministic.take_rows`).
"""
from __future__ import annotations

import contextlib
import os

import torch

# cuBLAS picks a reduction order per workspace; a fixed workspace per stream makes it repeatable (torch's docs)
CUBLAS_DETERMINISTIC = ":4096:8"


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
