"""Exact resume, signals, NaN losses, gradient clipping, determinism and safe checkpoint loading."""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import signal
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from tests.support.fake_results import OLD_RESULTS
from tests.support.processes import free_port, spawn_bench
from tests.support.runs import (FLAGS, assert_same_run, finished_run, history, run_dir_of, snapshot,
                                stop_at_ask)

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread in this module (tests/conftest.py)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The uninterrupted run every resumed run must reproduce exactly."""
    out = finished_run(tmp_path_factory.getbasetemp())
    return out, run_dir_of(out)


def _wait_for(path, proc, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not path():
        assert proc.poll() is None, f"bench exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the run to reach a checkpoint"
        time.sleep(0.02)


def _assert_same_as_baseline(baseline, out):
    return assert_same_run(baseline[0], out)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A results folder whose run was SIGKILLed between two checkpoints (tests resume copies of it)."""
    out = tmp_path_factory.mktemp("killed") / "results"
    proc = spawn_bench("run", *FLAGS, "--checkpoint-every", "3", "--out", out)
    _wait_for(lambda: list(out.glob("runs/*/last.pt")), proc)
    time.sleep(random.uniform(0.0, 0.2))  # anywhere between two checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    run_dir = run_dir_of(out)
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    assert saved["step"] < 16, "the kill did not land before the end of training"
    assert not (run_dir / "result.json").exists() and not (out / "runs.csv").exists()
    return out


@pytest.mark.slow  # a SIGKILLed bench process
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(baseline, killed, tmp_path, run_cli):
    """A run killed with SIGKILL between checkpoints resumes to the very same metrics, history and weights."""
    out = tmp_path / "results"
    shutil.copytree(killed, out)
    code, stdout, stderr = run_cli("run", "--resume", "latest", "--out", out, "--no-progress")
    assert code == 0, stderr
    row = _assert_same_as_baseline(baseline, out)
    assert row["resumes"] == 1


def _resume_rank(rank, port, run_dir):
    """One of two gloo ranks, with the variables torchrun sets, resuming a run saved by one process."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2", BENCH_LOAD_PLUGINS="")
    torch.set_num_threads(1)
    from bench.cli import main
    from bench.distributed.world import shutdown

    try:
        main(["run", "--resume", run_dir, "--no-progress"])
    except SystemExit as exc:  # a failed rank must die, so that spawn stops the other rank too
        raise RuntimeError(f"rank {rank}: bench run --resume exited {exc.code}") from None
    shutdown()


@pytest.mark.slow  # a SIGKILLed bench process, two gloo ranks
def test_a_run_saved_by_one_process_resumes_under_two_ranks(baseline, killed, tmp_path):
    """Resumed under 2 gloo ranks with the global batch kept (8 = 2 x 4), the run ends as the uninterrupted
    single-process run: one row, the same zero-shot metrics, the loss within fp32 reduction-order noise."""
    import torch.multiprocessing as mp

    out = tmp_path / "results"
    shutil.copytree(killed, out)
    mp.spawn(_resume_rank, args=(free_port(), str(run_dir_of(out))), nprocs=2)
    rows = pd.read_csv(out / "runs.csv")
    assert len(rows) == 1
    row, base = rows.iloc[0], pd.read_csv(baseline[0] / "runs.csv").iloc[0]
    assert (row["world_size"], row["batch_size"], row["global_batch_size"], row["resumes"]) == (2, 4, 8, 1)
    for column in ("zeroshot_top1", "zeroshot_top5", "mean_per_class_recall"):
        assert row[column] == base[column]
    ours, theirs = history(run_dir_of(out)), history(baseline[1])
    assert ours["train_loss"].tolist() == pytest.approx(theirs["train_loss"].tolist(), rel=1e-5)
    # the images trained before the kill count once, not once per rank that resumed
    saved = [torch.load(d / "last.pt", weights_only=True)["progress"]["train_images"] for d in (run_dir_of(out),
                                                                                               baseline[1])]
    assert saved[0] == saved[1] == 128


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_sigint_saves_a_checkpoint_and_exits_cleanly(baseline, tmp_path, run_cli):
    """Ctrl-C stops after the current step with a checkpoint and one line saying how to resume; resuming is exact.

    The run is in this process (a real SIGINT to it, from a thread, once training is under way), so a
    signal that came too late lands in a harmless handler instead of stopping pytest.
    """
    out, late = tmp_path / "interrupted", []

    def interrupt_when_training():
        deadline = time.monotonic() + 300
        while not list(out.glob("runs/*/last.pt")) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, lambda *_: late.append("SIGINT after the run"))
    sender = threading.Thread(target=interrupt_when_training, daemon=True)
    sender.start()
    try:
        code, _, stderr = run_cli("run", *FLAGS, "--checkpoint-every", "5", "--out", out)
    finally:
        sender.join(timeout=300)
        signal.signal(signal.SIGINT, previous)
    assert not late and code == 130, stderr
    said = [line for line in stderr.strip().splitlines() if not line.startswith("bench: epoch ")]  # epoch log lines
    assert len(said) == 1 and "Traceback" not in stderr
    assert "checkpoint saved; continue with: bench run --resume" in stderr
    run_dir = run_dir_of(out)
    step = torch.load(run_dir / "last.pt", weights_only=True)["step"]
    assert f"at step {step}," in stderr and step < 16

    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    assert code == 0, err
    assert "bench: epoch 2/2, loss " in err  # without bars, each finished epoch is one log line
    _assert_same_as_baseline(baseline, out)


# the first stop in the quick tier; the other places (slow) are each a stopped and a resumed run more
@pytest.mark.parametrize("ask, stop_at", [(4, 4), *(pytest.param(*case, marks=pytest.mark.slow)
                                                   for case in [(6, 6), (8, 8), (12, 11)])])
def test_a_stop_at_any_step_resumes_to_the_uninterrupted_run(ask, stop_at, baseline, tmp_path, run_cli, monkeypatch):
    """A stop honoured after step 4 (between loss read-backs), 6 (at one), 8 (the first epoch's last step: its
    checkpoint precedes that epoch's closing read-back) or 11 (at a read-back of epoch 2): the resumed run has
    the uninterrupted run's train_log.csv, history, predictions and weights."""
    stop_at_ask(monkeypatch, ask)
    out = tmp_path / "stopped"
    code, _, err = run_cli("run", *FLAGS, "--out", out)
    assert code == 130 and f"at step {stop_at}, checkpoint saved" in err, err
    monkeypatch.undo()
    code, _, err = run_cli("run", "--resume", str(run_dir_of(out)), "--no-progress")
    assert code == 0, err
    _assert_same_as_baseline(baseline, out)


@pytest.mark.slow  # a stopped run resumed at two threads (7-20 s on two busy cores)
def test_a_resume_at_another_thread_count_says_it_may_not_be_exact(tmp_path, run_cli, monkeypatch):
    """Exactness holds at one thread count (docs/robustness.md): CPU kernels split their sums by it. A run stopped at
    one thread and resumed at two is allowed (as under another number of ranks) but says, in one warning line, that
    it may end a few last bits away and how to resume exactly; a resume at the saving count says nothing."""
    stop_at_ask(monkeypatch, 4)
    out = tmp_path / "stopped"
    code, _, err = run_cli("run", *FLAGS, "--out", out)
    assert code == 130, err
    monkeypatch.undo()
    run_dir = run_dir_of(out)
    assert torch.load(run_dir / "last.pt", weights_only=True)["torch_threads"] == 1
    kept = tmp_path / "kept"
    shutil.copytree(out, kept)
    torch.set_num_threads(2)
    try:
        code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    finally:
        torch.set_num_threads(1)
    assert code == 0, err
    said = ("bench: warning: this run was trained with torch_threads=1 and continues with 2: CPU kernels split "
            "their work by thread count, so it may end a few last bits away from the run that never stopped; to "
            "continue exactly, resume it at 1 (OMP_NUM_THREADS=1)")
    assert [line for line in err.splitlines() if "warning" in line] == [said]
    code, _, err = run_cli("run", "--resume", str(run_dir_of(kept)), "--no-progress")
    assert code == 0 and "warning" not in err, err


def _stopped(run_cli, monkeypatch, out, *flags):
    """The run of FLAGS (and ``flags``) stopped after its 4th step, in results folder ``out``; its run folder."""
    stop_at_ask(monkeypatch, 4)
    code, _, err = run_cli("run", *FLAGS, *flags, "--out", out)
    assert code == 130, err
    monkeypatch.undo()
    return run_dir_of(out)


def _edit_last(run_dir, edit):
    payload = torch.load(run_dir / "last.pt", weights_only=True)
    edit(payload)
    torch.save(payload, run_dir / "last.pt")


def _as_if_auto(payload):  # the config a GPU's run under --precision auto saves; last.pt records what auto gave
    payload["config"]["precision"] = "auto"


@pytest.mark.slow  # bf16 on the CPU, a stopped and a resumed run
def test_a_run_that_trained_in_bf16_under_auto_resumes_in_bf16_on_a_cpu(tmp_path, run_cli, monkeypatch):
    """--precision auto is bf16 on a GPU with bf16 and fp32 on a CPU, and the device is not in the run's id. A run
    that trained in bf16 under auto (a bf16 run whose saved config says auto, as a GPU's does) resumed on a CPU
    continues in the bf16 its last.pt records, not in the fp32 auto means here: it ends as the bf16 run that never
    stopped, bit for bit, and its row and checkpoints say bf16."""
    code, _, err = run_cli("run", *FLAGS, "--precision", "bf16", "--out", tmp_path / "whole")
    assert code == 0, err
    run_dir = _stopped(run_cli, monkeypatch, tmp_path / "cut", "--precision", "bf16")
    assert torch.load(run_dir / "last.pt", weights_only=True)["precision"] == "bf16"
    _edit_last(run_dir, _as_if_auto)
    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    assert code == 0 and "note" not in err, err
    row = assert_same_run(tmp_path / "whole", tmp_path / "cut")
    assert row["precision"] == "bf16"
    assert [torch.load(run_dir / name, weights_only=True)["precision"] for name in ("last.pt", "best.pt")] == \
        ["bf16", "bf16"]


def _cpu_autocast_without_fp16(real):
    """torch.autocast as a torch whose CPU autocast does not take float16: it warns and turns itself off."""
    def autocast(device_type, dtype=None, enabled=True, **kwargs):
        if device_type == "cpu" and dtype == torch.float16 and enabled:
            warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.")
            return real(device_type, dtype=torch.bfloat16, enabled=False, **kwargs)
        return real(device_type, dtype=dtype, enabled=enabled, **kwargs)
    return autocast


def test_runs_precision_asks_torch_whether_autocast_takes_the_dtype(monkeypatch):
    """A CPU runs fp32 and bf16 under every torch bench supports; fp16 only where its autocast takes float16: a torch
    whose CPU autocast turns itself off for it (with a warning) would train fp32 under fp16's name, so it counts as
    unable, and the probe's warning is not shown."""
    from bench.engine.build import runs_precision

    assert runs_precision("fp32", "cpu") and runs_precision("bf16", "cpu")
    monkeypatch.setattr(torch, "autocast", _cpu_autocast_without_fp16(torch.autocast))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not runs_precision("fp16", "cpu")
        assert runs_precision("bf16", "cpu")


@pytest.mark.slow  # bf16 on the CPU, a stopped run and two resumes
def test_a_recorded_precision_this_device_cannot_run_is_refused_and_nothing_is_lost(tmp_path, run_cli, monkeypatch):
    """A run that trained in fp16 under auto (as on a GPU without bf16), resumed where torch's CPU autocast does not
    take fp16, would continue in fp32: the resume stops with one line, exit 2, naming both precisions and the fix,
    and writes nothing; the same last.pt then resumes in fp16 where fp16 runs, to the uninterrupted fp16 run."""
    code, _, err = run_cli("run", *FLAGS, "--precision", "fp16", "--out", tmp_path / "whole")
    assert code == 0, err
    run_dir = _stopped(run_cli, monkeypatch, tmp_path / "cut", "--precision", "fp16")
    _edit_last(run_dir, _as_if_auto)
    before = snapshot(tmp_path)
    monkeypatch.setattr(torch, "autocast", _cpu_autocast_without_fp16(torch.autocast))
    code, out, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    monkeypatch.undo()
    assert code == 2 and out == "" and "Traceback" not in err, err
    said = (f"bench: error: {run_dir / 'last.pt'} trained in fp16 (--precision auto where it started), which this "
            f"cpu device cannot run, and continuing in fp32 would change what the run computes; resume it on a device "
            f"that runs fp16, or start it again with bench run --precision fp32")
    assert err.splitlines() == [said]
    assert snapshot(tmp_path) == before
    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    assert code == 0, err
    assert assert_same_run(tmp_path / "whole", tmp_path / "cut")["precision"] == "fp16"


def test_a_fresh_run_in_a_precision_this_device_cannot_run_is_refused_before_anything_is_written(tmp_path, run_cli,
                                                                                                   monkeypatch):
    """Where torch's CPU autocast does not take fp16, ``bench run --precision fp16`` would train fp32 under fp16's
    name: it stops with one line, exit 2, naming the precision and the fix, and leaves the results folder as it was;
    auto and fp32 still run there."""
    monkeypatch.setattr(torch, "autocast", _cpu_autocast_without_fp16(torch.autocast))
    before = snapshot(tmp_path)
    code, out, err = run_cli("run", *FLAGS, "--precision", "fp16", "--out", tmp_path / "results")
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.splitlines() == [f"bench: error: --precision fp16 does not run on this cpu device (torch "
                                f"{torch.__version__}'s autocast there does not take it); use --precision auto, which "
                                f"picks one this device runs, or fp32"]
    assert snapshot(tmp_path) == before
    # that auto runs needs no more than one short epoch (the later flags override FLAGS')
    code, _, err = run_cli("run", *FLAGS, "--epochs", "1", "--limit-train", "16", "--limit-test", "16",
                           "--out", tmp_path / "results")
    assert code == 0, err


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_last_pt_without_a_recorded_precision_resumes_as_before_with_a_note(baseline, tmp_path, run_cli,
                                                                              monkeypatch):
    """A last.pt written before bench recorded the precision resumes as it did: auto resolves on this device (fp32
    on a CPU) and the run ends as the uninterrupted one, with one note line saying the precision it started in is
    not known."""
    run_dir = _stopped(run_cli, monkeypatch, tmp_path / "cut")
    _edit_last(run_dir, lambda payload: payload.pop("precision"))
    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    assert code == 0, err
    said = (f"bench: note: {run_dir / 'last.pt'} does not say which precision the run trained in (it was written "
            f"before bench recorded it); --precision auto continues in fp32 on this device, which may not be the one "
            f"it started in")
    assert [line for line in err.splitlines() if "note" in line] == [said]
    assert _assert_same_as_baseline(baseline, tmp_path / "cut")["precision"] == "fp32"


def _as_7bd3d82(payload):
    """``payload`` shaped as bench 7bd3d82 saved it (the fixture's config.json names that config's fields): no
    recorded precision or thread count, --prewarm-steps under its old name warm_up, and none of the options since."""
    old = json.loads(next((OLD_RESULTS / "runs").glob("*/config.json")).read_text())
    payload.pop("precision"), payload.pop("torch_threads")
    cfg = payload["config"]
    cfg["warm_up"] = cfg.pop("prewarm_steps")
    for key in [k for k in cfg if k not in old]:
        del cfg[key]


@pytest.mark.slow  # a stopped and a resumed run
def test_a_last_pt_of_bench_7bd3d82_resumes_to_the_run_that_never_stopped(baseline, tmp_path, run_cli, monkeypatch):
    """A run an older bench left stopped continues after an upgrade, bit for bit (checked by hand against 7bd3d82's
    own SIGKILLed runs, whose 18 MB last.pt is too big to commit); its --warm-up steps prewarm as they did."""
    run_dir = _stopped(run_cli, monkeypatch, tmp_path / "cut")
    _edit_last(run_dir, lambda payload: (_as_7bd3d82(payload), payload["config"].update(warm_up=2)))
    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    assert code == 0 and "Traceback" not in err, err
    row = _assert_same_as_baseline(baseline, tmp_path / "cut")
    assert row["prewarm_seconds"] > 0


@pytest.mark.slow  # fp16 on the CPU, a stopped and a resumed run
def test_an_fp16_last_pt_without_a_recorded_precision_resumes_in_fp16(tmp_path, run_cli, monkeypatch):
    """Of a last.pt written before the record, fp16 is known all the same: it alone holds a grad scaler's state. A
    run that trained in fp16 under auto (as on a GPU without bf16) resumes on a CPU in fp16, with no note; before,
    auto gave fp32 here and the scaler's state was refused as damage."""
    run_dir = _stopped(run_cli, monkeypatch, tmp_path / "cut", "--precision", "fp16")
    _edit_last(run_dir, lambda payload: (_as_if_auto(payload), payload.pop("precision")))
    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    assert code == 0 and "note" not in err, err
    assert pd.read_csv(tmp_path / "cut" / "runs.csv").iloc[0]["precision"] == "fp16"


class _Crash(BaseException):
    """The process dying: nothing of the run's own handles it."""


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_crash_between_an_epochs_two_checkpoints_resumes_to_the_uninterrupted_best_pt(baseline, tmp_path, run_cli,
                                                                                          monkeypatch):
    """Epoch 2 is the baseline's best: its end writes best.pt and last.pt. The process dies once the first of the
    two is on disk, whichever the run writes first; --resume then ends with the uninterrupted run's best.pt (and
    the rest of its files), never with epoch 1's best.pt or none."""
    from bench.engine.checkpoint import CheckpointSaver

    writes = []

    def dying(name):
        original = getattr(CheckpointSaver, name)

        def save(self, row=None):
            if row is not None and row.get("epoch") == 2:
                writes.append(name)
                if len(writes) == 2:
                    self.wait()  # the first of the epoch's two files landed
                    raise _Crash
            return original(self) if row is None else original(self, row)
        return save

    for name in ("save_best", "save_last"):
        monkeypatch.setattr(CheckpointSaver, name, dying(name))
    out = tmp_path / "crashed"
    with pytest.raises(_Crash):
        run_cli("run", *FLAGS, "--checkpoint-every", "3", "--out", out)
    monkeypatch.undo()
    assert sorted(writes) == ["save_best", "save_last"]
    code, _, err = run_cli("run", "--resume", "latest", "--out", out, "--no-progress")
    assert code == 0, err
    _assert_same_as_baseline(baseline, out)
    best, ours = torch.load(baseline[1] / "best.pt", weights_only=True), torch.load(run_dir_of(out) / "best.pt",
                                                                                   weights_only=True)
    assert best["epoch"] == ours["epoch"] == 2
    assert [k for k in best["model"] if not torch.equal(best["model"][k], ours["model"][k])] == []


def test_same_seed_gives_identical_history_and_records_provenance(baseline, tmp_path, run_cli):
    """Two runs with one seed on CPU give identical history tables; each row says how it was made."""
    out = tmp_path / "again"
    code, _, err = run_cli("run", *FLAGS, "--out", out)
    assert code == 0, err
    row = _assert_same_as_baseline(baseline, out)
    assert row["seed"] == 0 and row["resumes"] == 0
    for column in ("torch_version", "numpy_version", "python_version", "bench_version", "git_commit"):
        assert isinstance(row[column], str) and row[column] and row[column] != "unknown", column
    assert row["git_dirty"] in (True, False)


NAN_PLUGIN = '''
import torch
from bench import hookimpl


class NanAtStep(torch.nn.Module):
    """Pools and projects; its features are NaN at one training step (a fault injected on purpose)."""

    def __init__(self, embed_dim, step):
        super().__init__()
        self.proj = torch.nn.Linear(3, embed_dim)
        self.step, self.calls = step, 0

    def forward(self, x):
        out = self.proj(x.mean(dim=(2, 3)))
        if self.training:
            self.calls += 1
            if self.calls == self.step:
                out = out * float("nan")
        return out


@hookimpl
def register_encoders(register):
    register("nan_at_step", lambda embed_dim, image_size, step=6: NanAtStep(embed_dim, step), "NaN at one step")
'''


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, run_cli):
    """A NaN loss stops the run with the step in one line; last.pt stays the finite state from before it. Resumed or
    evaluated without the plugin that registered its encoder, the run's error says to load that plugin."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nan_encoder.py").write_text(NAN_PLUGIN)
    flags = [f for f in FLAGS if f not in ("--encoder-opt", "width=8")]
    out = tmp_path / "out"
    code, _, err = run_cli("--plugins-dir", plugins, "run", *flags, "--encoder", "nan_at_step", "--encoder-opt",
                           "step=6", "--checkpoint-every", "2", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "became nan at step 6 (epoch 1, batch 6 of 8)" in err
    run_dir = run_dir_of(out)
    assert f"{run_dir / 'last.pt'} (step 4)" in err
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    assert saved["step"] == 4
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())
    assert not (out / "runs.csv").exists()
    # the same stopped run, in a process that did not load the plugin: the way out is to load it
    from bench.host.manager import set_host

    previous = set_host(None)
    try:
        for command in (["run", "--resume", "latest", "--out", out], ["eval", run_dir / "last.pt"]):
            code, _, err = run_cli(*command)
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert "unknown encoder 'nan_at_step'" in err and f"the run in {run_dir / 'last.pt'} used it" in err
            assert "--plugins-dir DIR" in err
    finally:
        set_host(previous)
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 4


def test_max_grad_norm_bounds_the_gradient_the_optimizer_sees():
    """--max-grad-norm clips the global gradient norm before the optimizer step; without it the norm is larger."""
    from bench.clip.model import create_model
    from bench.engine.build import build_engine
    from bench.engine.recipe import TrainRecipe

    def grad_norm(max_grad_norm):
        torch.manual_seed(0)
        model = create_model(embed_dim=16, transformer_width=16, transformer_heads=2, transformer_layers=1,
                             encoder_opts={"width": 8})
        recipe = TrainRecipe(lr=1e-3, weight_decay=0.0, max_grad_norm=max_grad_norm, compact_embedding=False,
                             text_mode="unique")
        engine = build_engine(model, torch.randint(1, 400, (10, 6)), recipe)
        images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
        engine.step(images, labels, labels)
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))

    assert grad_norm(None) > 1e-2
    assert grad_norm(1e-2) <= 1e-2 * (1 + 1e-5)


class _RunsCode:
    """Unpickling this calls os.system: the planted payload of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant(path, marker, config=None):
    torch.save({"model": {"w": _RunsCode(marker)}, "config": config or {}}, path)


@pytest.mark.parametrize("command", ["eval", "predict", "resume"])
def test_planted_pickle_is_refused_and_its_code_never_runs(command, baseline, tmp_path, run_cli):
    """A checkpoint whose pickle calls os.system is refused with one line by every loader; the call never happens."""
    control, marker = tmp_path / "control-ran", tmp_path / "bench-ran"
    _plant(tmp_path / "control.pt", control)
    torch.load(tmp_path / "control.pt", weights_only=False)  # an unsafe load does run it: the plant is real
    assert control.exists()

    if command == "resume":
        import shutil

        out = tmp_path / "results"
        shutil.copytree(baseline[0], out)
        (out / "runs.csv").unlink()  # unfinished again, so resume would load last.pt
        run_dir = run_dir_of(out)
        (run_dir / "result.json").unlink()
        _plant(run_dir / "last.pt", marker)
        args = ["run", "--resume", str(run_dir)]
    else:
        _plant(tmp_path / "evil.pt", marker)
        from PIL import Image

        Image.new("RGB", (32, 32)).save(tmp_path / "img.png")
        args = ["eval", tmp_path / "evil.pt"] if command == "eval" else ["predict", tmp_path / "evil.pt", tmp_path / "img.png"]
    code, _, err = run_cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "was refused" in err and "posix.system" in err
    assert not marker.exists()


def test_checkpoints_hold_every_rng_state_and_load_weights_only(baseline):
    """last.pt carries optimizer, scheduler, all RNG states and the data position, readable with weights_only."""
    ckpt = torch.load(run_dir_of(baseline[0]) / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "rng", "progress", "config", "code"} <= ckpt.keys()
    assert {"python", "numpy", "torch", "loader", "cuda"} <= ckpt["rng"].keys()
    assert ckpt["epoch"] == 2 and ckpt["step"] == 16 and ckpt["progress"]["step_in_epoch"] == 0
    assert math.isclose(ckpt["progress"]["best"]["zeroshot_top1"], max(r["zeroshot_top1"] for r in ckpt["history"]))


def _write_batches(folder, make_entry):
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        with open(folder / name, "wb") as f:
            pickle.dump(make_entry(i), f, protocol=2)


def test_dataset_pickles_load_arrays_but_never_run_code(tmp_path, run_cli):
    """CIFAR-10's python batches load through an unpickler that allows arrays only; a planted call is refused."""
    from bench.data.datasets import load_cifar10

    rng = np.random.default_rng(0)
    good = tmp_path / "good"
    _write_batches(good / "cifar-10-batches-py", lambda i: {
        "batch_label": f"batch {i}", "labels": [int(v) for v in rng.integers(0, 10, 4)],
        "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "filenames": [f"img{j}.png" for j in range(4)]})
    train = load_cifar10("train", good, download=False)
    assert train.images.shape == (20, 32, 32, 3) and len(train.labels) == 20

    marker = tmp_path / "ran"
    _write_batches(tmp_path / "evil" / "cifar-10-batches-py", lambda i: {"data": _RunsCode(marker), "labels": []})
    code, _, err = run_cli("run", *FLAGS, "--dataset", "cifar10", "--data-dir", tmp_path / "evil",
                           "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unsupported GLOBAL posix.system" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow  # a whole run and a stopped and resumed one
def test_alternating_flips_resume_exactly(tmp_path, run_cli, monkeypatch):
    """--flip alternate draws the first epoch's flips once, at start: a run stopped in its second epoch and resumed
    equals the uninterrupted run bit for bit (history, loss log, metrics, predictions, weights)."""
    flags = [*FLAGS, "--flip", "alternate"]
    code, _, err = run_cli("run", *flags, "--out", tmp_path / "whole")
    assert code == 0, err
    stop_at_ask(monkeypatch, 12)
    code, _, err = run_cli("run", *flags, "--out", tmp_path / "stopped")
    assert code == 130 and "at step 11, checkpoint saved" in err, err
    monkeypatch.undo()
    code, _, err = run_cli("run", "--resume", str(run_dir_of(tmp_path / "stopped")), "--no-progress")
    assert code == 0, err
    assert_same_run(tmp_path / "whole", tmp_path / "stopped")


@pytest.mark.slow  # two whole runs and a stopped and resumed one per case
@pytest.mark.parametrize("optimizer, groups", [("sgd", 3), ("muon", 4)])
def test_mixed_optimizer_and_lookahead_resume_exactly(tmp_path, run_cli, monkeypatch, optimizer, groups):
    """Momentum buffers, the per-group lrs and the lookahead's slow copy are in last.pt: a run on --optimizer sgd
    (or muon) with --lookahead stopped at step 11 (after the pull at step 10, before those at 15 and at the end)
    and resumed equals the uninterrupted run bit for bit."""
    flags = [*FLAGS, "--optimizer", optimizer, "--lr", "0.05", "--text-lr", "1e-3", "--norm-lr-scale", "4",
             "--lookahead", "0.9"]
    code, _, err = run_cli("run", *flags, "--out", tmp_path / "whole")
    assert code == 0, err
    assert pd.read_csv(tmp_path / "whole" / "runs.csv")["optimizer"].tolist() == [optimizer]  # what --lr meant
    stop_at_ask(monkeypatch, 12)
    code, _, err = run_cli("run", *flags, "--out", tmp_path / "stopped")
    assert code == 130 and "at step 11, checkpoint saved" in err, err
    monkeypatch.undo()
    checkpoint = torch.load(run_dir_of(tmp_path / "stopped") / "last.pt", weights_only=True)
    assert len(checkpoint["lookahead"]["slow"]) > 0 and len(checkpoint["optimizer"]["param_groups"]) == groups
    code, _, err = run_cli("run", "--resume", str(run_dir_of(tmp_path / "stopped")), "--no-progress")
    assert code == 0, err
    assert_same_run(tmp_path / "whole", tmp_path / "stopped")
