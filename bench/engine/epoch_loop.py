"""One epoch of training steps on device-resident batches: the running loss kept on the device and read back
only every ``log_every`` steps, a progress bar, and device-synchronised timing."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .train_step import TrainState, clip_step


@dataclass
class EpochProgress:
    """Where the current epoch stands; a checkpoint saves it so a resumed epoch ends with the same mean loss."""

    steps: int = 0  # batches done in this epoch
    loss_sum: torch.Tensor | None = None  # running sum of batch losses, kept on the device (no sync per step)
    images: int = 0  # images seen in this epoch
    seconds: float = 0.0  # training time spent in this epoch (timing only, not part of exact resume)


def train_steps(state: TrainState, batches, n_steps: int, log_every: int = 50, progress: bool | None = None,
                desc: str = "train", on_log=None, on_step=None, start: EpochProgress | None = None,
                step_fn=None, reduce_loss=None) -> dict:
    """Run the batches of one epoch; returns mean loss, images and seconds (device-synchronised).

    The running loss stays on the device and is read back every ``log_every`` steps, so the loop does
    not wait for the GPU between steps. ``on_log(step, loss)`` is called at each read-back.
    ``on_step(epoch_progress, loss)`` runs after every step (checkpoints, fault checks; it may raise);
    ``start`` continues an epoch that a checkpoint interrupted, ``batches`` then being its remaining ones.
    ``step_fn`` replaces :func:`clip_step` (same signature), e.g. by a :class:`bench.engine.cuda_graph.CudaGraphStep`.
    ``reduce_loss(sum)``: the running sum as logged (the mean over ranks under DDP; every rank calls it at each
    read-back).
    """
    step_fn = step_fn or clip_step
    model = state.model
    model.train()
    done = start.steps if start is not None else 0
    bar = tqdm(total=n_steps, initial=done, desc=desc, leave=False, disable=not bars_shown(progress),
               dynamic_ncols=True) if tqdm is not None else None
    device = state.prompt_tokens.device
    epoch = EpochProgress(done, torch.zeros((), device=device), 0, 0.0)
    if start is not None:
        epoch.loss_sum += start.loss_sum.to(device)
        epoch.images, epoch.seconds = start.images, start.seconds
    base_seconds, last_logged = epoch.seconds, done
    sync_device(device)
    t0 = time.perf_counter()
    for batch in batches:
        loss = step_fn(state, batch.images, batch.labels, batch.prompt_ids)
        epoch.loss_sum += loss
        epoch.images += batch.images.shape[0]
        epoch.steps += 1
        epoch.seconds = base_seconds + time.perf_counter() - t0
        if on_step is not None:
            on_step(epoch, loss)
        steps = epoch.steps
        if steps % log_every == 0 or steps == n_steps:
            total = epoch.loss_sum if reduce_loss is None else reduce_loss(epoch.loss_sum)
            mean = float(total) / steps  # the one host sync of the cadence
            if on_log is not None:
                on_log(state.step, mean)
            if bar is not None:
                bar.update(steps - last_logged)
                bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{epoch.images / max(epoch.seconds, 1e-9):.0f}")
            last_logged = steps
    sync_device(device)
    seconds = base_seconds + time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return {"train_loss": float(epoch.loss_sum) / max(epoch.steps, 1), "images": epoch.images, "seconds": seconds,
            "steps": epoch.steps}


def bars_shown(progress: bool | None) -> bool:
    """Whether the epoch's progress bar is drawn: when asked for, or by default when stderr is a terminal."""
    return bool(progress) if progress is not None else sys.stderr.isatty()


def sync_device(device):
    if torch.device(device).type == "cuda":  # this run's stream only: concurrent runs of a sweep go on meanwhile
        torch.cuda.current_stream(device).synchronize()
