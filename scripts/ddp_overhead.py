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
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from bench.clip.configs import ModelCfg, TextCfg  # noqa: E402
from bench.clip.model import count_parameters, create_model_from_cfg  # noqa: E402
from bench.clip.prompts import prompt_table  # noqa: E402
from bench.clip.templates import SEED_TEMPLATES  # noqa: E402
from bench.data.datasets import CIFAR10_CLASSES  # noqa: E402
from bench.distributed.world import init_distributed, shutdown  # noqa: E402
from bench.engine.build import build_engine, uses_channels_last  # noqa: E402
from bench.engine.cuda_graph import DDP_EAGER_STEPS, capture_stream  # noqa: E402
from bench.engine.epoch_loop import sync_device  # noqa: E402
from bench.engine.recipe import TrainRecipe  # noqa: E402

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


def _images_per_s(engine, batch, steps: int, untimed: int, device) -> float:
    for _ in range(untimed):
        engine.step(*batch)
    sync_device(device)
    start = time.perf_counter()
    for _ in range(steps):
        engine.step(*batch)
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
    # bench run's reference recipe at this batch and precision; the compact embedding off, as first measured
    recipe = TrainRecipe(batch_size=batch_size, precision=precision, cuda_graph=cuda_graph,
                         tower_streams=tower_streams, compact_embedding=False)
    torch.manual_seed(0)
    plain = create_model_from_cfg(MODELS[model_name]).to(device)
    tokens = prompt_table(SEED_TEMPLATES, CIFAR10_CLASSES, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(batch_size, 3, 32, 32, generator=g, device=device).mul_(2).sub_(1)
    if uses_channels_last(recipe, device):
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, len(CIFAR10_CLASSES), (batch_size,), generator=g, device=device)
    prompt_ids = labels * len(SEED_TEMPLATES) + torch.randint(0, len(SEED_TEMPLATES), (batch_size,), generator=g,
                                                              device=device)
    specs = [("plain", "plain", True, {}), ("ddp", "ddp", True, {})]
    # the one-stream pair only where the default has two; the build stream matters only with CUDA graphs
    two_streams = tower_streams and device.type == "cuda"
    for name in variants:
        path, streams, options = VARIANTS[name]
        if (streams or two_streams) and (cuda_graph and device.type == "cuda" or "build_stream" not in options):
            specs.append((name, path, streams, options))
    engines = {}
    for name, path, streams, options in specs:
        bare = copy.deepcopy(plain) if name != "plain" else plain
        if options.get("build_stream") == "capture":
            options = {**options, "build_stream": capture_stream(device)}
        engines[name] = build_engine(bare, tokens, replace(recipe, tower_streams=streams and tower_streams),
                                     world if path == "ddp" else None, options)
    mode, graphed = engines["plain"].state.text_mode, engines["plain"].graph is not None
    # every path captures after DDP's eager steps, so they start timing from the same state
    untimed = max(warmup, DDP_EAGER_STEPS + 1 if graphed else 0)
    rates = {name: [] for name in engines}
    for _ in range(repeats):  # alternate, so drift in clocks or load hits every path alike
        for name, engine in engines.items():
            rates[name].append(_images_per_s(engine, (images, labels, prompt_ids), steps, untimed, device))
    captured = {name: e.graph is not None and e.graph.graph is not None for name, e in engines.items()}
    errors = {name: e.graph.error if e.graph is not None else None for name, e in engines.items()}
    ips = {name: statistics.median(r) for name, r in rates.items()}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    shutdown()
    result = {"model": model_name, "params": count_parameters(plain), "device": str(device),
              "device_name": device_name, "backend": world.backend, "torch": torch.__version__,
              "batch_size": batch_size, "steps": steps, "warmup": warmup, "repeats": repeats,
              "precision": engines["plain"].precision, "text_mode": mode, "cuda_graph": graphed,
              "tower_streams": two_streams, "captured": captured, "capture_errors": errors,
              "plain_images_per_s": round(ips["plain"], 2), "ddp_images_per_s": round(ips["ddp"], 2),
              "ddp_overhead_pct": round(100 * (ips["plain"] / ips["ddp"] - 1), 2),
              "plain_runs": [round(r, 2) for r in rates["plain"]], "ddp_runs": [round(r, 2) for r in rates["ddp"]]}
    if len(specs) > 2:
        result["variants"] = {}
        for name, path, streams, options in specs[2:]:
            base = "plain" if streams or not two_streams else "plain_one_stream"
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
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
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
