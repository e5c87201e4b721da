"""The reference recipe's optimizer and schedule: fused AdamW, linear warm-up then per-step cosine decay."""
from __future__ import annotations

import math

import torch


def build_optimizer(model, lr: float, weight_decay: float, device: torch.device,
                    capturable: bool = False, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW over all parameters, as the reference recipe, with the fused kernel (one pass over each tensor).

    Fused AdamW exists on CPU since torch 2.4 and is several times faster there than foreach (measured
    in docs/performance.md); older torch falls back to foreach. ``capturable`` (CUDA graphs) keeps the
    step count and the learning rate as device tensors, so a replayed graph reads the current lr.
    ``fused=False`` asks for foreach (for measuring the difference).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if capturable:
        return torch.optim.AdamW(params, lr=torch.tensor(lr, device=device), weight_decay=weight_decay, fused=True,
                                 capturable=True)
    try:
        if fused:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # pragma: no cover - torch < 2.4 has no fused CPU kernel
        pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def build_scheduler(optimizer, total_steps: int, warmup_steps: int = 0, kind: str = "cosine"):
    """Linear warm-up, then ``kind`` decay to zero over the remaining steps (per step, not per epoch):
    ``cosine`` (the reference recipe) or ``linear`` (with the warm-up, airbench's triangular schedule)."""

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - progress if kind == "linear" else 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
