"""A sweep run again with a new --transfer over finished runs: it evaluates their final weights on the datasets
whose transfer rows are missing, exactly as bench eval <run>/last.pt --dataset records them, without training
them again; a row already there is left alone, a run without last.pt is a warning, a run another process holds
is left to it, and --status says what is pending."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import bench.testing
from bench.results.runs_csv import read_runs
from tests.support.plugins import TransferSets
from tests.support.sweep_files import sweep_text

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread in this module (tests/conftest.py)

# wall-clock and provenance columns: what two evaluations of the same weights may differ in
CLOCK = ["time", "command"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """A results folder where a sweep of two seeds (one epoch of the tests' tiny CLIP) finished without
    --transfer; made once for the module, copied by each test."""
    from bench.cli import main
    from bench.host.manager import set_host

    base = tmp_path_factory.mktemp("sweep")
    (base / "s.toml").write_text(sweep_text({"seed": [0, 1]}, epochs=1, out=str(base / "res")))
    previous = set_host(None)
    try:
        main(["sweep", str(base / "s.toml")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        set_host(previous)
    return base / "res"


def _copy(finished: Path, tmp_path: Path, name: str = "res") -> tuple[Path, Path]:
    """A copy of the finished sweep's folder and a sweep file (the same two runs) writing into it."""
    out = tmp_path / name
    shutil.copytree(finished, out)
    path = tmp_path / f"{name}.toml"
    path.write_text(sweep_text({"seed": [0, 1]}, epochs=1, out=str(out)))
    return out, path


def _training_ids(out: Path) -> list[str]:
    return [r for r in pd.read_csv(out / "runs.csv").run_id if "@" not in r]


def test_a_sweep_run_again_with_a_new_transfer_evaluates_its_finished_runs_without_training_them(
        finished_sweep, tmp_path, run_cli):
    """The rerun adds one transfer row per finished run and trains nothing (its training rows and checkpoints as
    they were, no new training row); run once more it does nothing; --status says what is pending."""
    out, path = _copy(finished_sweep, tmp_path)
    before = pd.read_csv(out / "runs.csv")
    runs = _training_ids(out)
    assert len(runs) == 2 == len(before)
    weights = {r: (out / "runs" / r / "last.pt").stat().st_mtime_ns for r in runs}
    with bench.testing.plugin_registered(TransferSets()):
        code, status, err = run_cli("sweep", path, "--transfer", "swatches48", "--status")
        assert code == 0, err
        assert status.splitlines()[-1] == "2 finished runs: transfer to swatches48 to evaluate", status

        code, stdout, err = run_cli("sweep", path, "--transfer", "swatches48")
        assert code == 0, err
        assert " start " not in stdout and " resume " not in stdout  # nothing trained
        assert stdout.count("transfer of finished run") == 2, stdout
        after = pd.read_csv(out / "runs.csv")
        pd.testing.assert_frame_equal(after.iloc[:2][before.columns], before, check_dtype=False)  # untouched
        assert _training_ids(out) == runs
        assert {r: (out / "runs" / r / "last.pt").stat().st_mtime_ns for r in runs} == weights
        added = after.iloc[2:]
        assert sorted(added.run_id) == sorted(f"{r}@swatches48" for r in runs)
        assert sorted(added.source_run_id) == sorted(runs) and set(added.eval_dataset) == {"swatches48"}

        text = (out / "runs.csv").read_text()
        code, stdout, err = run_cli("sweep", path, "--transfer", "swatches48")
        assert code == 0 and "transfer of finished run" not in stdout, (stdout, err)
        assert (out / "runs.csv").read_text() == text  # no duplicate, nothing rewritten
        code, status, err = run_cli("sweep", path, "--transfer", "swatches48", "--status")
        assert code == 0 and "to evaluate" not in status, status


def test_a_backfilled_transfer_row_is_the_row_bench_eval_records(finished_sweep, tmp_path, run_cli, monkeypatch):
    """The same finished run in two copies of the folder: the sweep's transfer row and the one `bench eval
    <run>/last.pt --dataset` records are the same columns and values (the clock and command apart), and so are
    the files of their run folders. With a template set other than the dataset's own, named as bench eval names
    it (+TEMPLATES). The rows are read as bench reads runs.csv, hashes as text."""
    import bench.evaluation.suite

    swept, path = _copy(finished_sweep, tmp_path, "swept")
    evaluated, _ = _copy(finished_sweep, tmp_path, "evaluated")
    run = _training_ids(swept)[0]
    # last.pt holds its run's wall-clock timings and results folder, so its 12-character hash is new on every run
    # of this module and now and then reads as a number ('1234567e9012': digits with at most one 'e', about 1 run
    # in 140): a plain pd.read_csv made it inf in the folder where it was the column's only value and kept it as
    # text where the sweep had also hashed the other run's checkpoint (the likely cause of this test's one failure
    # in a quick-tier run, whose output was lost). That hash, every time, for the run compared:
    digest = bench.evaluation.suite.file_digest
    monkeypatch.setattr(bench.evaluation.suite, "file_digest",
                        lambda p, *a: "1234567e9012" if Path(p).parent.name == run else digest(p, *a))
    with bench.testing.plugin_registered(TransferSets()):
        code, _, err = run_cli("sweep", path, "--transfer", "swatches48@seed")
        assert code == 0, err
        code, _, err = run_cli("eval", evaluated / "runs" / run / "last.pt", "--dataset", "swatches48",
                               "--templates", "seed")
        assert code == 0, err
    run_id = f"{run}@swatches48+seed"
    rows = [read_runs(folder).set_index("run_id").loc[run_id] for folder in (swept, evaluated)]
    assert list(rows[0].index) == list(rows[1].index)
    pd.testing.assert_series_equal(rows[0].drop(CLOCK), rows[1].drop(CLOCK), check_names=False)
    for name in ("per_class.csv", "confusion.csv", "predictions.npy", "config.json"):
        assert (swept / "runs" / run_id / name).read_bytes() == (evaluated / "runs" / run_id / name).read_bytes(), name
    assert rows[0]["checkpoint_sha256"] == "1234567e9012"


def test_a_run_without_last_pt_is_a_warning_and_a_run_another_process_holds_is_left_to_it(
        finished_sweep, tmp_path, run_cli):
    """One run's last.pt deleted: one line naming the run and the fix, and the sweep goes on to the other run (exit
    0). A finished run whose claim another process holds is not evaluated here: two sweeps never both write its
    transfer rows."""
    from bench.claims import Claim
    from bench.results.run_folder import sweep_claim_path

    out, path = _copy(finished_sweep, tmp_path)
    gone, held = _training_ids(out)
    (out / "runs" / gone / "last.pt").unlink()
    claim = Claim(sweep_claim_path(out, held))  # the sweep trained it: its run id is its planned id
    assert claim.acquire()
    with bench.testing.plugin_registered(TransferSets()):
        code, status, err = run_cli("sweep", path, "--transfer", "swatches48", "--dry-run")
        assert code == 0, err
        assert status.splitlines()[-2:] == ["1 finished run without last.pt: transfer to swatches48 cannot be "
                                            "evaluated", "1 finished run: transfer to swatches48 to evaluate"]
        try:
            code, stdout, err = run_cli("sweep", path, "--transfer", "swatches48")
        finally:
            claim.release()
        assert code == 0, err
        warnings = [line for line in err.splitlines() if "warning" in line]
        assert len(warnings) == 1 and gone in warnings[0] and "put its last.pt back" in warnings[0], err
        assert f"{held}: another process holds the run, left to it" in stdout
        assert _training_ids(out) == [gone, held] and len(pd.read_csv(out / "runs.csv")) == 2

        code, stdout, err = run_cli("sweep", path, "--transfer", "swatches48")  # the claim released
        assert code == 0, err
        assert list(pd.read_csv(out / "runs.csv").run_id)[2:] == [f"{held}@swatches48"]


def test_an_adaptive_sweep_evaluates_its_finished_runs_missing_transfers(finished_sweep, tmp_path, run_cli):
    """--until goes through the same plan: its finished seeds get the transfer rows a new --transfer asks for, and
    its --status says so."""
    out, path = _copy(finished_sweep, tmp_path)
    until = ("--until", "final_train_loss:10", "--min-seeds", "2", "--max-seeds", "2")
    with bench.testing.plugin_registered(TransferSets()):
        code, status, err = run_cli("sweep", path, "--transfer", "swatches48", *until, "--status")
        assert code == 0 and "2 finished runs: transfer to swatches48 to evaluate" in status, (status, err)
        code, stdout, err = run_cli("sweep", path, "--transfer", "swatches48", *until)
        assert code == 0, err
    assert sorted(r for r in pd.read_csv(out / "runs.csv").run_id if "@" in r) == sorted(
        f"{r}@swatches48" for r in _training_ids(out))


def test_the_sweeps_own_process_evaluates_whatever_the_launcher(finished_sweep, tmp_path, run_cli, monkeypatch):
    """With --workers the workers only train (their command returns after its share of the plan); the process that
    started them evaluates the finished runs' missing transfers, once."""
    from bench.app.sweep import launchers
    from bench.app.sweep.placement import WORKER_VARIABLE

    launched = []
    monkeypatch.setattr(launchers, "launch", lambda planned, *a, **k: launched.append(k["in_worker"]) or [])
    out, path = _copy(finished_sweep, tmp_path)
    with bench.testing.plugin_registered(TransferSets()):
        monkeypatch.setenv(WORKER_VARIABLE, "0")
        code, stdout, err = run_cli("sweep", path, "--transfer", "swatches48")
        assert code == 0 and "transfer of finished run" not in stdout, (stdout, err)
        assert len(pd.read_csv(out / "runs.csv")) == 2  # a worker records no transfer row
        monkeypatch.delenv(WORKER_VARIABLE)
        code, stdout, err = run_cli("sweep", path, "--transfer", "swatches48", "--workers", "2")
        assert code == 0, err
    assert launched == [True, False] and stdout.count("transfer of finished run") == 2
    assert list(pd.read_csv(out / "runs.csv").run_id)[2:] == [f"{r}@swatches48" for r in _training_ids(out)]
