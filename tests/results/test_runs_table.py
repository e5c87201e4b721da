"""runs.csv under concurrency and damage: no row lost or torn, no row dropped without a word."""
from __future__ import annotations

import multiprocessing
import time

import pandas as pd
import pytest

from bench.results.runs_csv import RUN_COLUMNS, append_row, append_run, read_runs, read_table
from tests.support.fake_results import make_row, write_results
from tests.support.processes import spawn_bench
from tests.support.runs import FLAGS

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread in this module (tests/conftest.py)


def _row(writer: int, i: int) -> dict:
    return {"run_id": f"w{writer}-r{i}", "encoder": "modified_resnet", "seed": writer, "epochs": i,
            "zeroshot_top1": (writer * 1000 + i) / 1e4, "limit_train": None if i % 2 else 64,
            "command": f"bench run --seed {writer}, with a comma and \"quotes\""}


def _append_many(path, writer, n):
    for i in range(n):
        append_row(path, _row(writer, i), RUN_COLUMNS)


@pytest.mark.slow  # a bench process beside an in-process run
def test_two_runs_at_once_into_one_results_folder_both_rows_intact(tmp_path, run_cli):
    """Two bench runs at once (a child process and this one) into one folder: both rows land, whole, each
    matching its own run folder."""
    out = tmp_path / "shared"
    child = spawn_bench("run", *FLAGS, "--epochs", 1, "--seed", 1, "--no-checkpoints", "--out", out)
    deadline = time.monotonic() + 300
    while not list(out.glob("runs/*/config.json")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the child is training: start ours
    code, _, err = run_cli("run", *FLAGS, "--epochs", 1, "--seed", 0, "--no-checkpoints", "--out", out)
    assert code == 0, err
    _, child_err = child.communicate(timeout=600)
    assert child.returncode == 0, child_err
    table = read_table(out / "runs.csv")
    assert table.problems == {} and len(table.rows) == 2
    runs = table.frame()
    assert sorted(runs["seed"]) == [0, 1]
    assert sorted(runs["run_id"]) == sorted(p.name for p in (out / "runs").iterdir())
    for _, row in runs.iterrows():
        last = pd.read_csv(out / "runs" / row["run_id"] / "history.csv").iloc[-1]
        assert row["zeroshot_top1"] == last["zeroshot_top1"] and row["final_train_loss"] == last["train_loss"]


def test_concurrent_appends_never_lose_or_tear_a_row(tmp_path):
    """Four processes appending 25 rows each at once: all 100 rows present, each field as written."""
    path = tmp_path / "runs.csv"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(path, w, 25)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
        assert w.exitcode == 0
    table = read_table(path)
    assert table.problems == {} and len(table.rows) == 100
    written = {r["run_id"]: r for r in (_row(w, i) for w in range(4) for i in range(25))}
    for fields in table.rows:
        got = dict(zip(table.header, fields))
        want = written.pop(got["run_id"])
        assert got["command"] == want["command"] and float(got["zeroshot_top1"]) == want["zeroshot_top1"]
        assert got["limit_train"] == ("" if want["limit_train"] is None else "64")
    assert written == {}


def test_damaged_and_foreign_rows_are_reported_and_kept(tmp_path, run_cli, capsys):
    """A torn row, a non-numeric metric and a repeated run id stay in the file and are named on stderr."""
    path = tmp_path / "runs.csv"
    append_row(path, _row(0, 0), RUN_COLUMNS)
    append_row(path, _row(0, 1), RUN_COLUMNS)
    header = read_table(path).header
    foreign = dict(zip(header, [""] * len(header)), run_id="hand-edited", zeroshot_top1="great")
    with open(path, "a") as f:
        f.write(",".join(foreign[c] for c in header) + "\n")
        f.write("w0-r0," + ",".join([""] * (len(header) - 1)) + "\n")  # the run id of row 1 again
        f.write("w9-torn,2026-01-01,modified_res")  # a writer that died mid-line
    append_row(path, _row(1, 0), RUN_COLUMNS)
    assert capsys.readouterr().err.count("bench: warning: runs.csv row ") == 3  # the writer reports them too

    table = read_table(path)
    assert [r[0] for r in table.rows] == ["w0-r0", "w0-r1", "hand-edited", "w0-r0", "w9-torn", "w1-r0"]
    assert sorted(table.problems) == [2, 3, 4]
    code, stdout, stderr = run_cli("results", path, "--format", "csv")
    assert code == 0
    assert sorted(pd.read_csv(pd.io.common.StringIO(stdout))["run_id"]) == ["w0-r0", "w0-r1", "w1-r0"]
    warnings = stderr.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("bench: warning: runs.csv row ") for w in warnings)
    assert "row 3 (line 4) (run hand-edited) has zeroshot_top1='great', not a number" in warnings[0]
    assert "row 4 (line 5) repeats run_id w0-r0 of row 1" in warnings[1]
    assert "row 5 (line 6) has 3 fields where the header has" in warnings[2]


def test_a_stray_quote_opened_in_a_row_ends_with_its_line_and_later_rows_survive_appends(tmp_path, capsys):
    """A hand edit that opens a quote and never closes it takes the rest of its line, not every line after it:
    the rows after it stay in the tables, and an append does not seal them into that row's last field."""
    path = tmp_path / "runs.csv"
    for i in range(3):
        append_row(path, _row(0, i), RUN_COLUMNS)
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:lines[1].index(',"bench')] + ',"a note that never closes\n'
    lines[2] = lines[2].replace(",1,", ',"1,', 1)  # and one whose quote swallows its own commas
    path.write_text("".join(lines))
    for appended in range(2):  # as read, and again after an append has written the rows back
        table = read_table(path)
        assert [r[0] for r in table.rows] == ["w0-r0", "w0-r1", "w0-r2"] + [f"w1-r{i}" for i in range(appended)]
        assert list(table.problems) == [1] and "row 2 (line 3) has 4 fields where" in table.problems[1]
        assert dict(zip(table.header, table.rows[0]))["command"] == "a note that never closes"
        append_row(path, _row(1, appended), RUN_COLUMNS)
    assert capsys.readouterr().err.count("runs.csv row 2 (line 3) has 4 fields") == 2


def test_a_quote_left_open_in_a_last_column_does_not_hide_the_rows_after_it_or_later_appends(tmp_path):
    """A quote opened in the last column and never closed spans to the end of the file with the header's width:
    it must still end with its own line, or every row after it (and every run appended later) disappears."""
    path = tmp_path / "runs.csv"
    path.write_text('run_id,zeroshot_top1,note\nr1,0.5,"a\nr2,0.6,b\n')
    append_row(path, {"run_id": "r3", "zeroshot_top1": 0.7, "note": "c"})
    table = read_table(path)
    assert [r[0] for r in table.rows] == ["r1", "r2", "r3"] and not table.problems


def test_a_damaged_rows_text_is_kept_byte_for_byte_by_appends_that_widen_the_header_or_not(tmp_path):
    """Fixing a damaged row by hand must still work after later appends: they copy its text as it is, never
    re-quote its fields (which mangled the quoted "[-1,1]" of a row with a stray quote into one more field)."""
    path = tmp_path / "runs.csv"
    append_row(path, {**_row(0, 0), "normalization": "[-1,1]"}, RUN_COLUMNS)
    good = path.read_text().splitlines(keepends=True)[1]
    damaged = good.replace(",0,0.0,", ',"0,0.0,', 1).replace("w0-r0", "w0-hand")  # a quote opened by a hand edit
    path.write_text(path.read_text() + damaged)
    assert list(read_table(path).problems) == [1]
    append_row(path, _row(0, 1), RUN_COLUMNS)  # same columns
    append_row(path, {**_row(0, 2), "a_new_metric": 1.5}, RUN_COLUMNS)  # a new column: the intact rows widen
    lines = path.read_text().splitlines(keepends=True)
    assert lines[2] == damaged and len(lines) == 5
    assert [r[0] for r in read_table(path).rows] == ["w0-r0", "w0-hand", "w0-r1", "w0-r2"]


def test_rows_already_written_are_copied_field_for_field(tmp_path):
    """Appending never re-types older rows (pandas would turn 64 into 64.0 beside a blank)."""
    path = tmp_path / "runs.csv"
    append_row(path, {"run_id": "a", "limit_train": 64}, RUN_COLUMNS)
    first = path.read_text()
    append_row(path, {"run_id": "b", "limit_train": None, "new_metric": 0.5}, RUN_COLUMNS)
    lines = path.read_text().splitlines()
    assert lines[0] == "run_id,limit_train,new_metric" and first.splitlines()[1] + "," == lines[1]
    assert lines[2] == "b,,0.5"


@pytest.mark.parametrize("widens", [False, True])
def test_a_replacing_append_rewrites_only_the_row_of_its_run_id_in_its_place(tmp_path, widens):
    """replace=True (a run's transfer row written again by the attempt that finishes it) puts the new row where
    the old one was, whether it brings a new column or not; every other row, a damaged one included, stays as
    written, the long twin follows, and without replace the old row stays."""
    from bench.results.runs_csv import long_path

    path = tmp_path / "runs.csv"
    for i in range(3):
        append_row(path, _row(0, i), RUN_COLUMNS)
    path.write_text(path.read_text() + "damaged,row\n")
    new = {**_row(0, 1), "epochs": 7, **({"a_new_metric": 1.5} if widens else {})}
    append_row(path, new, RUN_COLUMNS)
    assert read_table(path).rows[1][read_table(path).header.index("epochs")] == "1"
    before = path.read_text().splitlines()
    append_run(tmp_path, new, replace=True)
    after = path.read_text().splitlines()
    assert [r[0] for r in read_table(path).rows] == ["w0-r0", "w0-r1", "w0-r2", "damaged"]
    assert after[4] == "damaged,row" and (widens or after[:2] + after[3:] == before[:2] + before[3:])
    runs = read_runs(tmp_path).set_index("run_id")
    assert runs.loc["w0-r1", "epochs"] == 7 and runs.loc["w0-r0", "epochs"] == 0
    assert (runs.loc["w0-r1", "a_new_metric"] == 1.5) if widens else "a_new_metric" not in runs.columns
    long = pd.read_csv(long_path(path))
    assert long.loc[long.run_id == "w0-r1", "epochs"].tolist() == [7]  # one metric (zeroshot_top1), the new row's


def test_result_files_get_the_permissions_open_would_give_them(tmp_path):
    """Atomic writes go through mkstemp, which makes files readable by their owner only; a results folder
    on a shared machine must stay readable by whoever may read files its owner creates (the umask)."""
    import os
    import stat

    from bench.atomic_files import atomic_write_text

    plain, atomic = tmp_path / "plain.txt", tmp_path / "atomic.txt"
    plain.write_text("x")
    atomic_write_text(atomic, "x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    append_row(tmp_path / "runs.csv", _row(0, 0), RUN_COLUMNS)
    assert stat.S_IMODE(os.stat(tmp_path / "runs.csv").st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_ids_that_look_like_numbers_read_back_as_the_same_text(tmp_path):
    """A config id is 10 hex digits, all of them decimal about once in a hundred: 0123456789 and 12e4567890 read
    back as written (not 123456789 and a float), so a sweep still finds the runs of that configuration."""
    from bench.app.sweep.plan import finished_keys

    append_run(tmp_path, {"run_id": "0001", "config_id": "0123456789", "seed": 0, "zeroshot_top1": 0.5})
    append_run(tmp_path, {"run_id": "0002", "config_id": "12e4567890", "seed": 1, "zeroshot_top1": 0.5})
    table = read_runs(tmp_path)
    assert table["config_id"].tolist() == ["0123456789", "12e4567890"] and table["run_id"].tolist() == ["0001", "0002"]
    assert finished_keys(tmp_path) == {("0123456789", 0): "0001", ("12e4567890", 1): "0002"}


def test_results_sources_a_long_table_a_dot_run_folder_a_pretrained_runs_folder_and_a_damaged_rows_id(
        tmp_path, run_cli, monkeypatch):
    """runs_long.csv reads back every metric (its run ids repeat by design); a run folder named "." is the folder it
    is; a pretrained evaluation's run folder (result.json, no config.json) is a source; the id of a run whose row
    is damaged is not taken for a longer id it starts; a JSON list of numbers is one line."""
    from tests.support.fake_results import make_row, write_results

    results = write_results(tmp_path / "res", [make_row("a-cfg-s1", seed=1, top1=0.5),
                                               make_row("a-cfg-s10", seed=10, top1=0.9)])
    code, out, err = run_cli("results", results / "runs_long.csv", "--columns", "run_id,zeroshot_top1,zeroshot_top5",
                             "--format", "csv")
    assert code == 0 and "a-cfg-s10,0.9,1.0" in out, err  # csv keeps fractions
    monkeypatch.chdir(results / "runs" / "a-cfg-s1")
    code, out, err = run_cli("results", ".", "--format", "csv")
    assert code == 0 and "a-cfg-s1," in out and "a-cfg-s10" not in out, err
    monkeypatch.chdir(tmp_path)
    (results / "runs" / "a-cfg-s10" / "config.json").unlink()
    (results / "runs" / "a-cfg-s10" / "result.json").write_text('{"run_id": "a-cfg-s10"}')
    code, out, err = run_cli("results", results / "runs" / "a-cfg-s10", "--format", "csv")
    assert code == 0 and "a-cfg-s10" in out, err
    text = (results / "runs.csv").read_text().replace(",0.5,", ",oops,", 1)
    (results / "runs.csv").write_text(text)
    code, out, err = run_cli("results", "--results", results, "a-cfg-s1")
    assert code == 2 and "run 'a-cfg-s1' has no readable row" in err and "a-cfg-s10" not in out
    (tmp_path / "numbers.json").write_text("[1, 2]")
    code, _, err = run_cli("results", tmp_path / "numbers.json")
    assert code == 2 and "is not a results table" in err and "Traceback" not in err


def test_rebuilds_keep_every_backup_and_an_emptied_table_leaves_no_long_twin(tmp_path):
    from bench.results.runs_csv import long_path, rebuild_runs
    from tests.support.fake_results import make_row

    append_run(tmp_path, make_row("r1"))
    path = tmp_path / "runs.csv"
    backups = []
    for bad in ("precious,1\n", "again,2\n"):
        path.write_text(path.read_text() + bad)
        backups.append(rebuild_runs(tmp_path)["backup"])
    assert backups[0] != backups[1] and "precious" in backups[0].read_text() and "again" in backups[1].read_text()
    path.write_text(path.read_text().splitlines()[0] + "\nbroken,row\n")  # no intact row, no record
    assert rebuild_runs(tmp_path)["rows"] == 0 and not long_path(path).exists()


def test_bench_results_folder_rebuild_rebuilds_the_folder_named_not_the_default(tmp_path, run_cli, monkeypatch):
    """`bench results FOLDER --rebuild` rebuilt ./results (the --results default) and printed FOLDER."""
    import json

    from tests.support.fake_results import make_row

    folder = tmp_path / "mine"
    (folder / "runs" / "r1").mkdir(parents=True)
    (folder / "runs" / "r1" / "result.json").write_text(json.dumps(make_row("r1")))
    monkeypatch.chdir(tmp_path)  # where a results/ default would be
    code, out, err = run_cli("results", folder, "--rebuild", "--format", "csv")
    assert code == 0 and "1 added from records" in err and "r1" in out, err
    assert (folder / "runs.csv").is_file() and not (tmp_path / "results").exists()


def test_a_claim_released_while_another_looks_is_not_taken_from_its_next_holder(tmp_path, monkeypatch):
    """A fails to create the claim (B holds it), B releases, C takes it, then A reads it: A must not move C's live
    claim aside (it judged no claim stale)."""
    import bench.claims as claims

    path = tmp_path / "run.claim"
    holder_b, holder_c, taker_a = claims.Claim(path), claims.Claim(path), claims.Claim(path)
    assert holder_b.acquire()
    real_read = claims.read_claim
    calls = []

    def read_between(p):  # B releases and C acquires between A's failed create and A's look at the file
        if not calls:
            calls.append(1)
            holder_b.release()
            result = real_read(p)  # gone: A sees no claim ...
            assert holder_c.acquire()  # ... and C takes it right then
            return result
        return real_read(p)

    monkeypatch.setattr(claims, "read_claim", read_between)
    try:
        assert not taker_a.acquire()
        assert real_read(path)["token"] == holder_c.token
    finally:
        holder_c.release()


def test_known_columns_keep_their_place_whichever_row_brings_them(tmp_path):
    """A run's transfer row (no training columns) can be the first row of a results folder: the run's own row,
    appended next, still finds train_seconds and the other known columns in their fixed place."""
    from tests.support.fake_results import make_row

    append_run(tmp_path, {"run_id": "r0@stl", "config_id": "c", "seed": 0, "zeroshot_top1": 0.3,
                          "eval_dataset": "stl", "source_run_id": "r0"})
    append_run(tmp_path, make_row("r0", train_seconds=12.0, final_train_loss=2.5))
    header = read_table(tmp_path / "runs.csv").header
    known = [c for c in RUN_COLUMNS if c in header]
    assert header[:len(known)] == known and "train_seconds" in known
    rows = read_runs(tmp_path).set_index("run_id")
    assert rows.loc["r0", "train_seconds"] == 12.0 and rows.loc["r0@stl", "zeroshot_top1"] == 0.3
    assert rows.loc["r0@stl", "source_run_id"] == "r0" and pd.isna(rows.loc["r0@stl", "train_seconds"])


def test_a_run_lock_is_seen_by_probes_which_neither_see_each_other_nor_keep_a_trainer_out(tmp_path):
    """The trainer's exclusive lock is seen by held(); probes take a shared lock, so two probes never see each other
    as a trainer, and a trainer starting during a probe waits it out instead of being refused; released, the lock
    file goes."""
    import fcntl
    import os
    import threading

    from bench.atomic_files import ProcessLock

    path = tmp_path / ".running.lock"
    held = ProcessLock(path)
    assert ProcessLock.held(path)
    with pytest.raises(BlockingIOError):
        ProcessLock(path, tries=2)
    held.release()
    assert not path.exists() and not ProcessLock.held(path)

    path.write_text("")  # left by a killed trainer
    probe = os.open(path, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH)  # one probe in progress
    assert not ProcessLock.held(path)  # another probe does not take it for a trainer
    ending = threading.Timer(0.05, os.close, [probe])  # the probe ends while the trainer starts
    ending.start()
    ProcessLock(path).release()
    ending.join()


@pytest.mark.parametrize("error", [BlockingIOError, OSError])
def test_a_run_lock_not_taken_keeps_no_file_open(tmp_path, monkeypatch, error):
    """A lock another process holds, or a file system without flock (ENOLCK): the error comes up (bench run makes
    it one line) and the file opened to take the lock is closed, not left for the garbage collector."""
    import errno
    import fcntl

    from bench.atomic_files import ProcessLock
    from tests.support.runs import files_left_open

    def refuse(fd, op):
        raise error(errno.EAGAIN if error is BlockingIOError else errno.ENOLCK, "refused")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with files_left_open() as left_open:
        with pytest.raises(error):
            ProcessLock(tmp_path / ".running.lock", tries=2)
    assert left_open == []


def test_a_rebuild_checks_its_view_on_the_table_as_it_is_read(tmp_path, run_cli):
    """A table from before transfer rows has no eval_dataset column; reading fills it in (each row evaluated its
    own dataset), so --where eval_dataset=... works with --rebuild as without it."""
    folder = write_results(tmp_path / "res", [make_row("r0"), make_row("r1", seed=1)])
    code, out, err = run_cli("results", folder, "--rebuild", "--where", "eval_dataset=synthetic", "--format", "csv")
    assert code == 0, err
    assert out.count("\nr") == 2
