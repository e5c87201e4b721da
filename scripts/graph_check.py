#!/usr/bin/env python
"""The CUDA-graph training step against the eager step: same losses and weights, and the time each takes.

    PYTHONPATH=. python scripts/graph_check.py [--device cuda] [--steps 8] [--tiny] [--json OUT.json]

Two copies of one model train on the same batches, each through :func:`bench.engine.build.build_engine`: one
eager (``cuda_graph=False``: one stream, whole prompt table, fused AdamW), one as ``bench run`` trains on CUDA
(a :class:`bench.engine.cuda_graph.CudaGraphStep` captured after 3 eager steps, capturable AdamW, lr as a device
tensor) with the towers on two streams. fp32 with TF32 off, so differences are rounding and
non-deterministic GPU reductions only. Then eager, the graph on one stream and the graph on two streams
are timed (median ms/step) at the same size. ``--cold-start`` adds, from fresh processes, how long the
first steps take (autotuning, capture) with ``cudnn.benchmark`` off and on, and the step time each gives.
On a CPU both engines run eagerly (a graph needs CUDA): the check then covers the script, not capture.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_engine(tiny: bool, device, graph: bool, precision: str = "fp32", tower_streams: bool = False,
                tf32: bool = False, cudnn_benchmark: bool = False):
    """A fresh model (seed 0) and its engine: bench run's reference recipe with the whole prompt table every step
    (the graph's static shapes, also for the eager copy), a 1000-step schedule with 10 warm-up steps."""
    from bench.clip.model import create_model
    from bench.clip.prompts import prompt_table
    from bench.clip.templates import SEED_TEMPLATES
    from bench.data.datasets import CIFAR10_CLASSES
    from bench.engine.build import build_engine
    from bench.engine.recipe import TrainRecipe

    torch.manual_seed(0)
    kwargs = dict(embed_dim=32, transformer_width=32, transformer_heads=2, transformer_layers=1,
                  encoder_opts={"width": 8}) if tiny else {}
    model = create_model(**kwargs).to(device).train()
    recipe = TrainRecipe(cuda_graph=graph, tower_streams=tower_streams, precision=precision, tf32=tf32,
                         cudnn_benchmark=cudnn_benchmark, text_mode="all", epochs=1, steps_per_epoch=1000,
                         lr_warmup_steps=10)
    return build_engine(model, prompt_table(SEED_TEMPLATES, CIFAR10_CLASSES, device=device), recipe)


def batches(n, device, batch=32, seed=1, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(0, 50, (batch,), generator=g)
        images = torch.randn(batch, 3, 32, 32, generator=g).to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, (ids // 5).to(device), ids.to(device)


def time_steps(engine, device, n):
    data = list(batches(n + 5, device, seed=2, channels_last=engine.channels_last))
    for b in data[:5]:
        engine.step(*b)
    times = []
    for b in data[5:]:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            engine.step(*b)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            engine.step(*b)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def cold_start(device, benchmark: bool, tiny: bool, steps: int = 50) -> dict:
    """In a fresh process: the wall time from the first step until the graph is captured and replayed once
    (cuDNN autotuning, kernel loading, capture), then the steady ms/step, at the reference preset's
    settings (bf16, channels_last, graph + tower streams), with ``cudnn.benchmark`` on or off."""
    from bench.engine.epoch_loop import sync_device

    engine = make_engine(tiny, device, True, "auto", tower_streams=True, tf32=True, cudnn_benchmark=benchmark)
    eager = engine.graph.eager_steps_before_capture if engine.graph is not None else 3
    data = list(batches(eager + 2, device, seed=3, channels_last=engine.channels_last))
    sync_device(device)
    t = time.perf_counter()
    for b in data:
        engine.step(*b)
    sync_device(device)
    first = time.perf_counter() - t
    return {"cudnn_benchmark": benchmark, "first_steps": len(data), "first_steps_s": round(first, 3),
            "ms_per_step": time_steps(engine, device, steps if not tiny else 3)}


def cold_starts(args) -> list:
    """:func:`cold_start` with cuDNN autotuning off and on, each in its own process (its caches start empty)."""
    import subprocess

    rows = []
    for flag in ("0", "1"):
        cmd = [sys.executable, __file__, "--device", args.device, "--cold-start-child", flag]
        cmd += ["--tiny"] if args.tiny else []
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        lines = out.stdout.strip().splitlines()
        rows.append(json.loads(lines[-1]) if out.returncode == 0 and lines else
                    {"cudnn_benchmark": flag == "1", "error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--time-steps", type=int, default=50)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--cold-start", action="store_true", help="also time the first steps (autotuning, capture) in "
                   "fresh processes, cudnn.benchmark off and on")
    p.add_argument("--cold-start-child", choices=["0", "1"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.cold_start_child is not None:
        row = cold_start(device, args.cold_start_child == "1", args.tiny)
        print(json.dumps(row))
        return row
    # fp32 with TF32 off: the two steps may differ only by rounding; on a CPU the graph step runs eagerly
    eager, graphed = make_engine(args.tiny, device, False), make_engine(args.tiny, device, True, tower_streams=True)
    graph_step = graphed.graph
    losses = [(float(eager.step(*b)), float(graphed.step(*b)))
              for b in batches(args.steps, device, channels_last=eager.channels_last)]
    a, b = eager.model.state_dict(), graphed.model.state_dict()
    weight_diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    lr_graph, lr_eager = graphed.state.optimizer.param_groups[0]["lr"], eager.state.optimizer.param_groups[0]["lr"]
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "steps": args.steps, "replays": graph_step.replays if graph_step else 0,
              "captured": graph_step is not None and graph_step.graph is not None,
              "max_loss_diff": max(abs(x - y) for x, y in losses), "max_weight_diff": weight_diff,
              "lr_equal": abs(float(lr_graph) - float(lr_eager)) < 1e-9}
    result["capture_error"] = graph_step.error if graph_step else None
    result["ok"] = (result["max_loss_diff"] < 1e-3 and weight_diff < 1e-3 and result["lr_equal"]
                    and (result["captured"] or device.type != "cuda"))
    # timing at bench run's defaults: "auto" precision (bf16 on CUDA), TF32, cuDNN autotuning
    n = args.time_steps if not args.tiny else 3
    timed = dict(precision="auto", tf32=True, cudnn_benchmark=True)
    result["eager_ms_per_step"] = time_steps(make_engine(args.tiny, device, False, **timed), device, n)
    result["graph_one_stream_ms_per_step"] = time_steps(make_engine(args.tiny, device, True, **timed), device, n)
    result["graph_ms_per_step"] = time_steps(make_engine(args.tiny, device, True, tower_streams=True, **timed),
                                             device, n)
    if args.cold_start:
        result["cold_start"] = cold_starts(args)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
