"""Single-device training throughput of bench's DDP code path against the plain path.

Times bench's training step on one device twice over the same synthetic batch: once on the bare CLIP (what
``bench run`` does without torchrun, and with one rank under it) and once through ``ddp.wrap_model`` in a 1-rank
process group (what ``BENCH_FORCE_DDP=1 torchrun --nproc_per_node 1 -m bench run`` does, and what every rank of a
multi-GPU run pays besides communication: DDP reducer, gradient all-reduce, the feature adapter).
On CUDA both paths run as ``bench run`` does by default: the step captured as one CUDA graph (under DDP,
its all-reduce captured too) with the towers on two streams; ``--no-cuda-graph`` times the eager step.
The paths alternate over ``--repeats`` rounds of ``--warmup`` untimed and ``--steps`` timed steps, the
clock synchronising the GPU; each path's median images/s is reported, and the overhead is
``plain / ddp - 1``. ``--variants [NAMES]`` adds other settings (:data:`VARIANTS`: DDP built on the capture
stream, other bucket sizes, both paths with the towers on one stream). The last line is JSON.

    python scripts/ddp_overhead.py                        # the reference model, batch 32, on the GPU
    python scripts/ddp_overhead.py --model tiny --device cpu --steps 5 --repeats 3   # seconds on a CPU
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from bench.clip.configs import ModelCfg, TextCfg  # noqa: E402
from bench.clip.model import count_parameters, create_model_from_cfg  # noqa: E402
from bench.clip.templates import SEED_TEMPLATES, fill  # noqa: E402
from bench.clip.tokenizer import (
    tokenize,  # noqa: E402
    trim_tokens,  # noqa: E402
)
from bench.data.datasets import CIFAR10_CLASSES  # noqa: E402
from bench.distributed.world import init_distributed, shutdown  # noqa: E402
from bench.engine.build import (
    autocast_dtype_for,
    build_train_state,  # noqa: E402
    set_backend_flags,
    text_mode_for,
)
from bench.engine.cuda_graph import DDP_WARMUP, CudaGraphStep, capture_stream  # noqa: E402
from bench.engine.ddp import wrap_model  # noqa: E402
from bench.engine.epoch_loop import sync_device
from bench.engine.train_step import clip_step

MODELS = {
    "reference": ModelCfg(),  # the spec's CLIP: ModifiedResNet (2,2,2,2) width 32, text 512 x 6 layers
    "fast": ModelCfg(encoder="airbench_wide"),  # the fast preset's CLIP; time it at its batch, --batch-size 1024
    "tiny": ModelCfg(embed_dim=32, text=TextCfg(width=32, heads=2, layers=1), encoder_opts=(("width", 8),)),
}


def _one_rank_group(device: str, cuda_graph: bool):
    """A 1-rank process group, as ``BENCH_FORCE_DDP=1 torchrun --nproc_per_node 1`` would set up (unless already
    under torchrun): without the switch bench runs one rank as a plain run, with no group to time DDP in."""
    os.environ["BENCH_FORCE_DDP"] = "1"
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    return init_distributed(device, cuda_graph)


def _images_per_s(state, step_fn, batch, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        step_fn(state, *batch)
    sync_device(device)
    start = time.perf_counter()
    for _ in range(steps):
        step_fn(state, *batch)
    sync_device(device)
    return steps * len(batch[0]) / (time.perf_counter() - start)


# --variants: (path, tower streams, wrap_model options); a "ddp*" row is compared with the "plain*" row of the same
# tower streams
VARIANTS = {
    "ddp_capture_stream": ("ddp", True, {"build_stream": "capture"}),  # DDP built on the warm-up/capture stream
    "ddp_one_bucket": ("ddp", True, {"bucket_cap_mb": 1024}),  # one all-reduce after the whole backward
    "ddp_bucket5": ("ddp", True, {"bucket_cap_mb": 5}),  # DDP's default is 25 MB
    "ddp_bucket10": ("ddp", True, {"bucket_cap_mb": 10}),
    "ddp_bucket50": ("ddp", True, {"bucket_cap_mb": 50}),
    "plain_one_stream": ("plain", False, {}),
    "ddp_one_stream": ("ddp", False, {}),
}


def measure(model_name: str, device: str, batch_size: int, steps: int, warmup: int, repeats: int,
            precision: str, cuda_graph: bool = True, tower_streams: bool = True, variants=()) -> dict:
    world = _one_rank_group(device, cuda_graph)
    device = world.device
    cuda_graph, tower_streams = cuda_graph and device.type == "cuda", tower_streams and device.type == "cuda"
    set_backend_flags(device)
    torch.manual_seed(0)
    plain = create_model_from_cfg(MODELS[model_name]).to(device)
    channels_last = device.type == "cuda"  # as bench run
    if channels_last:
        plain = plain.to(memory_format=torch.channels_last)
    autocast = autocast_dtype_for(precision, device)
    tokens = trim_tokens(tokenize(fill(SEED_TEMPLATES, CIFAR10_CLASSES))).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(batch_size, 3, 32, 32, generator=g, device=device).mul_(2).sub_(1)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, len(CIFAR10_CLASSES), (batch_size,), generator=g, device=device)
    prompt_ids = labels * len(SEED_TEMPLATES) + torch.randint(0, len(SEED_TEMPLATES), (batch_size,), generator=g,
                                                              device=device)
    mode = text_mode_for(len(tokens), batch_size, device)
    cuda_graph = cuda_graph and mode == "all"  # static shapes
    specs = [("plain", "plain", tower_streams, {}), ("ddp", "ddp", tower_streams, {})]
    # the one-stream pair only where the default has two; the build stream matters only with CUDA graphs
    for name in variants:
        path, streams, options = VARIANTS[name]
        if (streams or tower_streams) and (cuda_graph or "build_stream" not in options):
            specs.append((name, path, streams and tower_streams, options))
    states, steps_fn = {}, {}
    for name, path, streams, options in specs:
        bare = copy.deepcopy(plain) if name != "plain" else plain
        if options.get("build_stream") == "capture":
            options = {**options, "build_stream": capture_stream(device)}
        wrap = (lambda m, options=options: wrap_model(m, world, cuda_graph=cuda_graph, **options)) \
            if path == "ddp" else None
        states[name] = build_train_state(bare, tokens, compact=False, capturable=cuda_graph, autocast_dtype=autocast,
                                         text_mode=mode, wrap=wrap, tower_streams=streams)
        # every path captures after DDP's warm-up, so they start timing from the same state
        steps_fn[name] = CudaGraphStep(warmup=DDP_WARMUP) if cuda_graph else clip_step
    rates = {name: [] for name in states}
    for _ in range(repeats):  # alternate, so drift in clocks or load hits every path alike
        for name, state in states.items():
            rates[name].append(_images_per_s(state, steps_fn[name], (images, labels, prompt_ids), steps,
                                             max(warmup, DDP_WARMUP + 1 if cuda_graph else 0), device))
    captured = {name: getattr(fn, "graph", None) is not None for name, fn in steps_fn.items()}
    errors = {name: getattr(fn, "error", None) for name, fn in steps_fn.items()}
    ips = {name: statistics.median(r) for name, r in rates.items()}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    shutdown()
    result = {"model": model_name, "params": count_parameters(plain), "device": str(device),
              "device_name": device_name, "backend": world.backend, "torch": torch.__version__,
              "batch_size": batch_size, "steps": steps, "warmup": warmup, "repeats": repeats,
              "precision": "bf16" if autocast is not None else "fp32", "text_mode": mode, "cuda_graph": cuda_graph,
              "tower_streams": tower_streams, "captured": captured, "capture_errors": errors,
              "plain_images_per_s": round(ips["plain"], 2), "ddp_images_per_s": round(ips["ddp"], 2),
              "ddp_overhead_pct": round(100 * (ips["plain"] / ips["ddp"] - 1), 2),
              "plain_runs": [round(r, 2) for r in rates["plain"]], "ddp_runs": [round(r, 2) for r in rates["ddp"]]}
    if len(specs) > 2:
        result["variants"] = {}
        for name, path, streams, options in specs[2:]:
            base = "plain" if streams == tower_streams else "plain_one_stream"
            result["variants"][name] = {"images_per_s": round(ips[name], 2), "vs": base, "overhead_pct": round(
                100 * (ips[base] / ips[name] - 1), 2) if path == "ddp" else None}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="reference")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=32, help="the spec's batch (per rank)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before each round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per path; the median is reported")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=True,
                        help="on CUDA, both paths replay the step as one captured graph, as bench run does")
    parser.add_argument("--tower-streams", action=argparse.BooleanOptionalAction, default=True,
                        help="on CUDA, both paths run the towers on two streams, as bench run does")
    parser.add_argument("--variants", nargs="?", const="all", default="",
                        help="also time these variants (comma-separated, or all): " + ", ".join(VARIANTS))
    args = parser.parse_args(argv)
    names = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    result = measure(args.model, args.device, args.batch_size, args.steps, args.warmup, args.repeats, args.precision,
                     args.cuda_graph, args.tower_streams, names)
    print(f"{result['model']} ({result['params']:,} params) on {result['device_name']}, batch {result['batch_size']}, "
          f"{result['precision']}, graph {result['cuda_graph']}, tower streams {result['tower_streams']}: "
          f"plain {result['plain_images_per_s']:.1f} images/s, DDP (1 rank, {result['backend']}) "
          f"{result['ddp_images_per_s']:.1f} images/s, overhead {result['ddp_overhead_pct']:+.2f}%")
    for name, v in result.get("variants", {}).items():
        print(f"  {name}: {v['images_per_s']:.1f} images/s" + (f", overhead {v['overhead_pct']:+.2f}% against {v['vs']}"
                                                                 if v["overhead_pct"] is not None else ""))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
