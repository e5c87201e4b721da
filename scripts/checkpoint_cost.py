#!/usr/bin/env python
"""How long the end of an epoch keeps training waiting for its checkpoints: written in the background or not.

    PYTHONPATH=. python scripts/checkpoint_cost.py [--rounds 3] [--tiny] [--device cpu]

Builds the training state ``bench run`` saves at the end of each epoch of the reference preset (the
reference CLIP with its compact token embedding, fused AdamW after one step) and times, on the training
thread, ``save_last`` + ``save_best`` as ``bench run`` calls them: ``background`` returns once the state is
copied to the CPU (the writes go on in the saver's thread), ``blocking`` also waits for both files, as
every save did before. Rounds alternate between the two. Writes results/checkpoint_cost.csv.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _results import save  # noqa: E402


def build_saver(run_dir: Path, device: torch.device, tiny: bool):
    from bench.clip.model import create_model
    from bench.clip.prompts import prompt_table
    from bench.clip.templates import SEED_TEMPLATES
    from bench.config import make_config
    from bench.data.datasets import CIFAR10_CLASSES
    from bench.distributed.world import World
    from bench.engine.build import build_engine
    from bench.engine.checkpoint import CheckpointSaver, RunProgress

    kwargs = dict(embed_dim=32, transformer_width=32, transformer_heads=2, transformer_layers=1,
                  encoder_opts={"width": 8}) if tiny else {}
    model = create_model(**kwargs).to(device)
    cfg = make_config("reference")
    state = build_engine(model, prompt_table(SEED_TEMPLATES, CIFAR10_CLASSES, device=device), cfg.recipe()).state
    for p in model.parameters():  # one step, so AdamW holds its moments as in any real checkpoint
        p.grad = torch.zeros_like(p)
    state.optimizer.step()
    return CheckpointSaver(run_dir, state, {"config": cfg.to_dict(), "classes": list(CIFAR10_CLASSES)},
                           torch.Generator(device=device).manual_seed(0), "checkpoint-cost", RunProgress(),
                           World(device))


def blocked_seconds(saver, wait: bool) -> float:
    """Seconds the training thread spends in one epoch end's saves; the writes then finish untimed."""
    saver.state.step += 1
    start = time.perf_counter()
    saver.save_last({"epoch": saver.state.step})
    saver.save_best({"epoch": saver.state.step})
    if wait:
        saver.wait()
    seconds = time.perf_counter() - start
    saver.wait()
    return seconds


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny model: a check that it runs")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.out if Path(args.out).is_dir() else None) as folder:
        with build_saver(Path(folder), device, args.tiny) as saver:
            blocked_seconds(saver, wait=True)  # first write: file creation, page cache
            for r in range(args.rounds):
                for mode in ("blocking", "background"):
                    rows.append({"round": r, "mode": mode, "blocked_s": blocked_seconds(saver, mode == "blocking")})
            size_mb = (Path(folder) / "last.pt").stat().st_size / 1e6 + (Path(folder) / "best.pt").stat().st_size / 1e6
    table = pd.DataFrame(rows).assign(files_mb=round(size_mb, 1), model="tiny" if args.tiny else "reference",
                                      device=str(device))
    medians = table.groupby("mode")["blocked_s"].median()
    print(f"{table['model'].iloc[0]} on {device}: last.pt + best.pt = {size_mb:.0f} MB; training waits "
          f"{medians['blocking']:.3f} s blocking, {medians['background']:.3f} s in the background "
          f"({medians['blocking'] / max(medians['background'], 1e-9):.1f}x less), median of {args.rounds} rounds")
    return save(table, args.out, "checkpoint_cost.csv", str(device))


if __name__ == "__main__":
    main()
