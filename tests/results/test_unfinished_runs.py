"""bench results, report and compare name the runs of a results folder that have no row in runs.csv (failed,
stopped part way, running now): the tables hold finished runs only, and without a word a reader of a mean ± std
cannot tell 2 seeds of 2 from 2 of 4."""
import json
import shutil

import pytest

from bench.atomic_files import ProcessLock
from bench.results.run_folder import RUNNING_LOCK, failure_record_path
from tests.support.fake_results import make_row, write_results

ERROR = "CUDA out of memory while training epoch 3 " + "x" * 200  # longer than the note keeps


def _folder(tmp_path, name="res"):
    """2 finished runs, 1 stopped part way (a finished run's folder without its result.json, its last.pt kept) and
    1 failed (a failure record as the sweep writes it, beside the run's folder)."""
    folder = write_results(tmp_path / name, [make_row(f"a-cfg-s{s}", "a", s, 0.5 + s / 100) for s in (0, 1)])
    for run_id in ("a-cfg-s0", "a-cfg-s1"):
        (folder / "runs" / run_id / "result.json").write_text("{}")
        (folder / "runs" / run_id / "last.pt").write_bytes(b"not loaded")
    stopped = folder / "runs" / "a-cfg-s2"
    shutil.copytree(folder / "runs" / "a-cfg-s0", stopped)
    (stopped / "result.json").unlink()
    record = failure_record_path(folder, "a-cfg-s3")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"run_id": "a-cfg-s3", "error": ERROR, "type": "RuntimeError",
                                  "time": "2026-01-01T10:00:00"}) + "\n")
    shutil.copytree(folder / "runs" / "a-cfg-s0", folder / "runs" / "a-cfg-s3")
    (folder / "runs" / "a-cfg-s3" / "result.json").unlink()
    return folder


def _says_so(text, folder):
    """The one note: how many runs have no row, the failed one with its error cut short, the stopped one with the
    command that resumes it."""
    assert text.count("have no row in its runs.csv") == 1, text
    assert "2 run(s) of " in text and "1 failed (a-cfg-s3: CUDA out of memory while training epoch 3 xxx" in text
    assert "x" * 100 not in text  # the error is cut to one short line
    assert f"1 stopped part way (a-cfg-s2; resume it with bench run --resume {folder / 'runs' / 'a-cfg-s2'})" in text


def test_results_names_failed_and_stopped_runs_that_have_no_row(tmp_path, run_cli):
    """bench results on a folder with a failed and a stopped run prints one note naming both on stderr; the table
    itself still lists the 2 finished runs only."""
    folder = _folder(tmp_path)
    code, out, err = run_cli("results", folder, "--format", "csv", "--columns", "run_id")
    assert code == 0 and out.split() == ["run_id", "a-cfg-s0", "a-cfg-s1"], err
    assert err.count("bench: note:") == 1
    _says_so(err, folder)


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_report_puts_the_runs_without_a_row_into_its_notes(tmp_path, run_cli):
    """bench report's report.md carries the same note, so a reader of its 2-seed summary knows 2 more ran."""
    folder = _folder(tmp_path)
    code, _, err = run_cli("report", folder, "--out", tmp_path / "report")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    assert "2 runs in 1 configuration(s)" in md
    notes = [line for line in md.splitlines() if line.startswith("> note: ")]
    assert len(notes) == 1, notes
    _says_so(notes[0], folder)


def test_compare_warns_of_the_runs_without_a_row_of_either_side(tmp_path, run_cli):
    """bench compare shows the note among its warnings, naming the side's folder."""
    folder = _folder(tmp_path)
    other = write_results(tmp_path / "other", [make_row(f"b-cfg-s{s}", "b", s, 0.6 + s / 100) for s in (0, 1)])
    code, _, err = run_cli("compare", folder, other, "--metrics", "zeroshot_top1")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "have no row in its runs.csv" in line]
    assert len(notes) == 1 and notes[0].startswith("bench: warning: ") and f"of {folder} have" in notes[0], err
    _says_so(notes[0], folder)


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_folder_whose_runs_all_finished_and_a_run_folder_or_file_given_alone_say_nothing_more(tmp_path, run_cli):
    """Runs with a row, or with a result.json (their row lost: --rebuild's business), are not named; nor is
    anything when the source is a results file or one run folder, which are not scanned."""
    folder = write_results(tmp_path / "res", [make_row(f"a-cfg-s{s}", "a", s, 0.5) for s in (0, 1)])
    shutil.copytree(folder / "runs" / "a-cfg-s0", folder / "runs" / "a-cfg-s9")
    (folder / "runs" / "a-cfg-s9" / "result.json").write_text("{}")
    code, _, err = run_cli("results", folder)
    assert code == 0 and "note" not in err, err
    code, _, err = run_cli("report", folder, "--out", tmp_path / "report")
    assert code == 0 and "> note" not in (tmp_path / "report" / "report.md").read_text(), err
    stopped = _folder(tmp_path, "with-stopped")
    for source in (stopped / "runs.csv", stopped / "runs" / "a-cfg-s0"):
        code, _, err = run_cli("results", source)
        assert code == 0 and "note" not in err, err


def test_a_run_whose_process_holds_its_lock_is_counted_as_running_not_stopped(tmp_path, run_cli):
    """A run in progress (its process holds runs/<id>/.running.lock) is "running now", not offered for --resume;
    once the lock is let go the same folder reads as stopped part way."""
    folder = write_results(tmp_path / "res", [make_row("a-cfg-s0", "a", 0, 0.5)])
    running = folder / "runs" / "a-cfg-s1"
    shutil.copytree(folder / "runs" / "a-cfg-s0", running)
    (running / "last.pt").write_bytes(b"not loaded")
    lock = ProcessLock(running / RUNNING_LOCK)  # taken as bench run takes it
    try:
        code, _, err = run_cli("results", folder)
    finally:
        lock.release()
    assert code == 0 and "1 running now (a-cfg-s1)" in err and "--resume" not in err, err
    code, _, err = run_cli("results", folder)
    assert code == 0 and "1 stopped part way (a-cfg-s1;" in err, err
