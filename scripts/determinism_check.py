#!/usr/bin/env python
"""Bit-identical reruns and their price: the same ``bench run`` twice, once more killed and resumed, once plain.

Runs the given ``bench run`` flags four times into one work folder: twice with ``--deterministic`` (A, B),
once with ``--deterministic`` SIGKILLed after its first mid-epoch checkpoint and resumed (D), and once
without it (C). Prints one JSON line: whether B and D equal A bit for bit (history without timings, loss
log, predictions, every weight), and the training seconds of A against C (the cost of
``--deterministic``). On a CPU, C equals A as well; on CUDA it usually does not.

    python scripts/determinism_check.py --work /tmp/det -- --preset reference --epochs 1 --limit-train 8192
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
TIMING = ["epoch_seconds", "images_per_s", "elapsed_seconds", "eval_seconds"]


def bench(args, env, wait=True):
    cmd = [sys.executable, "-m", "bench", "run", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"determinism_check: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")


def run_dir(out: Path) -> Path:
    (folder,) = (out / "runs").iterdir()
    return folder


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two finished runs' files (empty: bit-identical)."""
    da, db = run_dir(a), run_dir(b)
    out = []
    ha, hb = (pd.read_csv(d / "history.csv").drop(columns=TIMING, errors="ignore") for d in (da, db))
    if not ha.equals(hb):
        out.append("history.csv")
    if not pd.read_csv(da / "train_log.csv").equals(pd.read_csv(db / "train_log.csv")):
        out.append("train_log.csv")
    if (da / "predictions.npy").read_bytes() != (db / "predictions.npy").read_bytes():
        out.append("predictions.npy")
    wa, wb = (torch.load(d / "last.pt", map_location="cpu", weights_only=True)["model"] for d in (da, db))
    out += [f"weights {k}" for k in wa if not torch.equal(wa[k], wb[k])][:3]
    return out


def train_seconds(out: Path) -> float:
    return float(pd.read_csv(out / "runs.csv")["train_seconds"].iloc[0])


def killed_and_resumed(flags, out: Path, env, every: int, timeout: float = 600) -> int:
    """Run with ``--checkpoint-every``, SIGKILL it right after the first checkpoint, resume; returns the step the
    kill left in last.pt."""
    proc = bench([*flags, "--checkpoint-every", every, "--out", out], env, wait=False)
    deadline = time.monotonic() + timeout
    while not list(out.glob("runs/*/last.pt")):
        if proc.poll() is not None:
            raise SystemExit(f"determinism_check: the run to kill ended first:\n{proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("determinism_check: no checkpoint before the timeout")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    step = torch.load(next(out.glob("runs/*/last.pt")), map_location="cpu", weights_only=True)["step"]
    bench(["--resume", "latest", "--out", out, "--no-progress"], env)
    return int(step)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_determinism_check"))
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints of the killed run")
    p.add_argument("--label", default="", help="names the check in the JSON line")
    p.add_argument("flags", nargs=argparse.REMAINDER, help="bench run flags, after --")
    args = p.parse_args(argv)
    flags = [f for f in args.flags if f != "--"] + ["--no-progress"]
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), BENCH_LOAD_PLUGINS="")
    a, b, c, d = (args.work / name for name in ("det_a", "det_b", "plain", "det_killed"))
    bench([*flags, "--deterministic", "--out", a], env)
    bench([*flags, "--deterministic", "--out", b], env)
    bench([*flags, "--out", c], env)
    killed_at = killed_and_resumed([*flags, "--deterministic"], d, env, args.checkpoint_every)
    rerun, resume, plain = differences(a, b), differences(a, d), differences(a, c)
    seconds_det, seconds_plain = train_seconds(a), train_seconds(c)
    result = {
        "check": args.label or " ".join(flags), "rerun_identical": not rerun, "rerun_differs_in": rerun,
        "resume_identical": not resume, "resume_differs_in": resume, "killed_at_step": killed_at,
        "plain_identical_to_deterministic": not plain,
        "deterministic_train_seconds": seconds_det, "plain_train_seconds": seconds_plain,
        "deterministic_cost": round(seconds_det / seconds_plain - 1, 4),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
