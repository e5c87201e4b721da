#!/usr/bin/env python
"""The CUDA-graph training step against the eager step: same losses and weights, and the time each takes.

    PYTHONPATH=. python scripts/graph_check.py [--device cuda] [--steps 8] [--tiny] [--json OUT.json]

Two copies of one model train on the same batches: one with :func:`bench.engine.train_step.clip_step` (eager,
one stream, whole prompt table, fused AdamW), one as ``bench run`` trains on CUDA:
:class:`bench.engine.cuda_graph.CudaGraphStep` (captured after 3 eager warm-up steps, capturable AdamW, lr as a
device tensor) with the towers on two streams. fp32 with TF32 off, so differences are rounding and
non-deterministic GPU reductions only. Then eager, the graph on one stream and the graph on two streams
are timed (median ms/step) at the same size. ``--cold-start`` adds, from fresh processes, how long the
first steps take (autotuning, capture) with ``cudnn.benchmark`` off and on, and the step time each gives.
On a CPU the graph step runs eagerly (capture=False): the check then covers the step logic, not capture.
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


def make_state(tiny: bool, device, graph: bool, precision=None, tower_streams: bool = False):
    from bench.clip.model import create_model
    from bench.clip.templates import SEED_TEMPLATES, fill
    from bench.clip.tokenizer import create_tokenizer, trim_tokens
    from bench.data.datasets import CIFAR10_CLASSES
    from bench.engine.build import build_train_state

    torch.manual_seed(0)
    kwargs = dict(embed_dim=32, transformer_width=32, transformer_heads=2, transformer_layers=1,
                  encoder_opts={"width": 8}) if tiny else {}
    model = create_model(**kwargs).to(device).train()
    prompts = fill(SEED_TEMPLATES, CIFAR10_CLASSES)
    table = trim_tokens(create_tokenizer(77, prompts)(prompts)).to(device)
    return build_train_state(model, table, capturable=graph, total_steps=1000, warmup_steps=10,
                             autocast_dtype=precision, text_mode="all", tower_streams=tower_streams)


def batches(n, device, batch=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(0, 50, (batch,), generator=g)
        yield torch.randn(batch, 3, 32, 32, generator=g).to(device), (ids // 5).to(device), ids.to(device)


def time_steps(state, step_fn, device, n):
    data = list(batches(n + 5, device, seed=2))
    for b in data[:5]:
        step_fn(state, *b)
    times = []
    for b in data[5:]:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step_fn(state, *b)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            step_fn(state, *b)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def cold_start(device, benchmark: bool, tiny: bool, steps: int = 50) -> dict:
    """In a fresh process: the wall time from the first step until the graph is captured and replayed once
    (cuDNN autotuning, kernel loading, capture), then the steady ms/step, at the reference preset's
    settings (bf16, channels_last, graph + tower streams), with ``cudnn.benchmark`` on or off."""
    from bench.engine.build import set_backend_flags
    from bench.engine.cuda_graph import CudaGraphStep
    from bench.engine.epoch_loop import sync_device

    set_backend_flags(device, cudnn_benchmark=benchmark)  # as bench run sets them
    precision = torch.bfloat16 if device.type == "cuda" else None
    state = make_state(tiny, device, True, precision, tower_streams=True)
    if device.type == "cuda":
        state.model.to(memory_format=torch.channels_last)
    step = CudaGraphStep()
    data = list(batches(step.warmup + 2, device, seed=3))
    sync_device(device)
    t = time.perf_counter()
    for b in data:
        step(state, *b)
    sync_device(device)
    first = time.perf_counter() - t
    return {"cudnn_benchmark": benchmark, "first_steps": len(data), "first_steps_s": round(first, 3),
            "ms_per_step": time_steps(state, step, device, steps if not tiny else 3)}


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
    from bench.engine.cuda_graph import CudaGraphStep
    from bench.engine.train_step import clip_step

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
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    eager, graphed = make_state(args.tiny, device, False), make_state(args.tiny, device, True, tower_streams=True)
    graph_step = CudaGraphStep(warmup=3)
    losses = [(float(clip_step(eager, *b)), float(graph_step(graphed, *b))) for b in batches(args.steps, device)]
    a, b = eager.model.state_dict(), graphed.model.state_dict()
    weight_diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "steps": args.steps, "replays": graph_step.replays, "captured": graph_step.graph is not None,
              "max_loss_diff": max(abs(x - y) for x, y in losses), "max_weight_diff": weight_diff,
              "lr_equal": abs(float(graphed.optimizer.param_groups[0]["lr"]) - eager.optimizer.param_groups[0]["lr"]) < 1e-9}
    result["capture_error"] = graph_step.error
    result["ok"] = (result["max_loss_diff"] < 1e-3 and weight_diff < 1e-3 and result["lr_equal"]
                    and (result["captured"] or device.type != "cuda"))
    # timing at the preset's precision: bf16 autocast on CUDA
    precision = torch.bfloat16 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    n = args.time_steps if not args.tiny else 3
    result["eager_ms_per_step"] = time_steps(make_state(args.tiny, device, False, precision), clip_step, device, n)
    result["graph_one_stream_ms_per_step"] = time_steps(make_state(args.tiny, device, True, precision), CudaGraphStep(),
                                                        device, n)
    result["graph_ms_per_step"] = time_steps(make_state(args.tiny, device, True, precision, tower_streams=True),
                                             CudaGraphStep(), device, n)
    if args.cold_start:
        result["cold_start"] = cold_starts(args)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
