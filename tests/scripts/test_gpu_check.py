"""scripts/gpu_check.sh runs end to end (CPU, --tiny), and the CIFAR-10 .xz decoder it relies on is exact."""
import json
import lzma
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench.data import cifar_xz
from bench.data.datasets import make_synthetic
from tests.support import REPO as ROOT


def test_xz_format_round_trip(tmp_path):
    """decode(encode(x)) == x, and unpack() writes the npz files bench loads."""
    train, test = make_synthetic("train", 0, n=40), make_synthetic("test", 0, n=20)
    images, labels = cifar_xz.decode(cifar_xz.encode(train.images, train.labels))
    assert np.array_equal(images, train.images) and np.array_equal(labels, train.labels)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()  # batches split over two folders, as two uploads leave them
    for name, d in (("a/data_batch_1.xz", train), ("b/data_batch_2.xz", train), ("a/test_batch.xz", test)):
        (tmp_path / name).write_bytes(lzma.compress(cifar_xz.encode(d.images, d.labels)))
    assert cifar_xz.unpack([tmp_path / "a", tmp_path / "b"], tmp_path / "npz") == {"train": 80, "test": 20}
    from bench.data.datasets import load_cifar10

    loaded = load_cifar10("test", tmp_path / "npz", download=False)
    assert np.array_equal(loaded.images, test.images)


@pytest.mark.slow  # scripts/gpu_check.sh --tiny: every stage, many bench processes
def test_gpu_check_tiny_runs_every_stage(tmp_path):
    """The one-call GPU check, at tiny size on CPU: every stage ok, the table printed last, files in $OUT."""
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--tiny", "--work", str(tmp_path / "work")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    assert proc.stdout.rstrip().endswith((out / "summary.md").read_text().rstrip())
    results = json.loads((out / "results.json").read_text())
    assert all(s["status"] == "ok" for s in results["stages"].values()), results["stages"]
    assert results["graph_check"]["ok"] and results["reference"]["ms_per_step"] > 0
    assert results["reference_checkpoint"]["ok"]  # last.pt, reloaded by bench eval, scores as the run did
    assert "extrapolated_50_epoch_s" in results["reference"] and results["fast"]["epochs_done"] == 1
    assert len(pd.read_csv(out / "throughput.csv")) == 4  # vision infer and train, text train, clip train
    for name in ("fast_seeds", "fast96"):  # issue 15's seed spreads, at tiny size
        assert results[name]["seeds"] == [0, 1] and len(results[name]["train_eval_seconds"]["values"]) == 2
        assert f"| {name.replace('_seeds', '')} preset, seeds 0,1, one process | top-1" in proc.stdout
    assert "| text tower's share of a step, modified_resnet b4 fp32 | text " in proc.stdout
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back


def test_summary_table_shows_the_deterministic_stage_and_its_cost(tmp_path):
    """The --only deterministic stage's JSON becomes one row per preset with the bit-identity verdicts and the
    cost of --deterministic as a percentage of the plain run's training time; a failed stage says where to look."""
    gpu_check = _script_module()
    check = gpu_check.Check(tmp_path, 10, dict(os.environ))
    results = {"data": {"source": "synthetic"}, "deterministic_fast": "failed: see gpu_check.log",
               "deterministic_reference": {"rerun_identical": True, "resume_identical": True, "killed_at_step": 50,
                                           "deterministic_train_seconds": 12.0, "plain_train_seconds": 10.0,
                                           "deterministic_cost": 0.2}}
    table = gpu_check.report(check, results)
    assert ("| deterministic reference preset, `--deterministic` | rerun bit-identical True, SIGKILL at step 50 + "
            "resume bit-identical True; training 12.00 s vs 10.00 s without: cost **+20.0%** |") in table
    assert "| deterministic fast | failed: see gpu_check.log |" in table


def test_whole_reference_run_summary_estimates_only_what_was_not_run():
    """A reference run of fewer than 50 epochs (shortened, or stopped by its cap) is summarised with an
    estimate: its wall time plus the missing epochs at its median wall time per epoch after the first
    (which holds cuDNN autotuning and graph capture); a run of 50 epochs is reported as measured."""
    gpu_check = _script_module()
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "epoch_seconds": [12.0, 5.0, 5.0, 5.0],
                            "elapsed_seconds": [30.0, 35.5, 41.5, 47.0], "zeroshot_top1": [0.4, 0.5, 0.6, 0.6]})
    short = gpu_check.reference_full_summary(history, {"status": "ok", "seconds": 50.0}, 50000)
    assert short["epochs_done"] == 4 and short["ms_per_step"] == round(5000 / 1562, 3)
    assert short["wall_per_epoch_s"] == 5.5 and short["estimated_50_epoch_wall_s"] == 50.0 + 46 * 5.5
    # the parts add up to the wall time: 12 s first epoch, 3 x 5 s training, 3 x 0.25 s evaluation, the rest
    # of each epoch end, 18 - 0.5 s before the first epoch's end, 3 s after the last
    parts = gpu_check.reference_full_summary(history.assign(eval_seconds=[0.5, 0.25, 0.25, 0.25]),
                                             {"status": "ok", "seconds": 50.0}, 50000)
    assert parts["first_epoch_train_s"] == 12.0 and parts["eval_s_median"] == 0.25
    assert parts["epoch_end_other_s_median"] == 0.25 and parts["before_first_epoch_s"] == 17.5
    assert parts["after_last_epoch_s"] == 3.0
    assert (parts["before_first_epoch_s"] + 12.0 + 15.0 + parts["eval_total_s"] + parts["epoch_end_other_total_s"]
            + parts["after_last_epoch_s"]) == 50.0
    done = pd.concat([history] * 13, ignore_index=True).assign(epoch=range(1, 53))[:50]
    assert "estimated_50_epoch_wall_s" not in gpu_check.reference_full_summary(done, {"status": "ok", "seconds": 280.0},
                                                                               50000)


def test_cudnn_autotuning_is_dropped_only_when_the_cold_start_says_a_whole_run_pays_for_it():
    """Autotuning costs seconds once and may save microseconds per step: over the reference run's 78,100
    steps, 10 s of tuning pays for itself only if it saves more than 0.128 ms a step."""
    gpu_check = _script_module()

    def rows(on_first, on_ms):
        return [{"cudnn_benchmark": False, "first_steps_s": 1.0, "ms_per_step": 3.0},
                {"cudnn_benchmark": True, "first_steps_s": on_first, "ms_per_step": on_ms}]
    assert gpu_check.cudnn_benchmark_pays(rows(11.0, 2.8))  # 9.8 s tuning < 15.6 s saved
    assert not gpu_check.cudnn_benchmark_pays(rows(11.0, 2.9))  # 7.8 s saved
    # without both rows the preset decides
    assert gpu_check.cudnn_benchmark_pays(None) is None and gpu_check.cudnn_benchmark_pays(rows(11.0, 2.9)[:1]) is None


def _script_module():
    """scripts/gpu_check.py as a module (scripts/ is not a package)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return gpu_check


def test_summary_table_renders_the_figures_of_a_real_gpu_run():
    """The report paths --tiny cannot reach (a whole reference run, cold starts, DDP variants, fast variants)
    render the committed H200 results: the table carries the measured figures, not placeholders."""
    gpu_check = _script_module()
    results = json.loads((ROOT / "results" / "gpu" / "h200_pinned_ckpt" / "results.json").read_text())

    class Stages:
        stages = results["stages"]

    table = gpu_check.report(Stages, results)
    for figure in ("**252.8 s** wall for 50 epochs", "0.027 s each", "9.402 s", "+9.06%", "+15.43%",
                   "top-1 0.9430", "94% at 21.18 s"):
        assert figure in table, figure
