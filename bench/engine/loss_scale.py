"""fp16's dynamic loss scaling: torch's GradScaler, and a count of the steps it skipped kept on the device.

Why fp16 needs it: float16 has 5 exponent bits, so the small gradients of a contrastive loss underflow to zero in
the backward pass. The loss is multiplied by a large scale before ``backward``, and the gradients divided by it
before the optimizer. A step whose gradients overflowed (an inf or NaN) is skipped and the scale halved; after
``growth_interval`` clean steps it doubles (torch's defaults: from 2**16, every 2000 steps).

Nothing here reads a value back to the host: with fused AdamW (which unscales and skips inside its kernel, reading
the scaler's ``grad_scale``/``found_inf``) the whole step stays capturable by a CUDA graph. The skipped-step count
is read once, for the run's row.
"""
from __future__ import annotations

import torch


class LossScale:
    """A ``torch.amp.GradScaler`` for ``device`` plus ``skipped``, the number of steps it skipped (a device tensor)."""

    def __init__(self, device: torch.device, init_scale: float = 2.0 ** 16):
        self.scaler = torch.amp.GradScaler(torch.device(device).type, init_scale=init_scale)
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)

    def backward(self, loss: torch.Tensor):
        self.scaler.scale(loss).backward()

    def unscale_(self, optimizer):
        """The true gradients in ``.grad`` (before clipping their norm); the step then skips unscaling."""
        self.scaler.unscale_(optimizer)

    def step(self, optimizer):
        """The optimizer's step unless a gradient overflowed, then the scale's update; a skip shows as a smaller
        scale (the scale only shrinks on an overflow), counted without a host sync."""
        before = self.scaler._scale.clone()  # created by scale(); torch's own async accessor reads this tensor
        self.scaler.step(optimizer)
        self.scaler.update()
        self.skipped += self.scaler._scale < before

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict(), "skipped": self.skipped.detach().clone()}

    def load_state_dict(self, state: dict):
        self.scaler.load_state_dict(state["scaler"])
        with torch.no_grad():
            self.skipped.copy_(state["skipped"])
