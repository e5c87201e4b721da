#!/usr/bin/env python
"""How bench's result-side commands scale with the number of runs in a results folder: a folder of N runs made
cheaply from one tiny trained run, then the commands timed on it.

    PYTHONPATH=. python scripts/results_scale.py --runs 1000 --out /tmp/scale/n1000            # build the folder
    PYTHONPATH=. python scripts/results_scale.py --runs 1000 --out /tmp/scale/n1000 --time      # and time on it
    PYTHONPATH=. python scripts/results_scale.py --out /tmp/scale/n1000 --time --bench /tmp/old # another tree's code

The folder: ONE tiny smoke run is trained (``--template`` reuses a results folder holding one), then replicated
``--runs`` times as configurations x seeds (``--seeds`` per configuration, 20 by default, as a sweep of ``--until``
with ``--max-seeds 20`` leaves them). Configurations vary lr, weight decay and the encoder's ``width``; each run's
``config.json`` is the template's with those values, its run id the one a sweep plans for it
(``<encoder>-<config_id>-s<seed>``, config id from :func:`bench.results.columns.config_key`), so ``bench sweep
--status`` over the same grid finds it done. Each run's test predictions are drawn at a configuration's accuracy
(plus noise per seed); ``predictions.npy``, ``per_class.csv``, ``confusion.csv``, ``history.csv`` and the row's
metrics are all computed from them. Rows are written as ``result.json`` records, then ``runs.csv`` and
``runs_long.csv`` by ``bench results --rebuild`` (:func:`bench.results.runs_csv.rebuild_runs`). ``--transfer``
adds one transfer row per run (``<run id>@stl10``, a made-up evaluation with its own run folder).

``--time``: wall seconds of each result-side command as a fresh process (``python -m bench``, best of
``--repeat``), and of appending one row (:func:`bench.results.runs_csv.finish_run`) to a copy of the folder's
runs.csv. ``--bench PATH`` runs another source tree's bench (e.g. ``git archive`` of an older commit) on the same
folder; with ``--outputs DIR`` each command's stdout and report files are kept there, to diff two trees' outputs.
Writes ``--csv`` (default: print only). Not part of the test suite: N = 4000 takes minutes to build.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINY = ["--preset", "smoke", "--dataset", "synthetic", "--embed-dim", "32", "--text-width", "32", "--text-layers", "1",
        "--text-heads", "2", "--encoder-opt", "width=8", "--epochs", "1", "--no-progress"]
LRS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3)
WIDTHS = (8, 16)
# files a run folder keeps that the result tables read; checkpoints are left out (the tables never open them)
COPIED = ("curves.png", "train_log.csv")


def template_run(template: Path | None, work: Path) -> Path:
    """The run folder of the one tiny run: ``template``'s, or one trained now into ``work``."""
    if template is None:
        template = work
        if not (template / "runs.csv").is_file():
            subprocess.run([sys.executable, "-m", "bench", "run", *TINY, "--no-checkpoints", "--out", str(template)],
                           check=True, cwd=ROOT)
    runs = [p for p in (template / "runs").iterdir() if (p / "result.json").is_file()]
    if len(runs) != 1:
        raise SystemExit(f"results_scale: {template} must hold exactly one finished run, not {len(runs)}")
    return runs[0]


def configuration(c: int) -> dict:
    """The values configuration ``c`` varies: lr fastest, then width, then weight decay (so all are distinct)."""
    return {"lr": LRS[c % len(LRS)], "width": WIDTHS[c // len(LRS) % len(WIDTHS)],
            "weight_decay": round(0.01 * (1 + c // (len(LRS) * len(WIDTHS))), 4)}


def build(out: Path, n: int, seeds: int, template: Path, transfer: bool) -> None:
    from bench.atomic_files import atomic_write_text
    from bench.app.sweep.plan import planned_run_id
    from bench.app.transfer import KEPT_COLUMNS, transfer_run_id
    from bench.config import RunConfig
    from bench.results.columns import config_key
    from bench.results.predictions import FILENAME, load_predictions, save_predictions
    from bench.results.run_folder import write_class_tables, write_csv
    from bench.results.runs_csv import rebuild_runs

    config = json.loads((template / "config.json").read_text())
    config.pop("config_id", None)
    base_row = json.loads((template / "result.json").read_text())
    history = pd.read_csv(template / "history.csv")
    labels, _ = load_predictions(template / FILENAME)
    classes = pd.read_csv(template / "per_class.csv")["class"].tolist()
    k = len(classes)
    start = pd.Timestamp(base_row["time"])
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c, seed = divmod(i, seeds)
        values = configuration(c)
        d = {**config, "lr": values["lr"], "weight_decay": values["weight_decay"], "seed": seed, "out": str(out),
             "model": {**config["model"],
                       "encoder_opts": {**config["model"]["encoder_opts"], "width": values["width"]}}}
        cfg = RunConfig.from_dict(d)
        cfg = replace(cfg, out=str(out))
        run_id = planned_run_id(cfg)
        folder = out / "runs" / run_id
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng(i)
        accuracy = float(np.clip(0.3 + 0.02 * (c % 17) + rng.normal(0, 0.02), 0.05, 0.95))
        right = rng.random(len(labels)) < accuracy
        top1 = np.where(right, labels, (labels + rng.integers(1, k, len(labels))) % k)
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (labels, top1), 1)
        support = confusion.sum(axis=1)
        per_class = np.diag(confusion) / np.maximum(support, 1)
        top1_acc, recall = float((top1 == labels).mean()), float(per_class.mean())
        top5 = float(min(1.0, top1_acc + 0.4 + rng.uniform(0, 0.1)))
        loss = float(base_row["final_train_loss"] - accuracy + rng.normal(0, 0.01))
        seconds = float(base_row["train_seconds"] * (1 + 0.5 * values["width"] / 8) * rng.uniform(0.9, 1.1))
        time_ = (start + pd.Timedelta(seconds=10 * i)).isoformat()
        save_predictions(folder / FILENAME, labels, top1, k)
        write_class_tables(folder, classes, per_class, confusion)
        h = history.copy()
        h["train_loss"], h["zeroshot_top1"], h["zeroshot_top5"] = loss, top1_acc, top5
        h["mean_per_class_recall"] = recall
        write_csv(h, folder / "history.csv")
        for name in COPIED:
            if (template / name).is_file():
                shutil.copyfile(template / name, folder / name)
        row = {**base_row, "run_id": run_id, "config_id": config_key(cfg), "time": time_, "lr": values["lr"],
               "weight_decay": values["weight_decay"], "seed": seed, "zeroshot_top1": top1_acc, "zeroshot_top5": top5,
               "mean_per_class_recall": recall, "best_zeroshot_top1": top1_acc, "final_train_loss": loss,
               "train_seconds": round(seconds, 3),
               "train_images_per_s": round(base_row["train_images"] / seconds, 2),
               "params": int(base_row["params"]) + (values["width"] - 8) * 10_000}
        atomic_write_text(folder / "config.json", json.dumps({**cfg.to_dict(), "config_id": row["config_id"]},
                                                             indent=2, sort_keys=True, default=str))
        atomic_write_text(folder / "result.json", json.dumps(row, indent=2, default=str) + "\n")
        if transfer:
            tid = transfer_run_id(run_id, "stl10")
            tfolder = out / "runs" / tid
            tfolder.mkdir(exist_ok=True)
            t_acc = float(np.clip(accuracy - 0.1, 0.05, 0.95))
            t_top1 = np.where(rng.random(len(labels)) < t_acc, labels, (labels + 1) % k)
            t_conf = np.zeros((k, k), dtype=np.int64)
            np.add.at(t_conf, (labels, t_top1), 1)
            t_per_class = np.diag(t_conf) / np.maximum(t_conf.sum(axis=1), 1)
            save_predictions(tfolder / FILENAME, labels, t_top1, k)
            write_class_tables(tfolder, classes, t_per_class, t_conf)
            atomic_write_text(tfolder / "config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str))
            t_row = {"run_id": tid, **{c_: v for c_, v in row.items() if c_ in KEPT_COLUMNS and c_ != "run_id"},
                     "time": (start + pd.Timedelta(seconds=10 * i + 5)).isoformat(),
                     "source_run_id": run_id, "eval_dataset": "stl10", "eval_templates": "seed", "n_classes": k,
                     "test_images": len(labels), "native_image_size": 96,
                     "zeroshot_top1": float((t_top1 == labels).mean()), "zeroshot_top5": min(1.0, t_acc + 0.3),
                     "mean_per_class_recall": float(t_per_class.mean())}
            atomic_write_text(tfolder / "result.json", json.dumps(t_row, indent=2, default=str) + "\n")
    (out / "runs.csv").unlink(missing_ok=True)
    rebuild_runs(out)
    for bak in out.glob("runs.csv.*.bak"):
        bak.unlink()
    # a sweep file over the folder's first configurations (lr x width x 2 weight decays) and 2 seeds more than the
    # folder has: a plan of a few hundred runs, mostly done, for --status and --dry-run
    decays = sorted({configuration(c)["weight_decay"] for c in range(2 * len(LRS) * len(WIDTHS))})
    sweep = ["[base]", *[f"{k_} = {json.dumps(v)}" for k_, v in (
        ("preset", "smoke"), ("dataset", "synthetic"), ("embed_dim", 32), ("text_width", 32), ("text_layers", 1),
        ("text_heads", 2), ("epochs", 1), ("out", str(out)))],
        "", "[grid]", f"weight_decay = {decays}", "encoder_opt = [" + ", ".join(f"{{ width = {w} }}" for w in WIDTHS)
        + "]", f"lr = {list(LRS)}", f"seed = {list(range(seeds + 2))}", ""]
    (out / "sweep.toml").write_text("\n".join(sweep))


def timed(cmd, env, repeat, keep=None) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        best = min(best, time.perf_counter() - t)
        if done.returncode not in (0, 1):
            raise SystemExit(f"results_scale: {' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    if keep is not None:
        keep.write_text(done.stdout)
    return best


def measure(out: Path, args) -> list[dict]:
    env = dict(os.environ)
    if args.bench:
        env["PYTHONPATH"] = str(Path(args.bench).resolve())
    table = pd.read_csv(out / "runs.csv", dtype=str)
    n = int((table.get("eval_dataset", table["dataset"]) == table["dataset"]).sum())
    configs = table.drop_duplicates("config_id")["config_id"].tolist()
    keep = Path(args.outputs) if args.outputs else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    bench = [sys.executable, "-m", "bench"]
    report = Path(args.outputs or "/tmp") / f"report-{out.name}"
    commands = {
        "results": [*bench, "results", str(out)],
        "results --aggregate": [*bench, "results", str(out), "--aggregate"],
        "compare A B (two configurations)": [*bench, "compare", str(out), "--split-by", "config_id",
                                             "--where", f"config_id={configs[0]},{configs[1]}"],
        "compare --split-by config_id (all)": [*bench, "compare", str(out), "--split-by", "config_id"],
        "report": [*bench, "report", str(out), "--out", str(report)],
        "sweep --status": [*bench, "sweep", str(out / "sweep.toml"), "--status"],
        "sweep --dry-run": [*bench, "sweep", str(out / "sweep.toml"), "--dry-run"],
        "sweep --until --status": [*bench, "sweep", str(out / "sweep.toml"), "--until", "zeroshot_top1:0.01",
                                   "--max-seeds", str(args.seeds), "--status"],
    }
    rows = []
    for name, cmd in commands.items():
        if args.only and not any(o in name for o in args.only):
            continue
        if name.startswith("sweep --until"):  # its grid must not name seeds
            text = (out / "sweep.toml").read_text()
            kept = (ln for ln in text.splitlines() if not ln.startswith("seed"))
            (out / "sweep_until.toml").write_text("\n".join(kept))
            cmd = [*cmd[:4], str(out / "sweep_until.toml"), *cmd[5:]]
        stdout = keep / (name.replace(" ", "_").replace("/", "") + ".txt") if keep else None
        seconds = timed(cmd, env, args.repeat, stdout)
        rows.append({"timed": name, "runs": n, "rows": len(table), "seconds": round(seconds, 3)})
        print(f"{name:<36} N={n:<5} rows={len(table):<5} {seconds:8.3f} s", flush=True)

    def in_process(name: str, code: str):
        """Time ``code`` (it prints its own seconds, the folder as its argv[1]) in a fresh process: the best of
        ``--repeat``."""
        best = min(float(subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True,
                                        text=True, check=True).stdout) for _ in range(args.repeat))
        rows.append({"timed": name, "runs": n, "rows": len(table), "seconds": round(best, 3)})
        print(f"{name:<36} N={n:<5} rows={len(table):<5} {best:8.3f} s", flush=True)

    if not args.only or any("append" in o for o in args.only):
        in_process("append one row (finish_run)", (
            "import json,shutil,sys,time,tempfile;from pathlib import Path;"
            "from bench.results.runs_csv import finish_run;"
            "src=Path(sys.argv[1]);d=Path(tempfile.mkdtemp());shutil.copyfile(src/'runs.csv',d/'runs.csv');"
            "row=json.loads(next((src/'runs').glob('*/result.json')).read_text());row['run_id']='appended';"
            "(d/'runs'/'appended').mkdir(parents=True);t=time.perf_counter();"
            "finish_run(d,d/'runs'/'appended',row);print(time.perf_counter()-t);shutil.rmtree(d)"))
        # what a sweep's process checks of each run it claims: whether it is done (runs.csv read for it)
        in_process("claim check of one run (run_state)", (
            "import sys,time;from dataclasses import replace;from bench.app.sweep.plan import Planned,"
            "planned_run_id,run_state;from bench.config import make_config;"
            "cfg=make_config('smoke',out=sys.argv[1],seed=999);p=Planned(cfg,planned_run_id(cfg));"
            "t=time.perf_counter();s=run_state(p);print(time.perf_counter()-t)"))
        # what a sweep of --workers does at its end: where each of its runs stands (here 440 of the folder's runs)
        in_process("sweep end: states of its runs (<= 440)", (
            "import json,sys,time;from pathlib import Path;from bench.app.sweep.plan import Planned;"
            "from bench.app.sweep.launchers import _outcomes_from_files;from bench.config import RunConfig;"
            "out=Path(sys.argv[1]);"
            "ids=[r for r in (p.name for p in sorted((out/'runs').iterdir())) if '@' not in r][:440];ps=[]\n"
            "for i in ids:\n d=json.loads((out/'runs'/i/'config.json').read_text());"
            "d.pop('config_id',None);d['out']=str(out);ps.append(Planned(RunConfig.from_dict(d),i))\n"
            "t=time.perf_counter();_outcomes_from_files(ps);print(time.perf_counter()-t)"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, help="runs to build (omit to time an existing folder)")
    parser.add_argument("--out", required=True, help="the results folder to build or time")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per configuration")
    parser.add_argument("--transfer", action="store_true", help="one transfer row per run as well")
    parser.add_argument("--template", help="a results folder holding one finished run to replicate")
    parser.add_argument("--time", action="store_true", help="time the result-side commands on the folder")
    parser.add_argument("--repeat", type=int, default=1, help="timings: best of this many")
    parser.add_argument("--only", action="append", help="time only the commands whose name contains this")
    parser.add_argument("--bench", help="source tree whose bench the timed commands run (default: this one)")
    parser.add_argument("--outputs", help="keep each command's stdout and the report here")
    parser.add_argument("--csv", help="append the timings to this CSV (with provenance)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.runs:
        if out.exists():
            shutil.rmtree(out)
        t = time.perf_counter()
        template = template_run(Path(args.template) if args.template else None, out.with_name(out.name + ".template"))
        build(out, args.runs, args.seeds, template, args.transfer)
        print(f"built {out}: {args.runs} runs{' + transfer rows' if args.transfer else ''} in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
    if args.time:
        rows = measure(out, args)
        if args.csv:
            from _results import save

            old = pd.read_csv(args.csv) if Path(args.csv).is_file() else None
            new = pd.DataFrame(rows).assign(code=args.bench or "this tree")
            written = save(new, str(Path(args.csv).parent), Path(args.csv).name)
            if old is not None:
                from bench.results.run_folder import write_csv

                write_csv(pd.concat([old, written], ignore_index=True), args.csv)


if __name__ == "__main__":
    main()
