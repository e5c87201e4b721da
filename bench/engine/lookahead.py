"""airbench's lookahead: the weights are pulled towards a slow average of themselves, ever harder late in training,
and the run ends on the average.

Every ``every`` steps (airbench: 5), with ``t`` the step and ``T`` the run's last step::

    decay = base ** every * (t / T) ** 3
    slow  <- decay * slow + (1 - decay) * weights
    weights <- slow

and at step ``T`` the weights become ``slow``. Early on the decay is near 0 (the weights go on as they are);
near the end it approaches ``base ** every``, an exponential moving average of the last few hundred steps, that
the training itself continues from (lookahead, Zhang et al. 2019) instead of a shadow copy, so the final weights,
``last.pt`` and ``bench eval`` need nothing new. ``base`` is the per-step EMA decay (airbench: 0.95).

What is averaged: the optimizer's parameters and the running statistics of normalisation layers (airbench
averages its whole float state dict). The token rows :mod:`bench.engine.compact_embedding` leaves untrained only
decay; no training prompt reads them.
"""
from __future__ import annotations

import torch

from .optim import NORM_LAYERS


class Lookahead:
    """The slow copy of ``tensors`` (updated in place, on their device) and its schedule over ``total_steps``."""

    def __init__(self, tensors: list[torch.Tensor], base: float, total_steps: int, every: int = 5):
        self.tensors, self.base, self.total_steps, self.every = list(tensors), base, total_steps, every
        self.slow = [t.detach().clone() for t in self.tensors]

    def decay(self, step: int) -> float:
        return self.base ** self.every * (step / self.total_steps) ** 3

    @torch.no_grad()
    def after_step(self, step: int):
        """Called after optimizer step number ``step`` (1-based)."""
        if step % self.every == 0:
            self._pull(self.decay(step))
        if step == self.total_steps:
            self._pull(1.0)

    def _pull(self, decay: float):
        torch._foreach_lerp_(self.slow, self.tensors, 1 - decay)
        torch._foreach_copy_(self.tensors, self.slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow}

    def load_state_dict(self, state: dict):
        with torch.no_grad():
            torch._foreach_copy_(self.slow, [s.to(t.device) for s, t in zip(state["slow"], self.slow)])


def averaged_tensors(model, optimizer) -> list[torch.Tensor]:
    """What the lookahead averages: every parameter the optimizer updates, then normalisation running stats."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats = [b for m in model.modules() if isinstance(m, NORM_LAYERS)
             for name, b in m.named_buffers(recurse=False) if b is not None and b.is_floating_point()
             and name in ("running_mean", "running_var")]
    return params + stats
