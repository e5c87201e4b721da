#!/usr/bin/env python
"""bench's training engine against open_clip's CLIP trained the usual way, side by side, on one machine.

    PYTHONPATH=. python scripts/vs_open_clip.py [--rounds 3] [--bench-steps 20] [--baseline-steps 4] [--tiny]

What is compared, at the reference configuration (embed 512; ModifiedResNet layers (2,2,2,2), width 32,
32 px; text context 77, vocab 49408, width 512, heads 8, layers 6; batch 32; AdamW lr 1e-4, wd 0.01):

- bench: ``bench.app.run.run`` (what ``bench run --preset reference`` runs) for ``--bench-steps`` steps on
  real CIFAR-10 (synthetic with ``--tiny`` or when CIFAR-10 is missing); its own ``train_images_per_s``
  (training loop only, evaluation excluded) is the number.
- open_clip: ``open_clip.model.CLIP(quick_gelu=True)`` holding the same weights, fed by a DataLoader over
  the spec's per-sample dataset (PIL image -> torchvision RandomCrop/Flip/ToTensor/Normalize, a random
  template tokenized to 77 tokens in ``collate_fn``), ``open_clip.ClipLoss``, ``torch.optim.AdamW`` with
  its defaults, eager fp32: the loop of open_clip's ``train_one_epoch``.

Rounds alternate (bench, open_clip, bench, ...) so both see the same machine load; the ratio reported is
median(bench images/s) / median(open_clip images/s). Before timing, the script checks that both models
give the same loss for the same weights and batch, and again after one optimizer step each.
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

REFERENCE = dict(embed_dim=512, layers=(2, 2, 2, 2), width=32, image_size=32, context_length=77, vocab_size=49408,
                 text_width=512, heads=8, text_layers=6)
TINY = dict(REFERENCE, embed_dim=32, width=8, text_width=32, heads=2, text_layers=1)


def open_clip_model(cfg: dict):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=cfg["layers"], width=cfg["width"], image_size=cfg["image_size"])
    text = CLIPTextCfg(context_length=cfg["context_length"], vocab_size=cfg["vocab_size"], width=cfg["text_width"],
                       heads=cfg["heads"], layers=cfg["text_layers"])
    # quick_gelu: OpenAI's activation, which bench's text tower uses
    return CLIP(cfg["embed_dim"], vision, text, quick_gelu=True)


def bench_model(cfg: dict):
    from bench.clip.model import create_model

    return create_model("modified_resnet", cfg["embed_dim"], cfg["image_size"], cfg["context_length"],
                        cfg["vocab_size"], cfg["text_width"], cfg["heads"], cfg["text_layers"], {"width": cfg["width"]})


# ---------------------------------------------------------------------------------------------------------
# Same loss for the same weights and batch
# ---------------------------------------------------------------------------------------------------------
def check_same_loss(cfg: dict, data, seed: int = 0) -> dict:
    """Losses of bench's fast path and open_clip's plain path on two batches, around one AdamW step each."""
    import open_clip

    from bench.clip.prompts import prompt_table
    from bench.clip.templates import SEED_TEMPLATES, fill
    from bench.clip.tokenizer import tokenize
    from bench.config import make_config
    from bench.data.loader import normalize, to_device_uint8
    from bench.engine.build import build_engine

    torch.manual_seed(seed)
    ours = bench_model(cfg).train()
    theirs = open_clip_model(cfg).train()
    theirs.load_state_dict(ours.state_dict(), strict=True)  # same OpenAI layout, every key
    full = tokenize(fill(SEED_TEMPLATES, data.classes))  # (50, 77): what the usual loop feeds
    table = prompt_table(SEED_TEMPLATES, data.classes)
    # bench run's reference recipe, one step at a time (no schedule), on the CPU
    engine = build_engine(ours, table, make_config("reference", batch_size=32).recipe())
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    rows = {}
    for step in (0, 1):
        idx = torch.randint(0, len(data), (32,), generator=g)
        images = normalize(to_device_uint8(data.images[idx.numpy()], "cpu"))
        labels = torch.as_tensor(data.labels[idx.numpy()])
        prompt_ids = labels * len(SEED_TEMPLATES) + torch.randint(0, len(SEED_TEMPLATES), (32,), generator=g)
        loss_ours = float(engine.step(images, labels, prompt_ids))  # forward, then one AdamW step
        image_f, text_f, scale = theirs(images, full[prompt_ids])
        loss_theirs = open_clip.ClipLoss()(image_f, text_f, scale)
        opt_theirs.zero_grad(set_to_none=True)
        loss_theirs.backward()
        opt_theirs.step()
        rows[f"loss_step{step}_bench"] = loss_ours
        rows[f"loss_step{step}_open_clip"] = float(loss_theirs.detach())
        rows[f"loss_step{step}_abs_diff"] = abs(loss_ours - rows[f"loss_step{step}_open_clip"])
    return rows


# ---------------------------------------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------------------------------------
def bench_round(cfg: dict, steps: int, dataset: str, data_dir, out: Path) -> float:
    """Images/s of ``bench.app.run.run`` at the reference recipe for ``steps`` steps (training loop only)."""
    from bench.app.run import run
    from bench.config import make_config

    model = dict(encoder="modified_resnet", encoder_opts=(("width", cfg["width"]),), embed_dim=cfg["embed_dim"],
                 width=cfg["text_width"], heads=cfg["heads"], layers=cfg["text_layers"])
    run_cfg = make_config("reference", model=model, epochs=1, limit_train=32 * steps, limit_test=32, device="cpu",
                          dataset=dataset, data_dir=data_dir, save_checkpoints=False, progress=False, out=str(out),
                          log_every=10 ** 6)
    return run(run_cfg)["train_images_per_s"]


class OpenClipLoop:
    """open_clip's CLIP trained the usual way: per-sample DataLoader, 77-token captions, default AdamW."""

    def __init__(self, cfg: dict, data, seed: int = 0):
        import open_clip

        from bench.data.datasets import CIFARCLIPDataset

        torch.manual_seed(seed)
        self.model = open_clip_model(cfg).train()
        self.loss = open_clip.ClipLoss()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01)
        self.dataset = CIFARCLIPDataset(data, class_names=data.classes)

    def round(self, steps: int) -> float:
        from bench.data.datasets import collate_fn

        loader = torch.utils.data.DataLoader(self.dataset, batch_size=32, shuffle=True, drop_last=True,
                                             collate_fn=collate_fn, num_workers=0)
        seen, start = 0, time.perf_counter()
        for i, (images, tokens, _labels) in enumerate(loader):
            if i == steps:
                break
            image_f, text_f, scale = self.model(images, tokens)
            loss = self.loss(image_f, text_f, scale)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            seen += images.shape[0]
        float(loss.detach())  # as the bench loop, end on a synchronised value
        return seen / (time.perf_counter() - start)


def load_data(tiny: bool, data_dir):
    from bench.data.datasets import load_cifar10, make_synthetic
    from bench.errors import BenchError

    if not tiny:
        try:
            return load_cifar10("train", data_dir, download=False), "cifar10"
        except BenchError as exc:
            print(f"CIFAR-10 not available ({exc}); using the synthetic set", file=sys.stderr)
    return make_synthetic("train", 0, n=640), "synthetic"


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bench-steps", type=int, default=20, help="steps per bench round")
    p.add_argument("--baseline-steps", type=int, default=4, help="steps per open_clip round")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both engines; 1 on a shared machine, where spinning OpenMP threads that "
                        "wait for a descheduled sibling make 2-thread timings 10x worse and random")
    p.add_argument("--tiny", action="store_true", help="tiny model and data: a seconds-long check that it runs")
    p.add_argument("--out", default=str(ROOT / "results"), help="writes vs_open_clip.csv here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = TINY if args.tiny else REFERENCE
    data, dataset = load_data(args.tiny, args.data_dir)

    losses = check_same_loss(cfg, data)
    print("same weights, same batch: " + ", ".join(f"{k} {v:.6g}" for k, v in losses.items()), flush=True)
    baseline = OpenClipLoop(cfg, data)
    baseline.round(1)  # first-call costs (oneDNN primitives) out of the timed rounds
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for engine in ("bench", "open_clip"):
                ips = (bench_round(cfg, args.bench_steps, dataset, args.data_dir, Path(tmp)) if engine == "bench"
                       else baseline.round(args.baseline_steps))
                rows.append({"round": r, "engine": engine, "images_per_s": round(ips, 3)})
                print(f"round {r} {engine:9s} {ips:8.2f} images/s", flush=True)
    table = pd.DataFrame(rows)
    per_round = table.pivot(index="round", columns="engine", values="images_per_s")
    table["round_ratio"] = table["round"].map(per_round["bench"] / per_round["open_clip"])
    med = table.groupby("engine")["images_per_s"].median()
    summary = {"config": "tiny" if args.tiny else "reference", "dataset": dataset, "batch_size": 32,
               "rounds": args.rounds, "bench_steps": args.bench_steps, "baseline_steps": args.baseline_steps,
               "bench_images_per_s_median": med["bench"], "open_clip_images_per_s_median": med["open_clip"],
               "ratio": med["bench"] / med["open_clip"], **losses, "torch_threads": torch.get_num_threads()}
    table = table.assign(**{k: v for k, v in summary.items() if k not in ("rounds",)})
    table = save(table, args.out, "vs_open_clip.csv")
    print(f"bench {med['bench']:.2f} images/s vs open_clip {med['open_clip']:.2f} images/s: "
          f"{summary['ratio']:.1f}x (median of {args.rounds} interleaved rounds); "
          f"loss |diff| {losses['loss_step0_abs_diff']:.2e} before and {losses['loss_step1_abs_diff']:.2e} after one step")
    return table


if __name__ == "__main__":
    main()
