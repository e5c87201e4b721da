"""Data-parallel CLIP training: the module DDP wraps, batch norm synced over ranks, sharded zero-shot evaluation.

With ``sync_bn`` (the default), N ranks with batch B train exactly as one process with batch N x B:
the loss gathers every rank's features (:class:`bench.clip.loss.ClipLoss`), the loader hands rank ``r`` the
``r``-th slice of each global batch (:class:`bench.data.loader.DeviceLoader`), and batch norm normalises with
statistics of the global batch. Without it each rank's batch norm sees only its own B images.
"""
from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..distributed.collectives import all_reduce_with_grad
from ..distributed.world import World
from .train_step import at_least_fp32, clip_features


class ClipFeatures(nn.Module):
    """What DDP wraps: one forward that returns both towers' normalised features.

    DDP prepares its gradient reducer in ``forward`` only, while a CLIP step calls ``encode_image`` and
    the text tower separately; this runs both behind one forward. The CLIP stays at ``.module``, so
    ``train_step.unwrap_model`` reaches it through DDP and this adapter, and checkpoints keep CLIP's keys.
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.module = clip

    def forward(self, images, prompt_tokens, prompt_ids, text_mode: str = "unique", tower_streams: bool = False):
        return clip_features(self.module, images, prompt_tokens, prompt_ids, text_mode, tower_streams)


def wrap_model(model: nn.Module, world: World, sync_bn: bool = True, cuda_graph: bool = False,
               build_stream=None, **ddp_options) -> nn.Module:
    """The module to train: ``model`` itself in a plain run, else DDP over :class:`ClipFeatures`.

    ``model`` is changed in place (batch norm layers swapped when ``sync_bn``), so the caller keeps
    evaluating and checkpointing it. ``static_graph`` lets DDP cope with encoders whose parameters get
    no gradient (a classifier head) without a per-step search for them: the set of used parameters
    never changes between steps. ``cuda_graph``: the step will be captured whole, DDP's all-reduces
    included, so DDP is built on a side stream, as torch's CUDA-graph notes ask: a stream of its own
    unless ``build_stream`` names one. Its gradient hooks (one copy into the bucket per parameter) then
    run on that stream, beside the backward pass, instead of in line with it: on an H200 that measured
    +9.1% against plain training, building on the capture stream +13.0% (``scripts/ddp_overhead.py
    --variants``). ``ddp_options`` go to DDP (``bucket_cap_mb``, ...).
    """
    if not world.distributed:
        return model
    left = convert_sync_batchnorm(model, world.device) if sync_bn and world.size > 1 else []
    if left:
        import warnings

        warnings.warn(f"--sync-bn: {len(left)} batch-norm layers of type {', '.join(sorted(set(left)))} keep "
                      f"per-rank statistics (bench syncs plain BatchNorm only)", stacklevel=2)
    # rank 0's buffers (batch-norm running stats) go to the others every forward, unless synced batch norm
    # already keeps them equal, or there are no others
    buffers = {_SYNC_BUFFERS: world.size > 1 and not (sync_bn and not left)}
    on_gpu = world.device.type == "cuda"

    def build():
        # gradients are views into DDP's all-reduce buckets: no copy from the buckets back to .grad after the
        # all-reduce, about 180 small kernels per step at the end of backward for the reference model
        return DistributedDataParallel(ClipFeatures(model), device_ids=[world.device.index] if on_gpu else None,
                                       static_graph=True, gradient_as_bucket_view=True, **buffers, **ddp_options)

    if not (cuda_graph and on_gpu):
        return build()
    stream = build_stream or torch.cuda.Stream(device=world.device)
    stream.wait_stream(torch.cuda.current_stream(world.device))
    with torch.cuda.stream(stream):
        ddp = build()
    torch.cuda.current_stream(world.device).wait_stream(stream)
    return ddp


# torch 2.14 renamed ``broadcast_buffers``; ``forward_sync_buffers=False`` still syncs them once at construction
_DDP_ARGS = inspect.signature(DistributedDataParallel).parameters
_SYNC_BUFFERS = "forward_sync_buffers" if "forward_sync_buffers" in _DDP_ARGS else "broadcast_buffers"


# ---------------------------------------------------------------------------------------------------------
# Batch norm over the global batch
# ---------------------------------------------------------------------------------------------------------
class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over every rank's batch for CPU modules, in plain autograd (gloo).

    torch's SyncBatchNorm refuses CPU input and DDP refuses it in CPU modules. This all-reduces
    per-channel sums, then sums of squared deviations (two passes, as exact as one process), and the
    gradients flow back to every rank through the same all-reduces. Eval mode is plain batch norm.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = at_least_fp32(x)  # statistics in fp32 even under bf16 autocast, as torch's batch norm
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64)
        dist.all_reduce(count)
        n = float(count)
        mean = all_reduce_with_grad(xf.sum(dims)) / n
        centred = xf - mean.view(shape)
        var = all_reduce_with_grad((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * (n / max(n - 1, 1)), momentum)  # unbiased, as torch
        return y.to(x.dtype)


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> list[str]:
    """Swap every plain BatchNorm under ``module``, in place: torch's SyncBatchNorm on GPUs, else ours.

    Returns the type names of batch-norm subclasses left alone (timm's ``BatchNormAct2d`` fuses an
    activation that a plain swap would drop).
    """
    cls = CpuSyncBatchNorm if torch.device(device).type == "cpu" else nn.SyncBatchNorm
    left = []
    for name, child in module.named_children():
        if type(child) in _PLAIN_BN:
            setattr(module, name, _copy_batchnorm(cls, child))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            if not isinstance(child, (nn.SyncBatchNorm, CpuSyncBatchNorm)):
                left.append(type(child).__name__)
        else:
            left += convert_sync_batchnorm(child, device)
    return left


def _copy_batchnorm(cls, bn):
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias  # the same Parameters: the optimizer and DDP see one set
    new.running_mean, new.running_var, new.num_batches_tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
    return new.train(bn.training)


