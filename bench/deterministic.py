"""Bit-identical reruns: a row gather whose gradient is deterministic (``--deterministic``'s switches are in
:mod:`bench.engine.determinism`).

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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 2-D ``table`` and an integer ``index`` of any shape, with a deterministic backward."""
    return F.embedding(index, table)
