#!/usr/bin/env python
"""Where the CPU training step's time went: the reference step with bench's speed-ups added one at a time.

    PYTHONPATH=. python scripts/cpu_step_ablation.py [--rounds 3] [--steps 3] [--threads 1]

Reference model (51.7M parameters), batch 32, synthetic batches; each variant is the previous one plus
one change, and every change leaves the loss the same (tests/engine/test_exactness.py):

  A  77-token captions, each distinct prompt encoded once, foreach AdamW, dense 49408-row embedding
  B  + context trimmed to the longest prompt (7 tokens for the seed templates)
  C  + fused AdamW (one pass per tensor)
  D  + compact token embedding (only the prompts' rows train; the rest decay exactly, lazily)
  E  + prompt tree (shared prefixes encoded once): what `bench run` does on a CPU

Variants are timed in interleaved rounds (A B C D E, A B C D E, ...); the table gives the median
seconds per step and the speed-up over A. Writes results/cpu_step_ablation.csv.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name: (trimmed context, text mode, fused AdamW, compact embedding)
    "A 77-token, unique prompts, foreach AdamW": (False, "unique", False, False),
    "B + trimmed context": (True, "unique", False, False),
    "C + fused AdamW": (True, "unique", True, False),
    "D + compact embedding": (True, "unique", True, True),
    "E + prompt tree (bench default)": (True, "tree", True, True),
}


def make_engine(trim: bool, mode: str, fused: bool, compact: bool, tiny: bool):
    from bench.clip.model import create_model
    from bench.clip.prompts import prompt_table
    from bench.clip.templates import SEED_TEMPLATES, fill
    from bench.clip.tokenizer import tokenize
    from bench.data.datasets import CIFAR10_CLASSES
    from bench.engine.build import build_engine
    from bench.engine.recipe import TrainRecipe

    torch.manual_seed(0)
    kwargs = dict(embed_dim=32, transformer_width=32, transformer_heads=2, transformer_layers=1,
                  encoder_opts={"width": 8}) if tiny else {}
    model = create_model(**kwargs).train()
    # variant A keeps the 77-token padding the plain loop feeds; every other variant has bench's prompt table
    table = prompt_table(SEED_TEMPLATES, CIFAR10_CLASSES) if trim else tokenize(fill(SEED_TEMPLATES, CIFAR10_CLASSES))
    recipe = TrainRecipe(compact_embedding=compact, fused=fused, text_mode=mode)
    return build_engine(model, table, recipe)


def main(argv=None) -> pd.DataFrame:
    from _results import save

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    engines = {name: make_engine(*flags, tiny=args.tiny) for name, flags in VARIANTS.items()}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (32,), generator=g)
    images, labels = torch.randn(32, 3, 32, 32, generator=g), ids // 5
    for engine in engines.values():
        engine.step(images, labels, ids)  # first-call costs out of the rounds
    times = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                engine.step(images, labels, ids)
            times[name].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times[next(iter(times))])
    rows = [{"variant": name, "seconds_per_step": statistics.median(t), "speedup_vs_A": base / statistics.median(t),
             "rounds": args.rounds, "steps_per_round": args.steps, "torch_threads": args.threads}
            for name, t in times.items()]
    table = pd.DataFrame(rows)
    print(table[["variant", "seconds_per_step", "speedup_vs_A"]].to_string(index=False))
    return save(table, args.out, "cpu_step_ablation.csv")


if __name__ == "__main__":
    main()
