#!/usr/bin/env python
"""Runs per hour of a sweep that trains K runs at once in one process on one device (``bench sweep --concurrent K``).

    python scripts/sweep_scaling.py --ks 1,2,4,8,16 --preset reference --epochs 1          # on a GPU
    python scripts/sweep_scaling.py --tiny --ks 1,2 --device cpu                          # CPU, seconds

For each K: K runs of the preset (seeds 0..K-1), shortened by ``--epochs`` / ``--limit-train``, through bench's own
scheduler (:func:`bench.app.sweep.in_process.run_plan`) into a fresh folder, after one untimed warm-up run. The wall time runs from the first run's
build to the last row written, so start-up and evaluation are in it as a sweep pays them. Per K: wall seconds,
runs per hour, its ratio to K = 1 (the issue's target: at least 5x at K = 8), the mean of the runs' own training
seconds, and the device's peak memory. Prints a markdown table, then one JSON line (for scripts/gpu_check.py).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINY = dict(model=dict(embed_dim=16, width=32, heads=2, layers=1, encoder_opts=(("width", 8),)), dataset="synthetic",
            limit_train=64, limit_test=32, batch_size=16)


def measure(k: int, args, work: Path) -> dict:
    import torch

    from bench.app.sweep.in_process import run_plan
    from bench.app.sweep.plan import plan
    from bench.config import make_config

    out = work / f"k{k}"
    shutil.rmtree(out, ignore_errors=True)
    extra = dict(TINY) if args.tiny else {}
    for name in ("dataset", "data_dir", "limit_train", "limit_test"):
        if getattr(args, name) is not None:
            extra[name] = getattr(args, name)
    cfgs = [make_config(args.preset, epochs=args.epochs, seed=seed, device=args.device, out=str(out), progress=False,
                        save_checkpoints=False, **extra) for seed in range(k)]
    planned = plan(cfgs)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    outcomes = run_plan(planned, concurrent=k, echo=lambda line: None)
    wall = time.perf_counter() - start
    failed = [o.error for o in outcomes if o.status != "done"]
    if failed:
        raise SystemExit(f"sweep_scaling: K={k}: {failed[0]}")
    rows = [o.row for o in outcomes]
    return {"k": k, "wall_s": round(wall, 3), "runs_per_hour": round(k * 3600 / wall, 2),
            "train_s_mean": round(sum(r["train_seconds"] for r in rows) / k, 3),
            "zeroshot_top1": [r["zeroshot_top1"] for r in rows],
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if cuda else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", default="1,2,4,8,16", help="concurrent runs to measure, comma-separated")
    p.add_argument("--preset", default="reference")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--dataset")
    p.add_argument("--data-dir")
    p.add_argument("--limit-train", type=int)
    p.add_argument("--limit-test", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="a tiny CLIP on the synthetic set (CPU check)")
    p.add_argument("--work", default="/tmp/bench_sweep_scaling")
    args = p.parse_args(argv)
    import torch

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    measure(1, args, work)  # warm-up, not reported: imports, the tokenizer, CUDA context and kernels load once
    rows = [measure(int(k), args, work) for k in args.ks.split(",")]
    base = rows[0]["runs_per_hour"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"sweep scaling: preset {args.preset}, {args.epochs} epoch(s) per run, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print("| K | wall s | runs/hour | vs K=1 | mean train s per run | peak GPU GiB |")
    print("|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        r["vs_k1"] = round(r["runs_per_hour"] / base, 2)
        print(f"| {r['k']} | {r['wall_s']:.1f} | {r['runs_per_hour']:.1f} | {r['vs_k1']:.2f}x | {r['train_s_mean']:.2f} "
              f"| {'-' if r['peak_gib'] is None else r['peak_gib']} |")
    print(json.dumps({"device": device, "preset": args.preset, "epochs": args.epochs, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
