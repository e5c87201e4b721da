"""The engine set-up, written once: prompt table -> compact token embedding -> optimizer -> scheduler -> loss
-> :class:`~bench.engine.train_step.TrainState`.

``bench run``, ``bench throughput``, the scripts and the benchmarks all build their training state here, so a
step measured anywhere is the step ``bench run`` takes. The order matters and is kept: the compact embedding
replaces the token table before the optimizer sees the parameters, and a wrapper (DDP, compiled towers) that
changes modules in place runs before the optimizer is built.
"""
from __future__ import annotations

import torch

from ..clip.loss import ClipLoss
from . import compact_embedding
from .lookahead import Lookahead, averaged_tensors
from .optim import build_optimizer, build_scheduler
from .train_step import TrainState


def autocast_dtype_for(precision: str, device: torch.device):
    """bf16 autocast on CUDA by default; fp32 (no autocast) on CPU unless bf16 is asked for."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def set_backend_flags(device: torch.device, cudnn_benchmark: bool = True):
    """TF32 matmuls and cuDNN autotuning: set once by the caller, never at import."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = cudnn_benchmark


def compile_towers(model, **kwargs):
    """``torch.compile`` the vision tower and the text Transformer in place (``nn.Module.compile``).

    The training step calls ``model.encode_image``/``encode_text``, which ``torch.compile(model)`` leaves
    uncompiled (it compiles ``forward`` only); compiling the towers in place also keeps state-dict keys.
    """
    model.visual.compile(**kwargs)
    model.transformer.compile(**kwargs)
    return model


def text_mode_for(n_prompts: int, batch_size: int, device: torch.device) -> str:
    """CUDA: the whole table (static shapes, CUDA graphs) while it is small; CPU: the prompt tree of the
    batch's prompts (fewest tokens; measured in docs/performance.md)."""
    if device.type == "cuda":
        return "all" if n_prompts <= max(batch_size, 512) else "unique"
    return "tree"


def build_train_state(model, prompt_tokens, *, lr: float = 1e-4, weight_decay: float = 0.01, compact: bool = True,
                      capturable: bool = False, fused: bool = True, total_steps: int | None = None,
                      warmup_steps: int = 0, loss: str = "clip", rank: int = 0, world_size: int = 1,
                      label_smoothing: float = 0.0, autocast_dtype=None, text_mode: str = "unique", wrap=None,
                      max_grad_norm: float | None = None, tower_streams: bool = False,
                      schedule: str = "cosine", optimizer: str = "adamw", momentum: float = 0.85,
                      norm_lr_scale: float = 1.0, text_lr: float | None = None,
                      text_weight_decay: float | None = None, lookahead: float = 0.0,
                      steps_per_epoch: int | None = None, muon_lr: float = 0.24,
                      muon_momentum: float = 0.6) -> TrainState:
    """The training state of ``model`` (the bare CLIP) on the prompt table ``prompt_tokens`` (on its device).

    ``compact``: train only the token rows the prompts use (:mod:`bench.engine.compact_embedding`).
    ``capturable``: an optimizer a CUDA graph can replay. ``total_steps``: a warm-up + ``schedule`` (cosine or
    linear) decay over that many steps (None: no scheduler). ``wrap(model)`` returns the module the step calls (DDP,
    ...); the state keeps the bare model for checkpoints through it. ``optimizer``, ``momentum``, ``norm_lr_scale``,
    ``text_lr``, ``text_weight_decay``, ``muon_lr``, ``muon_momentum``: :func:`bench.engine.optim.build_optimizer`.
    ``lookahead``: the per-step decay of :class:`bench.engine.lookahead.Lookahead` over ``total_steps`` (0: off).
    ``steps_per_epoch``: the unit of the encoder's ``frozen_after_epochs`` spans
    (:func:`bench.engine.optim.build_scheduler`).
    """
    embedding = compact_embedding.install(model, prompt_tokens) if compact else None
    train_model = wrap(model) if wrap is not None else model
    opt = build_optimizer(model, lr, weight_decay, prompt_tokens.device, capturable=capturable, fused=fused,
                          kind=optimizer, momentum=momentum, norm_lr_scale=norm_lr_scale, text_lr=text_lr,
                          text_weight_decay=text_weight_decay, muon_lr=muon_lr, muon_momentum=muon_momentum)
    if embedding is not None:
        compact_embedding.attach(embedding, opt)
    scheduler = None if total_steps is None else build_scheduler(opt, total_steps, warmup_steps, schedule,
                                                                 steps_per_epoch)
    if lookahead and total_steps is None:
        raise ValueError("a lookahead needs total_steps: its schedule runs to the last step")
    slow = Lookahead(averaged_tensors(model, opt), lookahead, total_steps) if lookahead else None
    return TrainState(train_model, opt, scheduler, ClipLoss(loss, rank, world_size, label_smoothing),
                      prompt_tokens, autocast_dtype, text_mode, max_grad_norm=max_grad_norm,
                      tower_streams=tower_streams, lookahead=slow)
