"""Time to target in the result tables: the log-rank test, Kaplan-Meier medians, MLPerf's olympic mean and
validity, each checked against values worked out by hand below; bench compare's and bench report's time-to-target
sections and the time-to-accuracy figure."""
import io
import math
import shutil

import pandas as pd
import pytest

from bench.results.compare import compare, render_markdown
from bench.results.lookup import Source, load_source
from bench.results.run_folder import write_csv
from bench.results.survival import km_median, logrank, mlperf_valid, olympic_mean
from tests.support.fake_results import make_row, record_eval_every, write_results

# A small table of times to target with censoring, the worked example of the tests below. A run that never
# reached the target is censored at its training time (here 4, 5 and 6 s).
#   group A (baseline):  reached at 1, 2, 3 s; one run trained 4 s without reaching it
#   group B (candidate): reached at 2, 4 s;     two runs trained 5 and 6 s without reaching it
A = ([1.0, 2.0, 3.0, 4.0], [True, True, True, False])
B = ([2.0, 4.0, 5.0, 6.0], [True, True, False, False])


def test_log_rank_matches_the_test_worked_out_by_hand():
    """At each time someone reached the target: n at risk (time >= t; the run censored at 4 s is still at risk at
    4 s), n_B of them in B, d reaching then, d_B of them in B. E_B = n_B d / n,
    V = n_B (n - n_B) d (n - d) / (n^2 (n - 1)):

        t   n  n_B  d  d_B   E_B    V
        1   8   4   1   0    1/2    4*4*1*7 / (64*7) = 1/4
        2   7   4   2   1    8/7    4*3*2*5 / (49*6) = 20/49
        3   5   3   1   0    3/5    3*2*1*4 / (25*4) = 6/25
        4   4   3   1   1    3/4    3*1*1*3 / (16*3) = 3/16

    O_B = 2, E_B = 1/2 + 8/7 + 3/5 + 3/4 = 419/140, so O_B - E_B = -139/140;
    V = (4900 + 8000 + 4704 + 3675) / 19600 = 21279/19600;
    chi2 = (139/140)^2 / V = 19321/19600 * 19600/21279 = 19321/21279 = 0.90798, and with 1 degree of freedom
    p = P(chi2_1 > 0.90798) = erfc(sqrt(0.90798 / 2)) = 0.3406: B reaches it later, but 4 runs a side show nothing.
    """
    chi2, p = logrank(*A, *B)
    assert chi2 == pytest.approx(19321 / 21279, rel=1e-12)
    assert p == pytest.approx(math.erfc(math.sqrt(19321 / 21279 / 2)), rel=1e-12)
    assert round(p, 4) == 0.3406
    assert logrank(*B, *A) == pytest.approx((chi2, p), rel=1e-12)  # symmetric in the groups
    try:  # scipy >= 1.11 has the test too: the same p from an independent implementation
        from scipy.stats import CensoredData
        from scipy.stats import logrank as scipy_logrank
    except ImportError:
        return
    data = [CensoredData.right_censored(t, [not r for r in hit]) for t, hit in (A, B)]
    assert scipy_logrank(*data).pvalue == pytest.approx(p, rel=1e-9)


def test_log_rank_is_undefined_when_no_run_reached_and_sees_a_clear_difference():
    assert all(math.isnan(v) for v in logrank([5.0, 6.0], [False, False], [5.0, 7.0], [False, False]))
    # every baseline run reaches it at 1-5 s, no candidate run in 10 s: the test is sure they differ
    _, p = logrank([1.0, 2.0, 3.0, 4.0, 5.0], [True] * 5, [10.0] * 5, [False] * 5)
    assert p < 0.01


def test_kaplan_meier_median_respects_censoring():
    """A: S(1) = 3/4, S(2) = 3/4 * 2/3 = 1/2 exactly, so the midpoint to the next reaching time: (2 + 3) / 2 = 2.5.
    B: S(2) = 3/4, S(4) = 3/4 * 2/3 = 1/2 and no later reaching time: half never reached it, median unknown.
    C: reached at 1, 3, 4 s, a run censored at 2 s: S(1) = 3/4, S(3) = 3/4 * 1/2 = 3/8 < 1/2, so 3 s; dropping
    the censored run (median of 1, 3, 4) happens to agree, counting it as never reaching (1, 3, 4, inf) gives 3.5."""
    assert km_median(*A) == 2.5
    assert math.isnan(km_median(*B))
    assert km_median([1.0, 2.0, 3.0, 4.0], [True, False, True, True]) == 3.0
    assert km_median([3.0, 1.0, 2.0, 5.0], [True] * 4) == 2.5  # without censoring: the ordinary median
    assert km_median([3.0, 1.0, 2.0], [True] * 3) == 2.0


def test_olympic_mean_drops_the_fastest_and_slowest_of_five_and_counts_a_miss_as_slowest():
    """MLPerf: (11 + 12 + 13) / 3 = 12 from 10..13 and 30; a run that never reached is the slowest, dropped;
    two such runs leave one among the averaged: no score, and the result is invalid."""
    assert olympic_mean([10, 11, 12, 13, 30], [True] * 5) == (12.0, 3)
    assert olympic_mean([10, 11, 12, 13, 7], [True] * 4 + [False]) == (12.0, 3)  # censored at 7 s, still slowest
    value, used = olympic_mean([10, 11, 12, 8, 9], [True] * 3 + [False] * 2)
    assert math.isnan(value) and used == 3
    assert olympic_mean([1, 2, 3, 6], [True] * 4) == (3.0, 4)  # fewer than 5 runs: nothing dropped
    assert math.isnan(olympic_mean([1, 2, 3, 6], [True] * 3 + [False])[0])
    assert mlperf_valid([True] * 4 + [False]) and not mlperf_valid([True] * 3 + [False] * 2)


def _rows(label, encoder, times, hits, target="zeroshot_top1=0.9"):
    """Runs as bench writes them: a reached run has its time to target, one that never reached has blanks there
    and its training time in train_seconds."""
    return [make_row(f"{label}{i}", encoder, i, 0.9 if hit else 0.8, train_seconds=t + (0 if not hit else 10),
                     target=target, stop_at_target=False, reached_target=hit, epochs_to_target=2 if hit else None,
                     time_to_target_seconds=t if hit else None)
            for i, (t, hit) in enumerate(zip(times, hits))]


def test_compare_tests_time_to_target_with_censored_runs(tmp_path):
    """The worked example through bench compare, read back from runs.csv: counts, Kaplan-Meier medians, the
    log-rank p, and the censoring time of an unreached run taken from its train_seconds. A run without a target
    in the table is left out of the time to target and does not break the reading of reached_target."""
    folder = write_results(tmp_path / "res", _rows("a", "a", *A) + _rows("b", "b", *B) + [make_row("plain", "a", 9)],
                           run_folders=False)
    table = load_source(str(folder)).table
    result = compare([Source("base", table[table["encoder"] == "a"]), Source("cand", table[table["encoder"] == "b"])])
    (row,) = result.targets.to_dict("records")
    assert (row["target"], row["a_runs"], row["a_reached"], row["b_runs"], row["b_reached"]) == ("zeroshot_top1=0.9",
                                                                                                  4, 3, 4, 2)
    assert row["a_median"] == 2.5 and math.isnan(row["b_median"]) and row["test"] == "log-rank"
    assert row["p_value"] == pytest.approx(math.erfc(math.sqrt(19321 / 21279 / 2)), rel=1e-12)
    assert row["significant"] is False
    text = render_markdown(result)
    assert "### time to target" in text and "3/4 reached; median 2.50 s; mean not reached" in text
    assert "2/4 reached; median not reached; mean not reached" in text and "| 0.341 " in text


def test_compare_with_an_equivalence_test_keeps_its_time_to_target_section(tmp_path, run_cli):
    """--equivalence adds its columns to the metric rows; the time-to-target section stays in the markdown."""
    write_results(tmp_path / "res", _rows("a", "a", *A) + _rows("b", "b", *B), run_folders=False)
    code, out, err = run_cli("compare", tmp_path / "res", "--split-by", "encoder", "--equivalence",
                             "zeroshot_top1:0.2")
    assert code == 0, err
    assert "### time to target" in out and "| 0.341 " in out and "equivalen" in out


def test_compare_flags_mlperf_invalid_results_and_warns_about_targets_set_on_one_side():
    """Five runs with two misses: invalid for MLPerf; a target only one side set is named in a warning."""
    base = _rows("a", "a", [10, 11, 12, 13, 14], [True] * 5)
    cand = _rows("b", "b", [10, 11, 12, 20, 20], [True] * 3 + [False] * 2)
    other = _rows("c", "b", [5], [True], target="zeroshot_top1=0.5")
    result = compare([Source("base", pd.DataFrame(base)), Source("cand", pd.DataFrame(cand + other))])
    (row,) = result.targets.to_dict("records")
    assert row["a_olympic_mean"] == 12.0 and row["a_mlperf_valid"] and not row["b_mlperf_valid"]
    assert "invalid (MLPerf: > 1 run did not reach)" in render_markdown(result)
    assert any("zeroshot_top1=0.5" in w and "only one of" in w for w in result.warnings)


def test_compare_warns_when_the_times_to_target_come_from_runs_evaluated_at_different_cadences(tmp_path):
    """A target is seen only at evaluated epochs, so a run evaluated every 5 epochs reports a later time to target
    than the same run evaluated every epoch. runs.csv has no column for --eval-every (it is in the config id only
    with --stop-at-target), so compare reads it from the run folders' config.json and says when the runs whose
    times it compares differ in it; at one cadence it says nothing."""
    def results(name, every):
        rows = _rows(name, name, [1.0, 2.0, 3.0], [True] * 3)
        folder = write_results(tmp_path / f"{name}{every}", rows)
        record_eval_every(folder, rows, every)
        return load_source(str(folder))

    def warnings(every_a, every_b):
        a, b = results("a", every_a), results("b", every_b)
        return [w for w in compare([Source("base", a.table, a.run_dirs), Source("cand", b.table, b.run_dirs)],
                                   on=["dataset"]).warnings if "--eval-every" in w]

    (warning,) = warnings(1, 5)
    assert "base and cand" in warning and "every 1 and 5 epochs" in warning
    assert warnings(2, 2) == []


def test_compare_prints_each_warning_once_however_many_pairs_raise_it(tmp_path, run_cli):
    """Two template sets a side are two joined pairs; in each, the runs were evaluated at the same two cadences and
    one side's runs set a target the other's did not. Each pair finds the same two warnings: bench compare prints
    each once, in the order found."""
    for name, encoder, every, targets in (("base", "a", 1, ["zeroshot_top1=0.9"]),
                                          ("cand", "b", 2, ["zeroshot_top1=0.9", "zeroshot_top1=0.5"])):
        rows = [{**row, "run_id": f"{name}-{templates}-{row['run_id']}", "seed": row["seed"] + 2 * i,
                 "templates": templates, "eval_templates": templates, "config_id": f"cfg-{encoder}-{templates}"}
                for templates in ("seed", "plain") for i, target in enumerate(targets)
                for row in _rows(f"t{i}-", encoder, [1.0, 2.0], [True] * 2, target=target)]
        record_eval_every(write_results(tmp_path / name, rows), rows, every)
    code, _, err = run_cli("compare", tmp_path / "base", tmp_path / "cand")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("bench: warning: ")]
    assert len(warnings) == len(set(warnings)) == 2, err
    assert "only one of" in warnings[0] and "every 1 and 2 epochs" in warnings[1]


def test_report_warns_in_its_time_to_target_section_when_the_runs_were_evaluated_at_different_cadences(tmp_path):
    """runs.csv has no column for --eval-every, so runs evaluated every 1 and every 2 epochs are one configuration
    of the report, and their median pools times measured at different resolutions: the section says so, naming the
    cadences and the configuration that pools them. Across configurations it says so too; at one cadence, or where
    the folders keep no config.json (the cadence is not known), it says nothing."""
    from bench.results.report import _time_to_target_section, label_configs

    def section(name, cadences, encoders=("a", "a"), configs=True):
        """The warnings of the section for two runs each at ``cadences[i]``, encoder ``encoders[i]``."""
        folder = tmp_path / name
        for i, (every, encoder) in enumerate(zip(cadences, encoders)):
            rows = _rows(f"{name}{i}_", encoder, [1.0, 2.0], [True] * 2)
            write_results(folder, rows)
            record_eval_every(folder, rows, every)
        if not configs:
            for path in (folder / "runs").glob("*/config.json"):
                path.unlink()
        source = load_source(str(folder))
        return [line for line in _time_to_target_section(label_configs(source.table), source.run_dirs)
                if line.startswith("> warning:")]

    (warning,) = section("mixed", [1, 2])
    assert "every 1 and 2 epochs (--eval-every; a pools runs of different cadences)" in warning
    assert "a run sees its target only at an evaluated epoch" in warning and "different resolutions" in warning
    (warning,) = section("across", [1, 2], encoders=("a", "b"))
    assert "every 1 and 2 epochs (--eval-every):" in warning  # each configuration at one cadence: none pools
    assert section("equal", [2, 2]) == []
    assert section("unknown", [1, 2], configs=False) == []


def test_compare_csv_lists_time_to_target_rows_after_the_metrics(tmp_path, run_cli):
    write_results(tmp_path / "res", _rows("a", "a", *A) + _rows("b", "b", *B), run_folders=False)
    code, out, err = run_cli("compare", tmp_path / "res", "--split-by", "encoder", "--format", "csv")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    targets = table[table["metric"] == "time_to_target_seconds"]
    assert len(targets) == 1 and targets["p_value"].iloc[0] == pytest.approx(0.3406, abs=5e-5)


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_report_summarises_time_to_target_and_draws_time_to_accuracy(tmp_path, run_cli):
    """report.md gets a time-to-target table per configuration and lists time_to_accuracy.png; a run whose folder
    is gone is left out of the figure with a note naming it. The section reads each run's --eval-every from its
    folder and warns that a and b were evaluated at different cadences."""
    rows = _rows("a", "a", *A) + _rows("b", "b", *B)
    folder = write_results(tmp_path / "res", rows)
    record_eval_every(folder, rows[:4], 1)
    record_eval_every(folder, rows[4:], 2)
    for row in rows:  # histories with the per-epoch training seconds the figure puts on its x axis
        write_csv(pd.DataFrame({"epoch": [1, 2], "step": [4, 8], "train_loss": [3.0, 2.5], "epoch_seconds": [1.0, 1.5],
                                "zeroshot_top1": [0.5, row["zeroshot_top1"]]}),
                  folder / "runs" / row["run_id"] / "history.csv")
    shutil.rmtree(folder / "runs" / "b3")
    code, _, err = run_cli("report", folder, "--out", tmp_path / "report")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Time to target" in md and "![time to accuracy](time_to_accuracy.png)" in md
    assert (tmp_path / "report" / "time_to_accuracy.png").stat().st_size > 0
    assert "| a               | zeroshot_top1=0.9 | 4      | 3         | 3/4 reached; median 2.50 s" in md
    assert "Left out of time to accuracy (1 run(s) without an evaluated epoch in a readable runs/<run_id>/history.csv): " \
           "b3." in md
    assert "### time to target" in md  # the comparison of the two configurations
    assert "> warning: the times to target in this section come from runs evaluated every 1 and 2 epochs " \
           "(--eval-every):" in md


def test_runs_without_a_target_get_no_time_to_target_section_or_figure(tmp_path):
    from bench.results.report import (
        LABEL,
        _time_to_target_section,
        plot_time_to_accuracy,
    )

    table = pd.DataFrame([make_row("a0", "a", 0), make_row("b0", "b", 0, target=float("nan"))]).assign(**{LABEL: "a"})
    assert plot_time_to_accuracy(table, {}, {"a": "red"}, tmp_path / "t.png") == (False, [])
    assert _time_to_target_section(table, {}) == [] and not (tmp_path / "t.png").exists()


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_side_stopped_before_the_other_reached_is_not_said_to_have_no_run_that_reached():
    """Baseline runs all stopped (censored) at 5-7 s, before the candidate's reached the target at 10-12 s: the
    log-rank test has nothing to compare them by, and the cell says so, not that no run reached it."""
    base = pd.DataFrame(_rows("a", "a", [5, 6, 7], [False] * 3))
    reached = compare([Source("base", base), Source("cand", pd.DataFrame(_rows("b", "b", [10, 11, 12], [True] * 3)))])
    (row,) = reached.targets.to_dict("records")
    assert row["b_reached"] == 3 and math.isnan(row["p_value"]) and row["significant"] is None
    assert "| n/a (no run reached it while the other side's were still training) |" in render_markdown(reached)
    missed = compare([Source("base", base), Source("cand", pd.DataFrame(_rows("b", "b", [10, 11, 12], [False] * 3)))])
    assert "| n/a (no run reached it) |" in render_markdown(missed)


def test_runs_all_reaching_the_target_at_one_time_are_not_said_to_have_missed_each_other():
    """Every run of both sides reached it at 5 s: observed equals expected, the log-rank variance is 0, and the
    cell says why, not that no run reached it while the other side's were training."""
    tied = compare([Source("base", pd.DataFrame(_rows("a", "a", [5, 5], [True] * 2))),
                    Source("cand", pd.DataFrame(_rows("b", "b", [5, 5], [True] * 2)))])
    (row,) = tied.targets.to_dict("records")
    assert math.isnan(row["p_value"]) and row["a_reached"] == row["b_reached"] == 2
    assert "| n/a (every run still training reached it at the same time) |" in render_markdown(tied)


def test_time_to_accuracy_draws_every_target_of_the_metric(tmp_path, monkeypatch):
    """Runs with two targets on one metric: a dashed line each, lowest first (targets do not sort by themselves)."""
    import matplotlib.axes

    from bench.results.report import LABEL, plot_time_to_accuracy

    rows = _rows("a", "a", [1.0], [True], target="zeroshot_top1=0.3") + _rows("b", "b", [1.0], [True],
                                                                             target="zeroshot_top1=0.15")
    folder = write_results(tmp_path / "res", rows)
    for row in rows:
        write_csv(pd.DataFrame({"epoch": [1], "step": [4], "train_loss": [2.0], "epoch_seconds": [1.0],
                                "zeroshot_top1": [0.9]}),
                  folder / "runs" / row["run_id"] / "history.csv")
    table = pd.DataFrame(rows).assign(**{LABEL: ["a", "b"]})
    drawn = []
    original = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda ax, y, **kw: drawn.append((y, kw["label"])) or original(ax, y, **kw))
    assert plot_time_to_accuracy(table, {r["run_id"]: folder / "runs" / r["run_id"] for r in rows},
                                 {"a": "red", "b": "blue"}, tmp_path / "t.png") == (True, [])
    assert drawn == [(15.0, "target zeroshot_top1=0.15"), (30.0, "target zeroshot_top1=0.3")]


def test_a_time_to_target_row_names_what_differs_as_the_metric_rows_do(tmp_path):
    """--format csv/json rows grouped by differs keep the time-to-target row with its pair's metric rows."""
    folder = write_results(tmp_path / "res", _rows("a", "a", *A) + _rows("b", "b", *B), run_folders=False)
    table = load_source(str(folder)).table
    result = compare([Source("base", table[table["encoder"] == "a"]), Source("cand", table[table["encoder"] == "b"])])
    (row,) = result.targets.to_dict("records")
    assert row["differs"] and row["differs"] == result.rows["differs"].iloc[0]


def test_runs_long_csv_carries_time_to_target_beside_its_target_and_round_trips(tmp_path, run_cli):
    """runs_long.csv holds what runs.csv says of a --target run: reached_target as 1 or 0, epochs and seconds to the
    target where reached, each row with its target; read back (as a source, or by bench results --long) it gives the
    wide table's time-to-target columns again, reached_target true or false, so the censored summary is the same."""
    from bench.results.time_to_target import observations

    rows = _rows("a", "a", *A) + [make_row("plain", "a", 9)]
    folder = write_results(tmp_path / "res", rows, run_folders=False)
    long = pd.read_csv(folder / "runs_long.csv")
    a0 = long[long["run_id"] == "a0"].set_index("metric")
    assert (a0.loc["reached_target", "value"], a0.loc["epochs_to_target", "value"],
            a0.loc["time_to_target_seconds", "value"]) == (1.0, 2.0, 1.0)
    assert set(a0["target"]) == {"zeroshot_top1=0.9"} and set(a0["stop_at_target"]) == {False}
    missed = long[long["run_id"] == "a3"]  # never reached: reached_target 0, its times blank so absent
    assert missed.set_index("metric").loc["reached_target", "value"] == 0.0
    assert not {"epochs_to_target", "time_to_target_seconds"} & set(missed["metric"])
    assert not {"reached_target", "time_to_target_seconds"} & set(long.loc[long["run_id"] == "plain", "metric"])

    wide = load_source(str(folder)).table.set_index("run_id")
    back = load_source(str(folder / "runs_long.csv")).table.set_index("run_id")
    assert list(back["reached_target"].loc[["a0", "a3"]]) == [True, False] and pd.isna(back.loc["plain",
                                                                                           "reached_target"])
    for column in ("target", "epochs_to_target", "time_to_target_seconds", "train_seconds"):
        pd.testing.assert_series_equal(back[column], wide[column].loc[back.index], check_dtype=False,
                                       check_index_type=False)
    assert observations(back.reset_index()) == observations(wide.reset_index()) == {"zeroshot_top1=0.9": A}

    code, out, err = run_cli("results", folder, "--long", "--format", "csv", "--where", "run_id=a0")
    assert code == 0, err
    shown = pd.read_csv(io.StringIO(out)).set_index("metric")
    assert shown.loc["time_to_target_seconds", "value"] == 1.0 and shown.loc["time_to_target_seconds", "target"] == \
        "zeroshot_top1=0.9"


def test_time_to_target_is_never_averaged_or_t_tested_as_a_metric(tmp_path):
    """Runs that missed the target have no time to it, so a mean or a Welch test of the times of those that reached
    it is biased: from runs.csv and from runs_long.csv alike, aggregate and compare give no mean of the
    time-to-target columns and no metric row of them; compare's time to target is the log-rank test, the same from
    either file."""
    from bench.results.columns import TIME_TO_TARGET, metric_columns
    from bench.results.views import aggregate

    folder = write_results(tmp_path / "res", _rows("a", "a", *A) + _rows("b", "b", *B), run_folders=False)
    p_values = []
    for name in ("runs.csv", "runs_long.csv"):
        table = load_source(str(folder / name)).table
        assert set(TIME_TO_TARGET) <= set(table.columns) and not set(TIME_TO_TARGET) & set(metric_columns(table))
        assert not [c for c in aggregate(table).columns if c.startswith(TIME_TO_TARGET)]
        by_encoder = [Source(name, table[table["encoder"] == name]) for name in ("a", "b")]
        result = compare(by_encoder)
        assert not set(TIME_TO_TARGET) & set(result.rows["metric"])
        (row,) = result.targets.to_dict("records")
        assert (row["a_runs"], row["a_reached"], row["a_median"]) == (4, 3, 2.5)
        p_values.append(row["p_value"])
    assert p_values[0] == p_values[1] == pytest.approx(math.erfc(math.sqrt(19321 / 21279 / 2)), rel=1e-12)


def test_the_long_table_knows_every_column_a_target_writes():
    """The columns the long table carries for a target are the ones a run with --target writes into its row."""
    from bench.evaluation.target import target_columns
    from bench.results.columns import TARGET_COLUMNS, TIME_TO_TARGET

    written = target_columns("zeroshot_top1=0.5", False, [{"epoch": 1, "epoch_seconds": 1.0, "zeroshot_top1": 0.6}])
    assert set(written) == {*TARGET_COLUMNS, *TIME_TO_TARGET}
