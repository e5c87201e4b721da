"""Collectives with gradients (the loss, sync batch norm) and without (metrics); the identity in a plain run."""
from __future__ import annotations

import torch
import torch.distributed as dist

from .world import world_size


# ---------------------------------------------------------------------------------------------------------
# Collectives with gradients (the loss and sync batch norm), and without (metrics, run id)
# ---------------------------------------------------------------------------------------------------------
class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the gradient of its own rows, summed over ranks.

    Every rank backpropagates its own loss through the gathered tensor, so the gradient of rank ``r``'s
    rows is the sum of all ranks' contributions: an all-reduce, then this rank's slice (a reduce-scatter
    would move less, but gloo has none, and features are a few kilobytes).
    """

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.new_empty((dist.get_world_size() * tensor.shape[0], *tensor.shape[1:]))
        dist.all_gather_single(out, tensor.contiguous())
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd owns ``grad``
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]



class _AllReduceWithGrad(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum of every rank's input is the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.contiguous().clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad



def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated in rank order (equal shapes on every rank), differentiable."""
    return _GatherWithGrad.apply(tensor)



def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks, differentiable."""
    return _AllReduceWithGrad.apply(tensor)



@torch.no_grad()
def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (equal shapes) concatenated in rank order, no gradient; identity when alone."""
    if world_size() == 1:
        return tensor
    out = tensor.new_empty((world_size() * tensor.shape[0], *tensor.shape[1:]))
    dist.all_gather_single(out, tensor.contiguous())
    return out



def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` for ``rank``: contiguous chunks of ``ceil(n / size)``, the last ones short."""
    chunk = -(-n // size)
    return min(n, rank * chunk), min(n, (rank + 1) * chunk)



@torch.no_grad()
def gather_rows(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Reassemble the ``n`` rows that :func:`shard_bounds` split over ranks (shards may differ in length)."""
    size = world_size()
    if size == 1:
        return rows
    chunk = -(-n // size)
    padded = rows.new_zeros((chunk, *rows.shape[1:]))
    padded[:len(rows)] = rows
    return gather(padded)[:n]
