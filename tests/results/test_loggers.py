"""Live curves (``bench run --log tensorboard,wandb``): what the loggers hold equals the run's own tables, a resumed
run continues them without doubled points, and a logger can neither stop a run nor be asked for uninstalled."""
from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.runs import FLAGS, run_dir_of, stop_at_ask

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread in this module (tests/conftest.py)

HISTORY_TAGS = {"train_loss": "train/epoch_loss", "lr": "train/lr", "zeroshot_top1": "zeroshot/top1",
                "zeroshot_top5": "zeroshot/top5", "mean_per_class_recall": "zeroshot/mean_per_class_recall",
                "epoch_seconds": "time/epoch_seconds", "eval_seconds": "time/eval_seconds",
                "images_per_s": "train/images_per_s"}


def tensorboard_scalars(run_dir: Path) -> dict:
    """tag -> [(step, value)] as TensorBoard's own reader gives them (purged points left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def expected_scalars(run_dir: Path) -> dict:
    """The points the logs must hold: train_log.csv's rows and history.csv's columns, at TensorBoard's float32."""
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    loss, hist = pd.read_csv(run_dir / "train_log.csv"), pd.read_csv(run_dir / "history.csv")
    out = {"train/loss": [(int(s), f32(v)) for s, v in zip(loss["step"], loss["train_loss"])]}
    for column, tag in HISTORY_TAGS.items():
        out[tag] = [(int(s), f32(v)) for s, v in zip(hist["step"], hist[column]) if not np.isnan(v)]
    return out


def test_tensorboard_event_files_hold_the_history_and_the_run_as_hparams(tmp_path, run_cli):
    """Each scalar tag read back with tensorboard's EventAccumulator equals train_log.csv / history.csv, point for
    point; the HParams session and the curves figure are there, and the run says where the logs are, once."""
    out = tmp_path / "results"
    code, stdout, stderr = run_cli("run", *FLAGS, "--out", out, "--log", "tensorboard")
    assert code == 0, stderr
    run_dir = run_dir_of(out)
    scalars, acc = tensorboard_scalars(run_dir)
    for tag, points in expected_scalars(run_dir).items():
        assert scalars[tag] == points, tag
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert scalars["hparams/zeroshot_top1"] == [(16, float(np.float32(row["zeroshot_top1"])))]
    assert set(acc.PluginTagToContent("hparams")) == {"_hparams_/experiment", "_hparams_/session_start_info",
                                                      "_hparams_/session_end_info"}
    assert acc.Tags()["images"] == ["curves"]
    assert stderr.count(f"tensorboard --logdir {out / 'runs'}") == 1


@pytest.mark.parametrize("ask, stop_at", [(6, 6), pytest.param(8, 8, marks=pytest.mark.slow)])  # 8-8: one run more
def test_a_resumed_run_continues_its_tensorboard_curves_without_doubled_points(ask, stop_at, tmp_path, run_cli,
                                                                                 monkeypatch):
    """Stopped at step 6 (a loss read-back) or 8 (the epoch's end, checkpointed before its read-back), with points
    after the checkpoint written as a SIGKILLed process leaves them, then resumed: every tag holds each step
    once, with the values of the finished run's tables, in the same event folder."""
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "results"
    stop_at_ask(monkeypatch, ask)
    code, _, err = run_cli("run", *FLAGS, "--out", out, "--log", "tensorboard")
    assert code == 130 and f"at step {stop_at}, checkpoint saved" in err, err
    monkeypatch.undo()
    run_dir = run_dir_of(out)
    with SummaryWriter(str(run_dir / "tensorboard")) as stale:  # a killed process got further than its checkpoint
        for step in (stop_at, stop_at + 1, 9, 11):
            stale.add_scalar("train/loss", 999.0, step)
        stale.add_scalar("zeroshot/top1", 999.0, 8)
    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    assert code == 0, err
    scalars, _ = tensorboard_scalars(run_dir)
    for tag, points in expected_scalars(run_dir).items():
        assert scalars[tag] == points, tag
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 3


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_tensorboard_added_on_resume_holds_the_whole_run_not_only_the_steps_after_the_checkpoint(tmp_path, run_cli,
                                                                                                  monkeypatch):
    """``--log tensorboard`` given first on ``--resume`` (docs/logging.md allows it): the new event folder gets every
    row the checkpoint holds, so each tag equals train_log.csv / history.csv from step 0; before, it got the rows
    from the checkpoint's step on only, and the curves began part way through the run."""
    out = tmp_path / "results"
    stop_at_ask(monkeypatch, 6)
    code, _, err = run_cli("run", *FLAGS, "--out", out)
    assert code == 130 and "at step 6, checkpoint saved" in err, err
    monkeypatch.undo()
    run_dir = run_dir_of(out)
    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress", "--log", "tensorboard")
    assert code == 0, err
    scalars, _ = tensorboard_scalars(run_dir)
    expected = expected_scalars(run_dir)
    assert expected["train/loss"][0][0] == 3  # a loss row from before the checkpoint
    for tag, points in expected.items():
        assert scalars[tag] == points, tag


def wandb_history(run_folder: Path) -> list[dict]:
    """The history rows of an offline W&B run, read from its ``.wandb`` transaction log (a LevelDB-style log of
    protobuf records behind a 7-byte header); W&B ships no Python reader for it."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_folder.glob("*.wandb")
    raw, pos, block, part, rows = path.read_bytes(), 7, 32768, b"", []
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if length == 0 and kind == 0:  # a block's zero padding
            pos += left
            continue
        part = raw[pos + 7:pos + 7 + length] if kind in (1, 2) else part + raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(part)
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


@pytest.mark.slow  # wandb starts its service process
def test_wandb_offline_writes_its_run_folder_and_a_resume_continues_the_same_run(tmp_path, run_cli, monkeypatch):
    """With WANDB_MODE=offline (no network), the run's W&B folder is inside its run folder, under a W&B run id made
    from the bench run id; its history holds train_log.csv's losses and history.csv's top-1 at their steps. A
    stopped and resumed run opens the same W&B run id again and logs the steps from its checkpoint on."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "results"
    stop_at_ask(monkeypatch, 6)
    code, _, err = run_cli("run", *FLAGS, "--out", out, "--log", "wandb", "--wandb-project", "bench-tests")
    assert code == 130, err
    monkeypatch.undo()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = run_dir_of(out)
    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    assert code == 0, err
    from bench.results.loggers import wandb_run_id

    folders = sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*")))
    assert len(folders) == 2 and all(f.endswith("-" + wandb_run_id(run_dir.name)) for f in folders)
    first, resumed = (wandb_history(Path(f)) for f in folders)
    # the stop came at step 6 before its loss read-back: the resumed run makes that row, then what followed
    assert [r["_step"] for r in first] == [3]
    assert [r["_step"] for r in resumed] == [6, 8, 11, 14, 16]
    logged = {r["_step"]: r for r in first + resumed}
    loss = pd.read_csv(run_dir / "train_log.csv")
    assert {s: logged[s]["train/loss"] for s in loss["step"]} == dict(zip(loss["step"], loss["train_loss"]))
    hist = pd.read_csv(run_dir / "history.csv")
    assert [logged[s]["zeroshot/top1"] for s in hist["step"]] == hist["zeroshot_top1"].tolist()


def test_a_logger_that_fails_mid_run_warns_once_and_the_run_finishes(tmp_path, run_cli, monkeypatch):
    """A TensorBoard writer that starts failing (disk full) is reported once, with its cause, and dropped; the run
    finishes with its runs.csv row and history as without it."""
    from bench.results import loggers

    calls = []

    def full_disk(self, step, values):
        calls.append(step)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loggers.TensorBoardLogger, "scalars", full_disk)
    out = tmp_path / "results"
    code, _, err = run_cli("run", *FLAGS, "--out", out, "--log", "tensorboard")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "the tensorboard logger failed" in warnings[0]
    assert "No space left on device" in warnings[0] and "Traceback" not in err
    assert len(calls) == 1 and len(pd.read_csv(out / "runs.csv")) == 1
    assert len(pd.read_csv(run_dir_of(out) / "history.csv")) == 2


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_failing_logger_keeps_the_checkpoint_of_a_stopped_run_which_resumes_to_its_row(tmp_path, run_cli,
                                                                                          monkeypatch):
    """A logger that fails on every call (TensorBoard on a full disk) while the run is stopped part way: the stop
    still saves last.pt (a logger is called before the checkpoint of each epoch), and the resumed run, its logger
    failing again, finishes with its row and a history of every epoch."""
    from bench.results import loggers

    def full_disk(self, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loggers.TensorBoardLogger, "scalars", full_disk)
    monkeypatch.setattr(loggers.TensorBoardLogger, "finish", full_disk)
    out = tmp_path / "results"
    stop_at_ask(monkeypatch, 10)  # in epoch 2, after epoch 1's history row went to the failing logger
    code, _, err = run_cli("run", *FLAGS, "--out", out, "--log", "tensorboard")
    assert code == 130 and "at step 9, checkpoint saved" in err and "the tensorboard logger failed" in err, err
    run_dir = run_dir_of(out)
    assert (run_dir / "last.pt").is_file() and len(pd.read_csv(run_dir / "history.csv")) == 1
    monkeypatch.undo()  # the resumed run goes on unstopped, its logger failing as before
    monkeypatch.setattr(loggers.TensorBoardLogger, "scalars", full_disk)
    code, _, err = run_cli("run", "--resume", str(run_dir), "--no-progress")
    assert code == 0 and err.count("the tensorboard logger failed") == 1 and "Traceback" not in err, err
    assert len(pd.read_csv(out / "runs.csv")) == 1 and len(pd.read_csv(run_dir / "history.csv")) == 2


@pytest.mark.parametrize("args, message", [
    (["--log", "tensorboard"], "--log tensorboard needs the tensorboard package; install it with: pip install "
                               "'bench[tensorboard]'"),
    (["--log", "wandb"], "--log wandb needs the wandb package; install it with: pip install 'bench[wandb]'"),
    (["--log", "mlflow"], "unknown logger 'mlflow'; --log takes tensorboard, wandb"),
    (["--log", "wandb,wandb"], "--log names 'wandb' twice; name each logger once"),
])
def test_a_logger_asked_for_without_its_package_or_unknown_is_one_line_before_training(args, message, tmp_path,
                                                                                        run_cli, monkeypatch):
    """exit 2, one line naming the extra to install (or the loggers there are), and no run folder written."""
    import importlib.util

    from bench.results import loggers

    real = importlib.util.find_spec  # the patched name is this very function: calling it through the module recursed
    monkeypatch.setattr(loggers.importlib.util, "find_spec",
                        lambda name, *args: None if name in ("tensorboard", "wandb") else real(name, *args))
    out = tmp_path / "results"
    code, _, err = run_cli("run", *FLAGS, "--out", out, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "runs").exists()



def test_a_run_holding_classes_out_logs_seen_unseen_and_harmonic_top1(tmp_path, run_cli):
    """--holdout-classes: the held-out metrics are curves beside top-1, equal to history.csv's, and final metrics
    beside the held-out classes as a hyperparameter, so runs of different splits compare in the UI."""
    out = tmp_path / "results"
    code, _, err = run_cli("run", *FLAGS, "--holdout-classes", "blue,red", "--out", out, "--log", "tensorboard")
    assert code == 0, err
    run_dir = run_dir_of(out)
    scalars, acc = tensorboard_scalars(run_dir)
    hist, row = pd.read_csv(run_dir / "history.csv"), pd.read_csv(out / "runs.csv").iloc[0]
    for column in ("seen_top1", "unseen_top1", "harmonic_top1"):
        assert scalars[f"zeroshot/{column}"] == [(int(s), float(np.float32(v))) for s, v in
                                                 zip(hist["step"], hist[column]) if not np.isnan(v)], column
        assert scalars[f"hparams/{column}"] == [(int(hist["step"].iloc[-1]), float(np.float32(row[column])))]
    started = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"holdout_classes" in started and b"blue,red" in started


def test_the_final_metrics_carry_the_top1_without_test_time_views_only_where_the_row_has_it():
    """An airbench row's zeroshot_top1_no_tta (what its averaged test-time views add) goes to the loggers' final
    metrics beside zeroshot_top1; a row without it (an encoder with no such views: blank) logs no such metric."""
    from bench.results.loggers import RunLoggers

    class Recorder:
        name = "recorder"

        def __init__(self):
            self.finished = []

        def finish(self, step, hparams, metrics, figure):
            self.finished.append(metrics)

    recorder = Recorder()
    loggers = RunLoggers([recorder])
    loggers.finish({"encoder": "airbench", "zeroshot_top1": 0.62, "zeroshot_top1_no_tta": 0.6}, 8, None)
    loggers.finish({"encoder": "modified_resnet", "zeroshot_top1": 0.5, "zeroshot_top1_no_tta": float("nan")}, 8, None)
    with_views, without = recorder.finished
    assert with_views["zeroshot_top1_no_tta"] == 0.6 and with_views["zeroshot_top1"] == 0.62
    assert "zeroshot_top1_no_tta" not in without and without["zeroshot_top1"] == 0.5
