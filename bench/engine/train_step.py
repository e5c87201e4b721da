"""One CLIP training step: both towers' features, the contrastive loss, backward, the optimizer and schedule.

Cost model, per step on a GPU: the batch is gathered and augmented on the device; captions are prompt
ids into a small table of pre-tokenized prompts, trimmed to the longest prompt, so the text tower encodes
only unique prompts (or the whole table when it is no larger than a batch: static shapes, no host sync)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..clip.loss import ClipLoss
from ..deterministic import take_rows


def encode_prompts(model, prompt_tokens: torch.Tensor, prompt_ids: torch.Tensor, mode: str = "unique") -> torch.Tensor:
    """Text features of a batch whose captions are rows ``prompt_ids`` of ``prompt_tokens``.

    ``"unique"`` encodes each distinct prompt of the batch once and gathers; ``"all"`` encodes the whole
    prompt table (no data-dependent shapes, so no host sync on CUDA); ``"tree"``/``"tree_all"`` encode the
    batch's prompts / all prompts as one prefix tree. All equal encoding every caption: the gather sums the
    gradients of repeated captions, as separate copies would, in a fixed order (bench.deterministic).
    """
    if mode == "all":
        return take_rows(model.encode_text(prompt_tokens), prompt_ids)
    if mode in ("tree", "tree_all"):  # shared prefixes computed once (bench.engine.prompt_tree); exact
        from .prompt_tree import encode_tree

        return encode_tree(model, prompt_tokens, prompt_ids, only_used=mode == "tree")
    unique, inverse = torch.unique(prompt_ids, return_inverse=True)
    return take_rows(model.encode_text(prompt_tokens[unique]), inverse)


@dataclass
class TrainState:
    """Everything that changes while training; enough to resume (with the loader's generator)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loss_fn: ClipLoss
    prompt_tokens: torch.Tensor  # (P, L) pre-tokenized prompt table, trimmed to the longest prompt
    autocast_dtype: object = None
    text_mode: str = "unique"
    max_grad_norm: float | None = None
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken in total
    history: list = field(default_factory=list)  # one dict per finished epoch
    scaler: object = None  # fp16's bench.engine.loss_scale.LossScale (None otherwise); saved in checkpoints
    tower_streams: bool = False  # the two towers on two streams when on CUDA (run_towers; no effect on CPU)
    lookahead: object = None  # a bench.engine.lookahead.Lookahead, pulled after each step; saved in checkpoints


def clip_step(state: TrainState, images, labels, prompt_ids):
    """Forward, loss, backward, optimizer and schedule step; returns the loss (not synced)."""
    loss = device_step(state, images, labels, prompt_ids)
    finish_step(state)
    return loss


def device_step(state: TrainState, images, labels, prompt_ids, autocast_cache: bool = True):
    """The device work of a step (forward, loss, backward, AdamW, temperature clamp), no host state.

    This is what :mod:`bench.engine.cuda_graph` captures; ``autocast_cache=False`` there, as CUDA graphs need.
    Under fp16 the backward pass runs on the scaled loss and an overflowed step is skipped
    (:class:`bench.engine.loss_scale.LossScale`); the clipped norm is that of the true gradients.
    """
    model = state.model
    device_type = images.device.type
    with torch.autocast(device_type, dtype=state.autocast_dtype, enabled=state.autocast_dtype is not None,
                        cache_enabled=autocast_cache):
        image_features, text_features = clip_features(model, images, state.prompt_tokens, prompt_ids, state.text_mode,
                                                      state.tower_streams)
        loss = state.loss_fn(at_least_fp32(image_features), at_least_fp32(text_features),
                             unwrap_model(model).clamped_logit_scale(), labels)
    state.optimizer.zero_grad(set_to_none=True)
    scale = state.scaler
    if scale is None:
        loss.backward()
    else:
        scale.backward(loss)
    if state.max_grad_norm:
        if scale is not None:
            scale.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), state.max_grad_norm)
    if scale is None:
        state.optimizer.step()
    else:
        scale.step(state.optimizer)
    with torch.no_grad():  # as open_clip: keep the temperature in [1, 100]
        unwrap_model(model).logit_scale.clamp_(0, math.log(100))
    return loss.detach()


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 features up to fp32 for the loss; fp64 stays fp64 (the exactness tests run in it)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def clip_features(model, images, prompt_tokens, prompt_ids, text_mode: str = "unique", tower_streams: bool = False):
    """Normalised image and text features of a batch.

    Under DDP (see :mod:`bench.engine.ddp`) the wrapper's forward computes them, so DDP's reducer sees the step.
    ``tower_streams``: on CUDA, run the two towers concurrently (see :func:`run_towers`).
    """
    if isinstance(getattr(model, "_orig_mod", model), DistributedDataParallel):
        return model(images, prompt_tokens, prompt_ids, text_mode, tower_streams)
    image_features, text_features = run_towers(
        lambda: model.encode_image(images), lambda: encode_prompts(model, prompt_tokens, prompt_ids, text_mode),
        images.device if tower_streams else None)
    return F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)


_SIDE_STREAMS: dict = {}


def run_towers(image_tower, text_tower, device=None):
    """``(image_tower(), text_tower())``; on a CUDA ``device``, the text tower runs on a side stream.

    Why: at batch 32 each kernel of either tower fills a small part of the GPU, and a step is a long
    chain of such kernels, so the GPU idles between them. The towers are independent until the loss, so
    their kernels can run side by side; autograd runs each backward op on its forward's stream, so the
    backward passes overlap too, and it joins the streams before the optimizer reads the gradients.
    Inside a CUDA graph capture the fork and join become graph edges. Same arithmetic either way.
    """
    if device is None or torch.device(device).type != "cuda":
        return image_tower(), text_tower()
    main = torch.cuda.current_stream(device)
    side = _SIDE_STREAMS.get(main.device)
    if side is None:
        side = _SIDE_STREAMS[main.device] = torch.cuda.Stream(device=main.device)
    side.wait_stream(main)  # the batch and the weights were written on the main stream
    with torch.cuda.stream(side):
        text = text_tower()
    image = image_tower()
    main.wait_stream(side)
    text.record_stream(main)  # allocated on the side stream, freed after the main stream reads it
    return image, text


def finish_step(state: TrainState):
    """The host side of a step: advance the schedule and the step count; the lookahead's pull when due (device
    work outside a captured graph, on the same stream)."""
    if state.scheduler is not None:
        state.scheduler.step()
    state.step += 1
    if state.lookahead is not None:
        state.lookahead.after_step(state.step)


def unwrap_model(model):
    """The CLIP under torch.compile (``_orig_mod``), DDP and bench's DDP adapter (``module``), in any nesting."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        inner = getattr(model, "module", None) if inner is None else inner
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner
