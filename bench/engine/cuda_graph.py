"""The whole training step (forward, loss, backward, AdamW) as one CUDA graph, replayed every step.

Why: at the reference size (batch 32, 32 px) one step is about a thousand small kernels; eager PyTorch
spends more time launching them than the GPU spends running them. The `reference` preset is ~78k steps,
so launch overhead alone would take minutes. A captured graph replays all kernels with one launch.

What makes the step capturable: static shapes (the text tower encodes the whole prompt table, mode
``"all"``, no ``torch.unique``); AdamW with ``capturable=True`` and the learning rate as a device tensor
that the scheduler updates in place; autocast without its weight-cast cache; no host reads. The first
``eager_steps`` steps run eagerly on a side stream (cuDNN autotuning, optimizer state allocation), then the
step is captured and replayed. Every batch is a real step: the eager steps before the capture train as usual.

Under DDP (torchrun, NCCL) the capture holds DDP's gradient all-reduces too, following torch's recipe for
whole-network capture with DDP: NCCL async error handling off before the process group starts, DDP built
on a side stream, and :data:`DDP_EAGER_STEPS` eager steps first (:mod:`bench.distributed`, :mod:`bench.engine.ddp`).

On a CPU (tests), :class:`CudaGraphStep` with ``capture=False`` runs the identical step function
eagerly, so its numerics can be compared against :func:`bench.engine.train_step.clip_step`.
"""
from __future__ import annotations

import threading
import warnings

import torch

from ..errors import BenchError
from .train_step import TrainState, device_step, finish_step

# torch's CUDA-graph notes: DDP needs at least 11 eager iterations before its backward is captured
DDP_EAGER_STEPS = 11

_CAPTURE_STREAMS: dict = {}


def capture_stream(device) -> "torch.cuda.Stream":
    """The one side stream per device on which the eager steps before the capture run and the step is captured.

    One stream for both: autograd makes a parameter's gradient accumulator on the stream of the step that
    first uses it, and a later step on another stream pays a cross-stream wait per parameter. (DDP makes
    its accumulators when it is built, on a stream of its own: see :func:`bench.engine.ddp.wrap_model`.)
    """
    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    # one per thread too: concurrent runs of a sweep (one thread each) must not enqueue into each other's capture
    key = (index, threading.get_ident())
    stream = _CAPTURE_STREAMS.get(key)
    if stream is None:
        stream = _CAPTURE_STREAMS[key] = torch.cuda.Stream(device=index)
    return stream


class CudaGraphStep:
    """A drop-in ``step_fn`` for :func:`bench.engine.epoch_loop.train_steps` that captures the step once.

    Args:
        eager_steps: steps run eagerly before the capture (at least 1: AdamW must have created its state, cuDNN
            tuned its kernels, a compiled tower compiled, fp16's loss scale exists).
        capture: capture and replay a CUDA graph; default: when the batch is on a CUDA device.
    """

    def __init__(self, eager_steps: int = 3, capture: bool | None = None):
        self.eager_steps_before_capture = max(1, eager_steps)
        self.capture = capture
        self.graph = None
        self.eager_steps = 0
        self.replays = 0
        self._static = None  # (images, labels, prompt_ids, loss) living in the graph's memory
        self._lr_tensors = None  # the optimizer's lr tensors as first seen (the graph reads these)
        self.error = None  # why capture failed, if it did (the step then stays eager)

    def __call__(self, state: TrainState, images, labels, prompt_ids):
        capture = images.is_cuda if self.capture is None else self.capture
        if self.eager_steps == 0:
            check_capturable(state)
        if capture and self.eager_steps >= self.eager_steps_before_capture and self.graph is None and self.error is None:
            self._try_capture(state, images, labels, prompt_ids)
        if self.graph is None:
            loss = self._eager(state, images, labels, prompt_ids, side_stream=capture and self.error is None)
        else:
            static_images, static_labels, static_ids, static_loss = self._static
            static_images.copy_(images, non_blocking=True)
            static_labels.copy_(labels, non_blocking=True)
            static_ids.copy_(prompt_ids, non_blocking=True)
            self.graph.replay()
            self.replays += 1
            loss = static_loss.clone()  # the next replay overwrites static_loss
        finish_step(state)
        self._keep_lr_tensors(state)
        return loss

    def _keep_lr_tensors(self, state):
        """The graph reads the lr tensors it captured: if a scheduler replaced one, copy the value back."""
        groups = state.optimizer.param_groups
        if self._lr_tensors is None:
            self._lr_tensors = [g["lr"] for g in groups]
        for group, captured in zip(groups, self._lr_tensors):
            lr = group["lr"]
            if lr is not captured:
                with torch.no_grad():
                    captured.copy_(lr) if isinstance(lr, torch.Tensor) else captured.fill_(lr)
                group["lr"] = captured

    def _eager(self, state, images, labels, prompt_ids, side_stream: bool):
        self.eager_steps += 1
        if not side_stream:
            return device_step(state, images, labels, prompt_ids, autocast_cache=False)
        # eager steps on a side stream, as torch.cuda.graphs' documentation asks before capturing: the one the
        # capture will use
        stream = capture_stream(images.device)
        stream.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(stream):
            loss = device_step(state, images, labels, prompt_ids, autocast_cache=False)
        torch.cuda.current_stream(images.device).wait_stream(stream)
        return loss

    def _try_capture(self, state, images, labels, prompt_ids):
        """Capture; if this torch or GPU refuses, say so once and train on eagerly (same step, slower)."""
        try:
            self._capture(state, images, labels, prompt_ids)
        except Exception as exc:  # noqa: BLE001 - a capture failure must not end a run
            self.graph, self._static = None, None
            self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            torch.cuda.synchronize()
            warnings.warn(f"CUDA graph capture failed, training on without it: {self.error}", stacklevel=3)

    def _capture(self, state, images, labels, prompt_ids):
        static_images, static_labels, static_ids = images.clone(), labels.clone(), prompt_ids.clone()
        state.optimizer.zero_grad(set_to_none=True)  # backward allocates the grads inside the graph's pool
        graph = torch.cuda.CUDAGraph()
        # thread_local: another run's thread may launch kernels while this one captures
        with torch.cuda.graph(graph, stream=capture_stream(images.device), capture_error_mode="thread_local"):
            static_loss = device_step(state, static_images, static_labels, static_ids, autocast_cache=False)
        self.graph = graph
        self._static = (static_images, static_labels, static_ids, static_loss)


def check_capturable(state: TrainState):
    """Refuse, with the fix, a state whose step cannot be captured."""
    if state.text_mode != "all":
        raise BenchError("CUDA graphs need static shapes: the text tower must encode the whole prompt table "
                         "(text mode 'all'); use fewer prompts or --no-cuda-graph")
    for group in state.optimizer.param_groups:
        if not group.get("capturable") or not isinstance(group["lr"], torch.Tensor):
            raise BenchError("CUDA graphs need AdamW built with capturable=True and a tensor learning rate "
                             "(build_optimizer(..., capturable=True)); use --no-cuda-graph otherwise")
    if state.scaler is not None and any(g.get("sgd") or g.get("muon") for g in state.optimizer.param_groups):
        raise BenchError("fp16 steps of --optimizer sgd or muon look for an overflow on the host, which a CUDA graph "
                         "cannot do; use --precision bf16 or fp32, --optimizer adamw, or --no-cuda-graph")


