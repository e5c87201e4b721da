"""Faults a run survives: a stop request (Ctrl-C, SIGTERM) and a loss that is no longer finite.

Both are acted on between optimizer steps, never inside one, so the checkpoint written on the way out
holds a consistent state: weights, optimizer and RNG all after the same step. Under torchrun every rank
must take the same decision at the same step (or the others wait forever in the next all-reduce), so
there both are agreed on with one small all-reduce, on the logging cadence and before checkpoints.
"""
from __future__ import annotations

import contextlib
import signal
import threading

import torch
import torch.distributed as dist

from ..errors import BenchError

_NONE = 2 ** 62  # "no bad step yet": larger than any step, so a MIN over ranks finds the first bad one


class NonFiniteLoss(BenchError):
    """The loss became NaN or infinite; the run stopped before saving anything from that step on."""


class StopRequest:
    """Set by SIGINT/SIGTERM; the training loop asks :meth:`agreed` between steps.

    The first signal only asks; a second SIGINT gets Python's default behaviour (KeyboardInterrupt at
    once), for a user who does not want to wait for the step and the checkpoint.
    """

    def __init__(self, world=None):
        self.requested: str | None = None  # the signal's name once one arrived
        self.world = world

    def _handle(self, signum, frame):
        self.requested = self.requested or signal.Signals(signum).name  # the first one says why it stopped
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def agreed(self, collective_point: bool) -> bool:
        """Whether to stop now: at once in a single process; under torchrun only at a ``collective_point``
        (every rank reaches it at the same step), when any rank was asked."""
        if self.world is None or not self.world.distributed:
            return self.requested is not None
        if not collective_point:
            return False
        flag = torch.tensor([0 if self.requested is None else 1], device=self.world.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag) and self.requested is None:
            self.requested = "a signal to another rank"
        return bool(int(flag))


@contextlib.contextmanager
def stop_on_signal(world=None):
    """Route SIGINT and SIGTERM to a :class:`StopRequest` for the block (main thread only; elsewhere inert)."""
    stop = StopRequest(world)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop._handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class FiniteWatch:
    """Remembers, on the device, the first step whose loss was not finite; reading it is the only host sync.

    ``update`` runs every step without waiting for the GPU; ``check`` runs on the logging cadence and
    before every checkpoint, so no checkpoint ever holds weights updated by a NaN or infinite loss.
    """

    def __init__(self, device, world=None):
        self.first_bad = torch.full((), _NONE, dtype=torch.int64, device=device)
        self.value = torch.zeros((), device=device)
        self.world = world

    def update(self, step: int, loss: torch.Tensor):
        bad = ~torch.isfinite(loss) & (self.first_bad == _NONE)
        self.first_bad = torch.where(bad, step, self.first_bad)  # a Python scalar: no host-to-device copy
        self.value = torch.where(bad, loss.float(), self.value)

    def check(self, describe_step, last_good):
        """Raise :class:`NonFiniteLoss` if a step's loss was not finite; ``last_good()`` (called only then)
        says where the last good checkpoint is."""
        first = self.first_bad.clone()
        if self.world is not None and self.world.distributed:  # every rank stops, at the earliest bad step
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        step = int(first)
        if step != _NONE:
            value = float(self.value) if int(self.first_bad) == step else "not finite on another rank"
            raise NonFiniteLoss(f"the training loss became {value} at step {step} ({describe_step(step)}) and the "
                                f"run stopped; {last_good()}; lower --lr or pass --max-grad-norm, then start again "
                                f"or resume from that checkpoint")
