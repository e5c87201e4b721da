"""Prewarming before a timed run, as airbench times its runs: a throwaway copy of the model trains a few steps on
random images of the run's batch shape, so that compilation (``--compile``), cuDNN's autotuning, the CUDA context
and the allocator's first growth happen before the run's clock starts. The copy has its own engine (optimizer,
CUDA graph) and is dropped afterwards; nothing of the run itself is touched (its model, loader generator and the
global RNG), so a prewarmed run computes bit for bit what it computes without it (tests/engine/test_engine.py).
The run still captures its own graph in its first steps, a few milliseconds.
"""
from __future__ import annotations

import time

import torch

from ..data.loader import normalize


def prewarm(engine, loader, steps: int, seed: int = 0) -> float:
    """``steps`` training steps of ``engine`` (a :class:`bench.engine.build.Engine` of the throwaway copy) on random
    batches shaped as ``loader``'s; returns the seconds they took (device-synchronised)."""
    device = engine.device
    generator = torch.Generator(device=device).manual_seed(seed)
    n_prompts, shape = len(engine.state.prompt_tokens), (loader.batch_size, *loader.images.shape[1:])
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for _ in range(steps):
            images = normalize(torch.randint(0, 256, shape, generator=generator, device=device, dtype=torch.uint8),
                               loader.dtype)
            if loader.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            prompt_ids = torch.randint(0, n_prompts, (loader.batch_size,), generator=generator, device=device)
            engine.step(images, prompt_ids // loader.n_templates, prompt_ids)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
