"""The measurement scripts behind docs/performance.md run at tiny size, so they cannot rot."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

SCRIPTS = REPO / "scripts"


def load(name):
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vs_open_clip_tiny_same_loss(tmp_path):
    """bench's fast path and open_clip's plain one give the same loss on the same weights and batch."""
    pytest.importorskip("open_clip")
    table = load("vs_open_clip").main(["--tiny", "--rounds", "1", "--bench-steps", "1", "--baseline-steps", "1",
                                       "--out", str(tmp_path)])
    assert table["loss_step0_abs_diff"].iloc[0] < 1e-4 and table["loss_step1_abs_diff"].iloc[0] < 1e-4
    assert set(table["engine"]) == {"bench", "open_clip"} and (tmp_path / "vs_open_clip.csv").is_file()


def test_loader_speed_and_step_ablation_tiny(tmp_path):
    loader = load("loader_speed").main(["--tiny", "--rounds", "1", "--batch-size", "16", "--out", str(tmp_path)])
    assert set(loader["path"]) == {"device", "torchvision"} and (loader["images_per_s"] > 0).all()
    ablation = load("cpu_step_ablation").main(["--tiny", "--rounds", "1", "--steps", "1", "--out", str(tmp_path)])
    assert len(ablation) == 5 and ablation["git_commit"].notna().all()


def test_checkpoint_cost_tiny(tmp_path):
    """The epoch-end checkpoint timing behind docs/performance.md runs, times both modes and leaves no files."""
    table = load("checkpoint_cost").main(["--tiny", "--rounds", "1", "--out", str(tmp_path)])
    assert set(table["mode"]) == {"blocking", "background"} and (table["blocked_s"] > 0).all()
    assert (table["files_mb"] > 0).all() and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_cost.csv"]


@pytest.mark.slow  # smoke runs in fresh processes, this checkout's and HEAD's
def test_fixed_costs_tiny_times_a_smoke_run_against_torchs_imports_and_splits_the_rest(tmp_path):
    """The smoke-run timing behind docs/performance.md's fixed costs runs, and its breakdown accounts for the run."""
    table = load("fixed_costs").main(["--size", "tiny", "--rounds", "1", "--phases", "--compare", "HEAD",
                                      "--out", str(tmp_path)])
    assert sorted(table.code) == ["compare", "compare", "this", "this"]  # HEAD's files, timed alike
    timed, phases = table[table["round"] != "phases"].iloc[0], table[table["round"] == "phases"].iloc[0]
    assert timed.wall_s > timed.torch_imports_s > 0 and timed.wall_s > timed.train_seconds > 0
    assert timed.torch_process_s > timed.torch_imports_s  # the process starts and exits around the imports
    assert phases["phase: train_epoch"] >= phases.train_seconds and phases["phase: evaluate"] > 0
    assert phases["phase: import torch"] > 0 and phases["phase: interpreter start and exit"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed_costs_tiny.csv"]


@pytest.mark.slow  # a script process that starts gloo ranks
def test_ddp_overhead_times_both_paths_and_every_cpu_variant():
    """scripts/ddp_overhead.py (a 1-rank gloo group, in its own process): the plain and DDP paths and each
    variant that applies without CUDA graphs get a rate, and each DDP row an overhead against its plain row."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "ddp_overhead.py"), "--model", "tiny", "--device", "cpu",
                           "--steps", "2", "--warmup", "1", "--repeats", "1", "--variants", "all"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "gloo" and result["plain_images_per_s"] > 0 and result["ddp_images_per_s"] > 0
    # the stream variants need CUDA graphs and tower streams; the bucket sizes apply anywhere
    assert sorted(result["variants"]) == ["ddp_bucket10", "ddp_bucket5", "ddp_bucket50", "ddp_one_bucket"]
    assert all(v["vs"] == "plain" and v["images_per_s"] > 0 for v in result["variants"].values())


@pytest.mark.slow  # a script that runs, kills and resumes bench processes
def test_determinism_check_finds_reruns_and_resume_identical_on_cpu(tmp_path):
    """scripts/determinism_check.py (the GPU check's --deterministic stage) on a tiny CPU run: reruns, the
    SIGKILLed-and-resumed run and the run without --deterministic are all bit-identical to the first."""
    from tests.support.runs import TINY

    flags = ["--dataset", "synthetic", "--epochs", "1", "--limit-train", "48", "--limit-test", "32", "--batch-size",
             "8", "--device", "cpu", *TINY]
    proc = subprocess.run([sys.executable, str(SCRIPTS / "determinism_check.py"), "--work", str(tmp_path / "w"),
                           "--checkpoint-every", "3", "--", *flags], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rerun_identical"] and result["resume_identical"] and result["plain_identical_to_deterministic"]
    assert 3 <= result["killed_at_step"] < 6 and result["deterministic_train_seconds"] > 0


def test_cpu_determinism_counts_one_gradient_for_take_rows_at_every_site(tmp_path):
    """scripts/cpu_determinism.py at the training step's gather shapes, at torch's default thread count: the
    deterministic gather gives one distinct gradient over repeated backward passes at every site, and each site
    gets its after/before time ratio."""
    table = load("cpu_determinism").main(["--repeats", "5", "--rounds", "1", "--reps", "2",
                                          "--out", str(tmp_path / "gathers.csv")])
    after = table[table["gather"] == "take_rows (after)"]
    assert len(after) == len(load("cpu_determinism").SITES) and (after["distinct_gradients"] == 1).all()
    assert (table["after_over_before"] > 0).all() and (tmp_path / "gathers.csv").is_file()


@pytest.mark.slow  # sweeps at several K, each run also alone
def test_sweep_scaling_tiny_measures_each_k_and_runs_compute_as_alone(tmp_path, capsys):
    """scripts/sweep_scaling.py (the GPU check's --concurrent stage): one row per K, and run seed s scores the same
    whether it trained alone (K = 1) or beside another run (K = 2)."""
    assert load("sweep_scaling").main(["--tiny", "--ks", "1,2", "--device", "cpu", "--work", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith("| K | wall s | runs/hour") and len(lines) == 1 + 2 + 2 + 1
    rows = json.loads(lines[-1])["rows"]
    assert [r["k"] for r in rows] == [1, 2] and all(r["runs_per_hour"] > 0 for r in rows)
    assert rows[0]["vs_k1"] == 1.0 and rows[1]["zeroshot_top1"][0] == rows[0]["zeroshot_top1"][0]


def test_imagefolder_load_tiny_times_the_first_and_the_cached_load(tmp_path):
    """The image-folder load measurement behind docs/datasets.md runs and times both loads of every image."""
    table = load("imagefolder_load").main(["--tiny", "--rounds", "1", "--out", str(tmp_path)])
    assert list(table["mode"]) == ["first", "cached"] and (table["images"] == 200).all()
    assert (table["seconds"] > 0).all() and sorted(p.name for p in tmp_path.iterdir()) == ["imagefolder_load.csv"]


def test_stopping_rules_measures_each_rule_and_stopping_on_significance_inflates_false_positives(tmp_path):
    """scripts/stopping_rules.py behind docs/sweeps.md, at 100 simulated comparisons: every rule gets its rates,
    and 3 seeds then one more a side until p < 0.05 calls the null difference significant far more often than the
    fixed 3 seeds do (about 0.21 against 0.04 at 4000 comparisons)."""
    table = load("stopping_rules").main(["--reps", "100", "--halfwidths", "1", "--min-seeds", "3",
                                         "--out", str(tmp_path / "rules.csv")])
    assert list(table["rule"]) == ["until ±1 sd, min 3", "significance, 3 to 20", "fixed 3", "fixed 10"]
    rates = table.set_index("rule")
    assert rates.loc["significance, 3 to 20", "welch_false_positive"] > 2 * rates.loc["fixed 3", "welch_false_positive"]
    assert rates.loc["fixed 10", "mean_seeds"] == 10 and (tmp_path / "rules.csv").is_file()


def test_results_scale_builds_runs_whose_ids_records_rows_and_files_agree(tmp_path, tmp_path_factory):
    """The folder scripts/results_scale.py builds for docs/performance.md's "Results at scale" holds runs as bench
    leaves them: each run id the one a sweep plans for its config.json, its row the record's, its predictions.npy
    giving its top-1, and one transfer row per run (the timing itself is not run here: it takes minutes)."""
    import numpy as np
    import pandas as pd

    from bench.app.sweep.plan import planned_run_id
    from bench.config import RunConfig
    from bench.results.columns import config_key
    from bench.results.predictions import load_predictions
    from tests.support.runs import finished_run

    out = tmp_path / "scale"
    load("results_scale").main(["--runs", "6", "--seeds", "3", "--transfer", "--out", str(out),
                                "--template", str(finished_run(tmp_path_factory.getbasetemp()))])
    table = pd.read_csv(out / "runs.csv", dtype={"config_id": str})
    own = table[table["eval_dataset"] == table["dataset"]]
    assert len(own) == 6 and own["config_id"].nunique() == 2 and sorted(own["seed"]) == [0, 0, 1, 1, 2, 2]
    assert len(table) == 12 and set(table.loc[table["eval_dataset"] == "stl10", "source_run_id"]) == set(own["run_id"])
    for row in own.to_dict("records"):
        folder = out / "runs" / row["run_id"]
        config = json.loads((folder / "config.json").read_text())
        cfg = RunConfig.from_dict({k: v for k, v in config.items() if k != "config_id"})
        assert row["run_id"] == planned_run_id(cfg) and row["config_id"] == config_key(cfg) == config["config_id"]
        assert json.loads((folder / "result.json").read_text())["zeroshot_top1"] == row["zeroshot_top1"]
        labels, top1 = load_predictions(folder / "predictions.npy")
        assert np.mean(labels == top1) == row["zeroshot_top1"]
    assert (out / "runs_long.csv").is_file() and (out / "sweep.toml").is_file()
