"""Bit-identical reruns at torch's default thread count (one per core), as users run bench: not at one thread.

The plain runs here use a 512-wide text tower: at that width the prompt tree's positional-embedding gather has
more than 32,768 elements, where torch's CPU ``index_put_`` backward turns into parallel atomic adds, so
these tests fail if a gather of the step goes back to plain indexing (measured: scripts/cpu_determinism.py).
The runs of the newer features (held-out classes, transfer rows, targets, image folders, fp16, a resize at load)
are the tiny run of tests/support/runs.py with those options: what they add is data and bookkeeping, not width.
"""
from __future__ import annotations

import os
import random
import signal
import time

import pandas as pd
import pytest
import torch

from bench.deterministic import take_rows
from bench.engine.determinism import deterministic_mode

from tests.support.processes import spawn_bench
from tests.support.runs import FLAGS, assert_same_run, run_dir_of

# 3 epochs x 4 steps of batch 32 on 128 synthetic images; the text tower at the reference width, one layer
DET_FLAGS = ["--dataset", "synthetic", "--epochs", "3", "--limit-train", "128", "--limit-test", "64",
             "--batch-size", "32", "--cutout", "8", "--device", "cpu", "--embed-dim", "32", "--text-width", "512",
             "--text-layers", "1", "--text-heads", "8", "--encoder-opt", "width=8", "--no-progress", "--log-every", "2"]
STEPS = 12


def _bench(*args, timeout=600):
    proc = spawn_bench(*args, default_threads=True)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "first"
    _bench("run", *DET_FLAGS, "--out", out)
    return out


@pytest.mark.slow  # bench processes at 2 threads, a 512-wide text tower
def test_two_runs_at_the_default_thread_count_are_bit_identical(first, tmp_path):
    """The same command twice, at torch's default threads: the same history, metrics, predictions and weights."""
    row = pd.read_csv(first / "runs.csv").iloc[0]
    if row["torch_threads"] < 2:
        pytest.skip("this machine gives torch one thread: nothing here would run in parallel")
    assert row["deterministic"] == False  # noqa: E712  (a plain run: no --deterministic needed on a CPU)
    second = tmp_path / "second"
    _bench("run", *DET_FLAGS, "--out", second)
    assert assert_same_run(first, second)["torch_threads"] == row["torch_threads"]


def _killed(flags, out, every: int) -> int:
    """``bench run FLAGS`` at the default thread count, SIGKILLed between two of its checkpoints (every ``every``
    steps) before it finished; returns the step its last.pt holds."""
    proc = spawn_bench("run", *flags, "--checkpoint-every", str(every), "--out", out, default_threads=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("runs/*/last.pt")):
        assert proc.poll() is None, f"bench exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the first checkpoint"
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.1))  # anywhere between two checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (out / "runs.csv").exists(), "the kill did not land before the end"
    return torch.load(run_dir_of(out) / "last.pt", weights_only=True)["step"]


@pytest.mark.slow  # a SIGKILLed bench process, then a resume
def test_sigkill_mid_epoch_then_resume_at_the_default_thread_count_is_the_uninterrupted_run(first, tmp_path):
    """SIGKILL between two checkpoints, then `bench run --resume latest`, both at the default thread count."""
    out = tmp_path / "killed"
    assert _killed(DET_FLAGS, out, 2) < STEPS
    _bench("run", "--resume", "latest", "--out", out, "--no-progress")
    row = assert_same_run(first, out)
    assert row["resumes"] == 1


@pytest.mark.slow  # a bench process at 2 threads
def test_deterministic_flag_on_cpu_changes_nothing_but_the_record(first, tmp_path):
    """--deterministic (torch's deterministic algorithms) trains the same bits on a CPU and says so in the row."""
    out = tmp_path / "deterministic"
    _bench("run", *DET_FLAGS, "--deterministic", "--out", out)
    assert assert_same_run(first, out)["deterministic"] == True  # noqa: E712


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Image folders of synthetic gratings, every class in every split: train/ and test/ at 48 px (a transfer
    dataset decoded at the model's size) and one tree at 40 px (split by the seed, decoded to 32 px)."""
    from bench.data.datasets import SYNTHETIC_CLASSES, make_synthetic
    from tests.support.archives import write_image_folder

    root = tmp_path_factory.mktemp("folders")
    for split, n in (("train", 60), ("test", 40)):
        data = make_synthetic(split, 5, n=n, size=48)
        write_image_folder(root / "split" / split, data.images, data.labels, SYNTHETIC_CLASSES)
    data = make_synthetic("train", 7, n=100, size=40)
    write_image_folder(root / "tree", data.images, data.labels, SYNTHETIC_CLASSES)
    return root


# FLAGS at 32 training images: 2 epochs of 4 steps, so a checkpoint every 3 steps is one inside the first epoch.
SHORT = [("32" if FLAGS[i - 1] in ("--limit-train", "--limit-test") else f) for i, f in enumerate(FLAGS)]
# (options, what the row must show, so that each case runs the feature it names)
FEATURES = {
    # a count of classes drawn with the seed; a transfer row; a target only observed; the split resized at load
    "holdout-transfer-target-resize": (
        ["--holdout-classes", "2", "--transfer", "imagefolder:{split}", "--target", "zeroshot_top1=0.15",
         "--image-size", "64"],
        {"holdout_classes": 2, "source_image_size": 32, "image_size": 64, "stop_at_target": False}),
    # one tree split by the seed; fp16's grad scaler; a run that stops at its target
    "imagefolder-fp16-stop-at-target": (
        ["--dataset", "imagefolder:{tree}", "--precision", "fp16", "--target", "zeroshot_top1=0.15",
         "--stop-at-target"],
        {"dataset": "imagefolder:{tree}", "precision": "fp16", "data_split": "test_fraction=0.2 split_seed=0",
         "stop_at_target": True}),
}


@pytest.mark.slow  # four bench processes a case, at 2 threads
@pytest.mark.parametrize("case", FEATURES)
def test_newer_features_rerun_and_resume_bit_identical_at_the_default_thread_count(case, folders, tmp_path):
    """Two runs of one command, and a third SIGKILLed in its first epoch and resumed, all at torch's default thread
    count: one history, loss log, row (held-out and target columns too), predictions, weights and transfer row.
    The first run decodes the image folders into an empty cache; the others read the cache."""
    options, shows = FEATURES[case]
    paths = {name: folders / name for name in ("split", "tree")}
    flags = [*SHORT, *(o.format(**paths) for o in options)]
    first, second, killed = tmp_path / "first", tmp_path / "second", tmp_path / "killed"
    _bench("run", *flags, "--out", first)
    row = pd.read_csv(first / "runs.csv").set_index("run_id").loc[run_dir_of(first).name]
    expected = {k: v.format(**paths) if isinstance(v, str) else v for k, v in shows.items()}
    assert {k: row[k] for k in expected} == expected
    _bench("run", *flags, "--out", second)
    assert_same_run(first, second)
    assert _killed(flags, killed, 3) < 4, "the kill landed after the first epoch"
    _bench("run", "--resume", "latest", "--out", killed, "--no-progress")
    assert assert_same_run(first, killed)["resumes"] == 1


@pytest.mark.parametrize("shape, n", [((77, 512), 74), ((93, 512), 64), ((48, 512), 128)],
                         ids=["tree-positions", "tree-end-of-text", "caption-rows"])
def test_take_rows_gradient_is_the_same_bits_at_two_threads_as_serial_indexing(shape, n):
    """At two threads, 30 backward passes of take_rows give one gradient, equal bit for bit to plain indexing's
    at one thread (where torch accumulates serially, in index order). Shapes: the step's gathers, at or above
    torch's 32,768-element threshold for parallel accumulation."""
    torch.manual_seed(0)
    table = torch.randn(*shape, requires_grad=True)
    index, grad = torch.randint(0, shape[0], (n,)), torch.randn(n, shape[1])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        table[index].backward(grad)
        serial, table.grad = table.grad.clone(), None
        torch.set_num_threads(2)
        grads = set()
        for _ in range(30):
            take_rows(table, index).backward(grad)
            grads.add(table.grad.numpy().tobytes())
            table.grad = None
    finally:
        torch.set_num_threads(threads)
    assert grads == {serial.numpy().tobytes()}
    assert torch.equal(take_rows(table, index), table[index])


def test_deterministic_mode_sets_torch_cudnn_and_cublas_and_restores_them(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    with deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark) == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with deterministic_mode(False):
        assert torch.are_deterministic_algorithms_enabled() == before[0]
