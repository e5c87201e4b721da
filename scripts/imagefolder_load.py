#!/usr/bin/env python
"""How long ``imagefolder:PATH`` takes to load 10,000 32-px PNGs: the first time (decoded, then cached) and again
(from the cache).

    PYTHONPATH=. python scripts/imagefolder_load.py [--rounds 3] [--source ~/.cache/cifar10/test.npz] [--tiny]

Writes the CIFAR-10 test images (``--source``, a ``test.npz`` as ``bench`` reads) as PNG files into a temporary
folder in ImageFolder's one-tree layout (one folder per class), then times what a run does with
``--dataset imagefolder:PATH``: load its train split and its test split (test_fraction 0.2). ``first`` starts from an
empty cache folder (scan, decode every file on the machine's cores, write the cache); ``cached`` repeats it with the
cache in place (scan and stat every file, read one .npz). The PNGs were just written, so both read them from the
page cache. Writes results/imagefolder_load.csv; the images are deleted afterwards.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _results import save  # noqa: E402


def write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray, classes) -> None:
    from PIL import Image

    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folder / classes[int(label)] / f"{i:05d}.png")


def load_both(folder: Path) -> tuple[float, int]:
    """Seconds to load the train and test splits, as a run asks for them, and the images loaded."""
    from bench.data.imagefolder import load_imagefolder

    start = time.perf_counter()
    n = sum(len(load_imagefolder(folder, split)) for split in ("train", "test"))
    return time.perf_counter() - start, n


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="~/.cache/cifar10/test.npz", help="a .npz with images and labels")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="200 synthetic images instead (for the tests)")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args(argv)
    from bench.data.datasets import CIFAR10_CLASSES, SYNTHETIC_CLASSES, make_synthetic

    if args.tiny:
        data = make_synthetic("test", n=200)
        images, labels, classes = data.images, data.labels, SYNTHETIC_CLASSES
    else:
        with np.load(Path(args.source).expanduser()) as f:
            images, labels, classes = f["images"][:args.images], f["labels"][:args.images], CIFAR10_CLASSES
    rows = []
    previous = os.environ.get("BENCH_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_pngs(folder, images, labels, classes)
        megabytes = sum(p.stat().st_size for p in folder.rglob("*.png")) / 1e6
        try:
            for r in range(args.rounds):
                os.environ["BENCH_CACHE_DIR"] = str(Path(tmp) / f"cache{r}")  # empty: the first load decodes
                for mode in ("first", "cached"):
                    load = os.getloadavg()[0]
                    seconds, n = load_both(folder)
                    rows.append({"round": r, "mode": mode, "seconds": seconds, "images": n,
                                 "images_per_s": n / seconds, "png_mb": round(megabytes, 1), "image_size": 32,
                                 "cpu_count": os.cpu_count(), "load_avg_1min": load})
                    print(f"round {r} {mode}: {seconds:.2f} s for {n} images ({n / seconds:,.0f}/s), "
                          f"load average {load:.2f}", file=sys.stderr)
        finally:
            if previous is None:
                os.environ.pop("BENCH_CACHE_DIR", None)
            else:
                os.environ["BENCH_CACHE_DIR"] = previous
    return save(pd.DataFrame(rows), args.out, "imagefolder_load.csv")


if __name__ == "__main__":
    main()
