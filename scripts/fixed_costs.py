#!/usr/bin/env python
"""A smoke run's wall time against its training time and torch's own imports, and where the rest goes.

    PYTHONPATH=. python scripts/fixed_costs.py [--size tiny|default] [--rounds 3] [--compare COMMIT|DIR] [--phases]

Each round times, each in a fresh process: torch's own imports (``import torch``, then ``import torch._dynamo``,
which torch's optimizer constructor imports; timed inside an interpreter that imports nothing else), and
``python -m bench run --preset smoke --dataset synthetic`` from outside (``--size tiny``: the tests' tiny CLIP at one
thread), with the row's ``train_seconds``. The target: wall time less torch's imports at most ``train_seconds``.
Beside it, the wall time of a process that does nothing but those imports and exit (``torch_process_s``), as any
Python program does them (the GC on): what torch alone costs a process, its exit included.
``--compare`` times other code in the same rounds, interleaved, so both see the same machine load: a commit of this
repository (its files extracted with ``git archive``) or a checkout's folder. ``--phases``: one more run of each under a timer that wraps the
functions owning each cost (:data:`PHASES`), in-process. Writes results/fixed_costs_<size>.csv.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _results import save  # noqa: E402

TINY = ["--embed-dim", "32", "--text-width", "32", "--text-layers", "1", "--text-heads", "2", "--encoder-opt",
        "width=8"]
TORCH_IMPORTS = ("import time; t = time.perf_counter(); import torch; a = time.perf_counter() - t; "
                 "t = time.perf_counter(); import torch._dynamo; print(a, time.perf_counter() - t)")
# module:function of each cost's owner; names a checkout lacks are left out of its breakdown
PHASES = ["bench.app.run:load_components", "bench.data.datasets:make_synthetic",
          "bench.clip.tokenizer:create_tokenizer", "bench.app.run:create_model_from_cfg",
          "bench.app.run:check_encoder_forward", "bench.engine.build:build_engine",
          "bench.engine.optim:build_optimizer", "bench.app.run:Run.train_epoch", "bench.app.run:Run.evaluate",
          "bench.app.run:write_csv", "bench.engine.checkpoint:CheckpointSaver.save_last",
          "bench.engine.checkpoint:CheckpointSaver.wait", "bench.app.run:run_row", "bench.app.run:Run._row",
          "bench.app.run:plot_curves", "bench.app.run:write_class_tables", "bench.app.run:finish_run"]
# times torch's imports and bench's, wraps the PHASES, then runs `bench ARGS` as python -m bench does. The imports come
# before main(), with the GC on: a checkout whose main() holds the GC off while importing gets no credit for it here
TIMER = r"""
import functools, importlib, json, sys, time
start = time.perf_counter()
times = {}
def timed(key, fn):
    @functools.wraps(fn)
    def inner(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            times[key] = times.get(key, 0.0) + time.perf_counter() - t
    return inner
t = time.perf_counter(); import torch; times["import torch"] = time.perf_counter() - t
t = time.perf_counter(); import torch._dynamo; times["import torch._dynamo"] = time.perf_counter() - t
t = time.perf_counter(); import bench.app.run; times["import bench (torch excluded)"] = time.perf_counter() - t
for spec in json.loads(sys.argv[1]):
    module, _, name = spec.partition(":")
    owner, *path = [importlib.import_module(module)] + name.split(".")
    for part in path[:-1]:
        owner = getattr(owner, part, None)
    if owner is not None and hasattr(owner, path[-1]):
        setattr(owner, path[-1], timed(name.split(".")[-1], getattr(owner, path[-1])))
from bench.cli import main
sys.argv = ["bench"] + sys.argv[2:]
try:
    main()  # as the program, as python -m bench calls it
finally:
    times["in the process (from its first line)"] = time.perf_counter() - start
    print("PHASES " + json.dumps(times), file=sys.stderr)
"""


def pythonpath(checkout: Path, folder: Path) -> str:
    """``folder`` naming ``checkout``'s ``bench`` and ``bench_plugins`` (its ``plugins/``), as an editable install."""
    folder.mkdir()
    (folder / "bench").symlink_to(checkout.resolve() / "bench")
    (folder / "bench_plugins").symlink_to(checkout.resolve() / "plugins")
    return str(folder)


def checkout(compare: str, folder: Path) -> Path:
    """``compare`` itself if it is a folder, else the files of that commit of this repository, extracted."""
    if Path(compare).is_dir():
        return Path(compare)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", compare], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return folder


def run_args(size: str, out: str) -> list[str]:
    return ["run", "--encoder", "modified_resnet", "--preset", "smoke", "--dataset", "synthetic", "--no-progress",
            "--out", out] + (TINY if size == "tiny" else [])


def environment(size: str, path: str) -> dict:
    env = dict(os.environ, PYTHONPATH=path)
    if size == "tiny":
        env["OMP_NUM_THREADS"] = "1"  # as the tests run
    return env


def timed_run(size: str, path: str, phases: bool) -> dict:
    """One smoke run in a fresh process: wall time from outside, the row's train_seconds, phases if asked."""
    with tempfile.TemporaryDirectory() as out:
        command = ["-c", TIMER, json.dumps(PHASES)] if phases else ["-m", "bench"]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *command, *run_args(size, out)], capture_output=True, text=True,
                              env=environment(size, path), cwd=out)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"the smoke run failed:\n{proc.stderr[-3000:]}")
        row = json.loads(next(Path(out).glob("runs/*/result.json")).read_text())
    result = {"wall_s": wall, "train_seconds": row["train_seconds"], "zeroshot_top1": row["zeroshot_top1"],
              "final_train_loss": row["final_train_loss"]}
    if phases:
        times = json.loads(proc.stderr.split("PHASES ", 1)[1].splitlines()[0])
        times["interpreter start and exit"] = wall - times.pop("in the process (from its first line)")
        result.update({f"phase: {k}": v for k, v in times.items()})
    return result


def torch_imports(size: str) -> tuple[float, float]:
    """torch's imports timed inside the process, and the process's wall time from outside."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", TORCH_IMPORTS], capture_output=True, text=True, check=True,
                          env=environment(size, ""))
    return sum(map(float, proc.stdout.split())), time.perf_counter() - start


def measure(args, codes: dict) -> pd.DataFrame:
    rows = []
    for r in range(args.rounds):
        torch_s, process_s = torch_imports(args.size)
        for code, path in codes.items():
            row = timed_run(args.size, path, phases=False)
            rows.append({"code": code, "round": r, "torch_imports_s": torch_s, "torch_process_s": process_s, **row})
            print(f"round {r} {code}: wall {row['wall_s']:.2f} s, train {row['train_seconds']:.2f} s, torch's imports "
                  f"{torch_s:.2f} s (a process of only those: {process_s:.2f} s)", flush=True)
    table = pd.DataFrame(rows)
    if args.phases:
        phases = [{"code": code, "round": "phases", **timed_run(args.size, path, phases=True)}
                  for code, path in codes.items()]
        table = pd.concat([table, pd.DataFrame(phases)], ignore_index=True)
    table.insert(0, "size", args.size)
    table["wall_less_torch_s"] = table["wall_s"] - table["torch_imports_s"]
    table["wall_less_torch_process_s"] = table["wall_s"] - table["torch_process_s"]
    return table


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=["tiny", "default"], default="tiny")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compare", metavar="COMMIT|DIR", help="other code (a commit or a checkout), timed alike")
    p.add_argument("--phases", action="store_true", help="also one run of each under the phase timer")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as paths:
        codes = {"this": pythonpath(ROOT, Path(paths) / "this")}
        if args.compare:
            codes["compare"] = pythonpath(checkout(args.compare, Path(paths) / "checkout"), Path(paths) / "compare")
        table = measure(args, codes)
    if args.compare:
        table["compare"] = args.compare
    for code in codes:
        timed = table[(table.code == code) & (table["round"] != "phases")]
        med = {k: statistics.median(timed[k]) for k in ("wall_s", "train_seconds", "torch_imports_s", "torch_process_s",
                                                         "wall_less_torch_s", "wall_less_torch_process_s")}
        print(f"{code}: median wall {med['wall_s']:.2f} s, train_seconds {med['train_seconds']:.2f} s, torch's imports "
              f"{med['torch_imports_s']:.2f} s, wall less torch's imports {med['wall_less_torch_s']:.2f} s; a process "
              f"of only torch's imports {med['torch_process_s']:.2f} s, wall less that "
              f"{med['wall_less_torch_process_s']:.2f} s")
    return save(table, args.out, f"fixed_costs_{args.size}.csv")


if __name__ == "__main__":
    main()
