#!/usr/bin/env python
"""Training batches per second: bench's device loader against torchvision per-sample transforms (CPU).

    PYTHONPATH=. python scripts/loader_speed.py [--batch-size 32,256] [--rounds 3] [--tiny]

Rounds alternate between the two paths (see bench/perf/loader_speed.py for what each produces), so both see
the same machine load; the ratio is median(device) / median(torchvision) images/s. Writes
results/loader_speed.csv (one row per round and path, with provenance).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _results import save  # noqa: E402

from bench.perf.loader_speed import ratio, side_by_side  # noqa: E402


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", default="32,256", help="comma-separated batch sizes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine; see vs_open_clip.py)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tiny", action="store_true", help="synthetic data, few batches: a check that it runs")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from bench.clip.prompts import prompt_table
    from bench.clip.templates import SEED_TEMPLATES
    from bench.data.datasets import load_cifar10, make_synthetic
    from bench.errors import BenchError

    data, dataset = None, "synthetic"
    if not args.tiny:
        try:
            data, dataset = load_cifar10("train", args.data_dir, download=False), "cifar10"
        except BenchError as exc:
            print(f"CIFAR-10 not available ({exc}); using the synthetic set", file=sys.stderr)
    data = data if data is not None else make_synthetic("train", 0, n=1024)
    table = prompt_table(SEED_TEMPLATES, data.classes)
    sizes = [int(b) for b in args.batch_size.split(",") if b]
    frames = []
    for batch_size in sizes:
        device_n, tv_n = (4, 2) if args.tiny else (max(20, 6400 // batch_size), max(4, 640 // batch_size))
        rows = side_by_side(data, table, batch_size, args.rounds, device_n, tv_n)
        r = ratio(rows)
        print(f"batch {batch_size}: device loader {r:.1f}x torchvision per-sample "
              + ", ".join(f"{row['path']} {row['images_per_s']:.0f}" for row in rows), flush=True)
        frames.append(pd.DataFrame(rows).assign(batch_size=batch_size, ratio=r, dataset=dataset,
                                                torch_threads=args.threads, device_batches=device_n,
                                                torchvision_batches=tv_n))
    table_out = pd.concat(frames, ignore_index=True)
    return save(table_out, args.out, "loader_speed.csv")


if __name__ == "__main__":
    main()
