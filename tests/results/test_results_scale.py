"""The result-side commands read each file once, whatever the number of runs: what a file read once per run (or per
configuration) costs grows with the square of a results folder's size (scripts/results_scale.py measures it,
docs/performance.md "Results at scale"). Each test counts the reads with a wrapped reader, not a clock."""
from __future__ import annotations

from collections import Counter

import numpy as np

from bench.results import runs_csv
from bench.results.runs_csv import RUN_COLUMNS, append_row, append_run, read_table
from tests.support.fake_results import make_row, write_results, write_with_predictions


def _counting(monkeypatch, module, name):
    """Wrap ``module.name`` so that its calls are counted (by their first argument) in the Counter returned."""
    calls, real = Counter(), getattr(module, name)

    def wrapper(*args, **kwargs):
        calls[str(args[0]) if args else ""] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_an_append_parses_runs_csv_once_and_hands_its_hook_the_table_a_read_gives(tmp_path, monkeypatch):
    """The table ``append_rows`` hands to ``on_written`` (which rebuilds runs_long.csv) is built from what it wrote,
    not read back, so each run's row costs one parse of the file; it must equal what reading the file gives, with
    damaged rows, a widened header and a repeated run id among the rows."""
    path = tmp_path / "runs.csv"
    for i in range(3):
        append_row(path, make_row(f"r{i}", seed=i), RUN_COLUMNS)
    lines = path.read_text().splitlines(keepends=True)
    damaged = lines[1].replace(",0,", ',"0,', 1).replace("r0", "hand")  # a quote opened by a hand edit
    path.write_text("".join(lines) + damaged + lines[2] + "r9,too,few\n" + lines[3].rstrip("\n"))  # no line end
    seen = []
    parses = _counting(monkeypatch, runs_csv, "_records")
    for row in (make_row("r3", seed=3), make_row("r4", seed=4, a_new_metric=0.5), make_row("r5", seed=5)):
        before = sum(parses.values())
        append_row(path, row, RUN_COLUMNS, on_written=lambda table, p: seen.append(table))
        assert sum(parses.values()) == before + 1
        again = read_table(path)
        assert (seen[-1].header, seen[-1].rows, seen[-1].raw, seen[-1].problems) == \
            (again.header, again.rows, again.raw, again.problems)
    assert len(seen[-1].problems) == 4 and "a_new_metric" in seen[-1].header


def test_a_finished_run_writes_the_same_long_table_as_one_rebuilt_from_the_file(tmp_path):
    """``append_run``'s runs_long.csv, made from the table in hand, is the one a full read of runs.csv makes."""
    from bench.results.run_folder import write_csv
    from bench.results.views import long_table

    for i in range(3):
        # the last with a blank seed: the column reads as floats from then on, in every row of the long table
        append_run(tmp_path, {**make_row(f"r{i}", seed=i), **({"seed": None} if i == 2 else {})})
    written = (tmp_path / "runs_long.csv").read_text()
    write_csv(long_table(read_table(tmp_path / "runs.csv").frame()), tmp_path / "again.csv")
    assert written == (tmp_path / "again.csv").read_text()


def test_a_sweeps_states_read_runs_csv_once_for_the_whole_plan(tmp_path, monkeypatch):
    """--status, --dry-run and the launchers' bookkeeping ask where every planned run stands: runs.csv is read once
    for all of them, not once per run (a few hundred runs over thousands of rows took minutes)."""
    from dataclasses import replace

    from bench.app.sweep import launchers, plan
    from bench.app.sweep.plan import Planned, plan_lines, planned_run_id, run_states
    from bench.config import make_config

    base = make_config("smoke", out=str(tmp_path))
    planned = [Planned(cfg, planned_run_id(cfg)) for cfg in (replace(base, seed=s) for s in range(6))]
    write_results(tmp_path, [make_row("by-hand", seed=1, config_id=planned_run_id(base).split("-")[-2])])
    reads = _counting(monkeypatch, plan, "read_table")
    states = run_states(planned)
    assert [s.name for s in states] == ["to do", "done", "to do", "to do", "to do", "to do"] and len(reads) == 1
    for call in (lambda: plan_lines(planned), lambda: launchers._outcomes_from_files(planned)):
        reads.clear()
        call()
        assert sum(reads.values()) == 1


def test_a_report_reads_each_run_file_once_and_each_runs_predictions_once(tmp_path, monkeypatch):
    """The report's figures, sections and notes share one read of each run's history, train log, confusion and
    per-class files, and its comparison loads the baseline's predictions once, not once per candidate."""
    from bench.results import compare, report
    from bench.results.lookup import load_sources

    labels = np.arange(30) % 3
    rows = [make_row(f"{enc}{seed}", enc, seed, 0.4 + 0.1 * i + 0.01 * seed)
            for i, enc in enumerate("abc") for seed in (0, 1)]
    right = [np.arange(30) < round(30 * r["zeroshot_top1"]) for r in rows]
    results = write_with_predictions(tmp_path / "results", rows, right, labels)
    for name in [n for n in dir(report) if n.startswith("plot_") and n != "plot_time_to_accuracy"]:
        monkeypatch.setattr(report, name, lambda *args, **kwargs: False)  # the drawing is not what is counted
    reads = Counter()
    real = report._read_file

    def read_file(run_dirs, run_id, name):
        reads[(str(run_id), name)] += 1
        return real(run_dirs, run_id, name)

    monkeypatch.setattr(report, "_read_file", read_file)
    loads = _counting(monkeypatch, compare, "load_predictions")
    report.build_report(load_sources([results]), tmp_path / "report")
    assert {name for _, name in reads} == {"history.csv", "train_log.csv", "confusion.csv", "per_class.csv"}
    assert set(reads.values()) == {1}
    assert len(loads) == len(rows) and set(loads.values()) == {1}
