"""--target and --stop-at-target on real (tiny, synthetic) runs: the target reached early is recorded on the
training clock, a run stopped there is the uninterrupted run cut at that epoch, stopping and resuming it is exact,
sweep files take both keys, the configuration id follows what is trained, and bad values are one line."""
from __future__ import annotations

import shutil
import signal
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

from bench.config import make_config
from bench.errors import BenchError
from bench.evaluation.target import check_target_measured, parse_target, target_columns
from bench.results.columns import config_key
from bench.results.predictions import load_predictions
from tests.support.processes import spawn_bench
from tests.support.runs import (
    FLAGS,
    assert_same_run,
    finished_run,
    history,
    run_dir_of,
    snapshot,
    stop_at_ask,
    weights,
)
from tests.support.sweep_files import sweep_text

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread in this module (tests/conftest.py)

# FLAGS over 4 epochs of 8 steps. On the synthetic set this run's zero-shot top-1 is 0.14, 0.20, 0.13, 0.19 at
# epochs 1-4 (one CPU thread): 0.2 is first reached at epoch 2 of 4, and epoch 2 is also the best epoch.
FLAGS4 = [("4" if FLAGS[i - 1] == "--epochs" else f) for i, f in enumerate(FLAGS)]
TARGET = "zeroshot_top1=0.2"
TARGET_EPOCH = 2


def _bench(*args):
    from bench.cli import main
    from bench.host.manager import set_host

    previous = set_host(None)
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), f"bench {' '.join(map(str, args))} exited {exc.code}"
    finally:
        set_host(previous)


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """All 4 epochs, the target only observed."""
    out = tmp_path_factory.mktemp("observed") / "results"
    _bench("run", *FLAGS4, "--target", TARGET, "--out", out)
    return out


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The same run with --stop-at-target, uninterrupted."""
    out = tmp_path_factory.mktemp("stopped") / "results"
    _bench("run", *FLAGS4, "--target", TARGET, "--stop-at-target", "--out", out)
    return out


def _row(out) -> pd.Series:
    rows = pd.read_csv(out / "runs.csv")
    assert len(rows) == 1
    return rows.iloc[0]


def test_a_target_reached_early_is_recorded_on_the_training_clock(observed):
    """The row names the target, the first epoch that reached it and the training seconds to that epoch's end
    (the sum of its and the earlier epochs' epoch_seconds); the run still trains every epoch."""
    row, hist = _row(observed), pd.read_csv(run_dir_of(observed) / "history.csv")
    assert hist["epoch"].tolist() == [1, 2, 3, 4]
    first = int(hist.loc[hist["zeroshot_top1"] >= 0.2, "epoch"].iloc[0])
    assert first == TARGET_EPOCH < 4, "the synthetic run no longer reaches 0.2 before its last epoch: adjust TARGET"
    assert (row["target"], bool(row["reached_target"]), row["epochs_to_target"]) == (TARGET, True, TARGET_EPOCH)
    assert row["time_to_target_seconds"] == round(float(hist["epoch_seconds"].iloc[:TARGET_EPOCH].sum()), 3)
    assert row["time_to_target_seconds"] < row["train_seconds"]
    assert not bool(row["stop_at_target"]) and row["epochs"] == 4


def test_stop_at_target_equals_the_uninterrupted_history_cut_at_that_epoch(observed, stopped):
    """Stopped at epoch 2 of 4: history and loss log are the uninterrupted run's first 2 epochs (the learning
    rate too: the schedule stays the 4-epoch one), and the row, last.pt and predictions.npy are epoch 2's."""
    full, cut = run_dir_of(observed), run_dir_of(stopped)
    pd.testing.assert_frame_equal(history(cut), history(full).iloc[:TARGET_EPOCH], check_exact=True)
    log_full = pd.read_csv(full / "train_log.csv")
    pd.testing.assert_frame_equal(pd.read_csv(cut / "train_log.csv"),
                                  log_full[log_full["epoch"] <= TARGET_EPOCH], check_exact=True)
    row, full_row, epoch2 = _row(stopped), _row(observed), history(full).iloc[TARGET_EPOCH - 1]
    for column in ("zeroshot_top1", "zeroshot_top5", "mean_per_class_recall"):
        assert row[column] == epoch2[column]
    assert row["final_train_loss"] == epoch2["train_loss"]
    assert (row["epochs_to_target"], bool(row["reached_target"]), bool(row["stop_at_target"])) == (TARGET_EPOCH, True, True)
    # on the clock: exactly the stopped run's training time; train_eval_seconds adds the one evaluation that showed it
    assert row["time_to_target_seconds"] == row["train_seconds"]
    eval_seconds = pd.read_csv(cut / "history.csv")["eval_seconds"].iloc[-1]
    assert row["train_eval_seconds"] == pytest.approx(row["time_to_target_seconds"] + eval_seconds, abs=1.5e-3)
    # the weights: epoch 2's, which the uninterrupted run kept as its best
    assert full_row["best_epoch"] == TARGET_EPOCH
    assert torch.load(cut / "last.pt", weights_only=True)["epoch"] == TARGET_EPOCH
    ours, best = weights(cut / "last.pt"), weights(full / "best.pt")
    assert [k for k in ours if not torch.equal(ours[k], best[k])] == []
    labels, top1 = load_predictions(cut / "predictions.npy")
    assert float(np.mean(labels == top1)) == pytest.approx(row["zeroshot_top1"], abs=1e-7)
    assert row["config_id"] != full_row["config_id"]  # a run cut at its target is another configuration


@pytest.mark.slow  # a stopped and a resumed run
def test_a_stopped_run_at_target_resumes_bit_identical(stopped, tmp_path, run_cli, monkeypatch):
    """Stopped (as by Ctrl-C) at step 11, in the target epoch, then resumed: the very run that was never stopped."""
    stop_at_ask(monkeypatch, 12)  # 8 steps and an epoch end, then step 11 (the loop asks after every step)
    out = tmp_path / "results"
    code, _, err = run_cli("run", *FLAGS4, "--target", TARGET, "--stop-at-target", "--out", out)
    assert code == 130 and "at step 11, checkpoint saved" in err, err
    monkeypatch.undo()
    code, _, err = run_cli("run", "--resume", run_dir_of(out), "--no-progress")
    assert code == 0, err
    row = assert_same_run(stopped, out)
    assert row["resumes"] == 1 and row["epochs_to_target"] == TARGET_EPOCH


@pytest.mark.slow  # a SIGKILLed bench process
def test_a_sigkilled_stop_at_target_run_resumes_bit_identical(stopped, tmp_path, run_cli):
    """SIGKILL between checkpoints (every 3 steps), then --resume: bit-identical to the uninterrupted run."""
    out = tmp_path / "results"
    proc = spawn_bench("run", *FLAGS4, "--target", TARGET, "--stop-at-target", "--checkpoint-every", "3",
                       "--out", out)
    deadline = time.monotonic() + 300
    while not list(out.glob("runs/*/last.pt")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert torch.load(run_dir_of(out) / "last.pt", weights_only=True)["step"] < 8 * TARGET_EPOCH
    code, _, err = run_cli("run", "--resume", "latest", "--out", out, "--no-progress")
    assert code == 0, err
    assert assert_same_run(stopped, out)["resumes"] == 1


@pytest.mark.slow  # a stopped and a resumed run
def test_a_run_stopped_after_its_target_epoch_finishes_on_resume_without_training(stopped, tmp_path, run_cli,
                                                                                    monkeypatch):
    """Stopped after the target epoch's checkpoint, before its row: the resumed run sees the target in the saved
    history, trains no further step and writes the uninterrupted run's files and row."""
    from bench.app.run import Run

    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "finish", killed)
    out = tmp_path / "results"
    code, _, err = run_cli("run", *FLAGS4, "--target", TARGET, "--stop-at-target", "--out", out)
    assert code == 130 and not (out / "runs.csv").exists(), err
    monkeypatch.undo()
    code, _, err = run_cli("run", "--resume", run_dir_of(out), "--no-progress")
    assert code == 0 and "bench: epoch" not in err, err  # no epoch trained on resume
    assert assert_same_run(stopped, out)["epochs_to_target"] == TARGET_EPOCH


def test_a_target_never_reached_leaves_the_row_blank_and_trains_every_epoch():
    """Unreached: reached_target False, no epoch or time (the report censors the run at its train_seconds)."""
    rows = [{"epoch": e, "epoch_seconds": 1.5, "zeroshot_top1": v} for e, v in ((1, 0.3), (2, float("nan")), (3, 0.5))]
    assert target_columns("zeroshot_top1=0.6", True, rows) == {
        "target": "zeroshot_top1=0.6", "stop_at_target": True, "reached_target": False, "epochs_to_target": None,
        "time_to_target_seconds": None}
    assert target_columns("zeroshot_top1=0.5", False, rows)["time_to_target_seconds"] == 4.5  # epochs 1-3
    assert target_columns(None, False, rows) == {}


def test_reaching_compares_at_the_precision_the_evaluation_computes():
    """9400 hits of 10000 is float32(0.94), below the float64 0.94: it reaches zeroshot_top1=0.94; 9399 does not."""
    target = parse_target("zeroshot_top1=0.94")
    assert target.reached_by(float(torch.ones(9400).sum() / 10000)) and float(torch.tensor(9400 / 10000)) < 0.94
    assert not target.reached_by(float(torch.ones(9399).sum() / 10000))
    assert not target.reached_by(float("nan")) and not target.reached_by(None)
    assert parse_target(" zeroshot_top5 = .5 ").text == "zeroshot_top5=0.5"


@pytest.mark.parametrize("metric, labels, needle", [
    ("unseen_top1", [0, 1, 1], "none of the 3 test images is of a held-out class"),
    ("harmonic_top1", [0, 1, 1], "none of the 3 test images is of a held-out class"),
    ("seen_top1", [2, 2], "none of the 2 test images is of a trained class"),
    ("harmonic_top1", [2, 2], "none of the 2 test images is of a trained class"),
])
def test_a_held_out_target_the_test_split_cannot_measure_is_refused(metric, labels, needle):
    """With class 2 held out, a test split (cut by --limit-test) without an image of the target's group leaves the
    metric blank at every epoch: never reached, and --stop-at-target would train to the end."""
    with pytest.raises(BenchError, match=f"--target {metric}: {needle}, so {metric} is blank at every epoch"):
        check_target_measured(metric, labels, [2])
    check_target_measured(metric, [0, 2], [2])  # both groups present: measured
    check_target_measured("zeroshot_top1", [0, 1], [2])


def test_the_configuration_id_holds_the_target_only_where_it_stops_the_run():
    """An observed target changes nothing trained: same id as no target, whatever the target. Stopping at it
    does: another id, and another for each target."""
    def key(**kw):
        return config_key(make_config("smoke", dataset="synthetic", **kw))

    plain = key()
    assert key(target="zeroshot_top1=0.5") == key(target="zeroshot_top1=0.9") == plain
    stopping = key(target="zeroshot_top1=0.5", stop_at_target=True)
    assert stopping != plain and stopping != key(target="zeroshot_top1=0.9", stop_at_target=True)
    # how often the target is checked decides the epoch a stopping run ends at; an observing run trains the same
    assert key(target="zeroshot_top1=0.5", stop_at_target=True, eval_every=2) != stopping
    assert key(eval_every=2) == plain


def test_a_held_out_accuracy_is_a_target_of_a_run_that_holds_classes_out(tmp_path, run_cli):
    """With --holdout-classes every evaluated epoch records seen_top1, unseen_top1 and harmonic_top1, so a target
    may name them: the row's epoch and time are those of the first epoch whose held-out accuracy reaches it. The
    run's line names the held-out classes and their metrics."""
    out = tmp_path / "res"
    code, printed, err = run_cli("run", *FLAGS, "--holdout-classes", "2", "--target", "seen_top1=0.1", "--out", out)
    assert code == 0, err
    row, hist = _row(out), pd.read_csv(run_dir_of(out) / "history.csv")
    # the run's line says what it held out and how it did there, not only its top-1 over every class
    assert (f"; held out {row['unseen_classes']}: seen top-1 {row['seen_top1']:.4f}, unseen top-1 "
            f"{row['unseen_top1']:.4f}, harmonic {row['harmonic_top1']:.4f}; target seen_top1=0.1") in printed
    reaching = hist.loc[hist["seen_top1"] >= 0.1, "epoch"]
    assert len(reaching), "the synthetic run no longer reaches seen_top1 0.1: lower the target"
    first = int(reaching.iloc[0])
    assert (row["target"], bool(row["reached_target"]), row["epochs_to_target"]) == ("seen_top1=0.1", True, first)
    assert row["time_to_target_seconds"] == round(float(hist["epoch_seconds"].iloc[:first].sum()), 3)


def sweep(out, target=None) -> str:
    """The runs of FLAGS as a sweep file's [base], with ``target``."""
    return sweep_text(preset="reference", epochs=4, limit_test=64, batch_size=8, cutout=8, device="cpu", log_every=3,
                      embed_dim=32, target=target, out=out)


def test_sweep_files_take_target_and_stop_at_target(tmp_path, run_cli):
    """`target = "..."` and `stop_at_target = true` set the runs' options; stopping makes its own run id."""
    path = tmp_path / "s.toml"
    path.write_text(sweep(tmp_path / "res", " zeroshot_top1 = .2")
                    + "[grid]\nstop_at_target = [false, true]\n")
    code, out, err = run_cli("sweep", path, "--dry-run")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-1].startswith("2 runs: 2 to do") and "stop_at_target=False" in lines[0] and "stop_at_target=True" in lines[1]
    from bench.app.sweep.points import configs_from_file
    from bench.app.sweep.toml_file import read_sweep_file
    from bench.cli import _sweep_run_params
    from bench.cli import run as run_command

    params = _sweep_run_params()
    defaults = run_command.make_context("run", []).params  # bench run's defaults, as click parses them
    flags = {p.name: defaults[p.name] for p in params}
    cfgs, _ = configs_from_file(read_sweep_file(path), flags, set(), params)
    assert [(c.target, c.stop_at_target) for c in cfgs] == [(TARGET, False), (TARGET, True)]


@pytest.mark.slow  # a sweep that trains
def test_a_sweep_stops_its_runs_at_their_target(stopped, tmp_path, run_cli):
    """A sweep file's stop_at_target run is the `bench run --stop-at-target` run (same history and weights)."""
    path = tmp_path / "s.toml"
    path.write_text(sweep(tmp_path / "res", TARGET) + "[[include]]\nstop_at_target = true\n")
    code, _, err = run_cli("sweep", path)
    assert code == 0, err
    row = assert_same_run(stopped, tmp_path / "res")
    assert row["epochs_to_target"] == TARGET_EPOCH and bool(row["stop_at_target"])


RUN = ["run", *FLAGS, "--out", "{out}"]
# (id, command line, what the one-line message must say, the sweep file's one run (its [[include]]) or None)
CASES = [
    ("percent", RUN + ["--target", "zeroshot_top1=94"], "metrics are fractions in (0, 1], not percent; write 0.94", None),
    ("zero", RUN + ["--target", "zeroshot_top1=0"], "the value must be a fraction in (0, 1]", None),
    ("negative", RUN + ["--target", "zeroshot_top1=-0.5"], "the value must be a fraction in (0, 1]", None),
    ("nan", RUN + ["--target", "zeroshot_top1=nan"], "the value must be a fraction in (0, 1]", None),
    ("word", RUN + ["--target", "zeroshot_top1=high"], "'high' is not a number", None),
    ("no-equals", RUN + ["--target", "0.94"], "is not METRIC=VALUE; write it like --target zeroshot_top1=0.94", None),
    ("no-value", RUN + ["--target", "zeroshot_top1="], "is not METRIC=VALUE", None),
    ("final-only-metric", RUN + ["--target", "probe_top1=0.5"],
     ("'probe_top1' is not evaluated every epoch; a target names one of zeroshot_top1, zeroshot_top5, "
      "mean_per_class_recall"), None),
    ("unknown-metric", RUN + ["--target", "accuracy=0.5"], "'accuracy' is not evaluated every epoch", None),
    ("held-out-without-holdout", RUN + ["--target", "seen_top1=0.5"],
     "--target seen_top1: held-out accuracies are evaluated only with --holdout-classes", None),
    ("stop-without-target", RUN + ["--stop-at-target"], "--stop-at-target stops at a target: add --target", None),
    # the first 8 test images of the synthetic set hold no red one: unseen_top1 would be blank at every epoch
    ("unseen-without-a-held-out-test-image", RUN + ["--holdout-classes", "red", "--limit-test", "8", "--target",
                                                    "unseen_top1=0.5", "--stop-at-target"],
     "--target unseen_top1: none of the 8 test images is of a held-out class", None),
    ("resume-with-target", ["run", "--resume", "{run_dir}", "--target", "zeroshot_top1=0.5"], "drop --target", None),
    ("sweep-flag-percent", ["sweep", "--encoder", "modified_resnet", *FLAGS, "--target", "zeroshot_top1=94",
                            "--out", "{out}"], "not percent", None),
    ("sweep-file-number", ["sweep", "{tmp}/s.toml"], "--target '0.94' is not METRIC=VALUE", 'target = 0.94\n'),
    ("sweep-file-stop-word", ["sweep", "{tmp}/s.toml"], "stop_at_target = 'yes' must be true or false",
     'target = "zeroshot_top1=0.5"\nstop_at_target = "yes"\n'),
    ("sweep-file-stop-alone", ["sweep", "{tmp}/s.toml"], "--stop-at-target stops at a target",
     "stop_at_target = true\n"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder with a finished run, which the bad commands must leave as it is."""
    out = tmp_path_factory.mktemp("untouched") / "results"
    shutil.copytree(finished_run(tmp_path_factory.getbasetemp()), out)
    return out


@pytest.mark.parametrize("args, expected, body", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_target_options_exit_2_with_one_line_and_write_nothing(args, expected, body, results, tmp_path, run_cli):
    if body is not None:
        base = sweep(results)
        (tmp_path / "s.toml").write_text(base + "[[include]]\n" + textwrap.dedent(body))
    before = snapshot(results), snapshot(tmp_path)
    values = {"out": results, "tmp": tmp_path, "run_dir": run_dir_of(results)}
    code, stdout, stderr = run_cli(*[a.format(**values) for a in args])
    assert code == 2, stderr
    assert stderr.startswith("bench: error: ") and stderr.count("\n") == 1, stderr
    assert expected in stderr, stderr
    assert stdout == "" and (snapshot(results), snapshot(tmp_path)) == before
