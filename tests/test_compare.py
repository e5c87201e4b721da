"""bench compare: how sides are joined, when a difference is significant, warnings and --fail-on."""
import math

import pandas as pd
import pytest

from bench.compare import compare, join_columns, parse_fail_on, significance, split_sides
from bench.errors import BenchError
from bench.sources import Source

from ._results_fixture import make_row, write_results


def side(label, encoder, tops, templates="seed", **extra):
    return Source(label, pd.DataFrame([make_row(f"{label}{i}", encoder, i, t, templates, **extra)
                                       for i, t in enumerate(tops)]))


def test_significance_uses_the_larger_seed_spread():
    assert significance(0.10, 0.02, 0.01) == (0.02, True)
    assert significance(0.01, 0.02, 0.01) == (0.02, False)
    assert significance(0.05, float("nan"), 0.03) == (0.03, True)  # one side with one seed: the other's spread
    spread, sig = significance(0.05, float("nan"), float("nan"))  # one seed each: unknown
    assert math.isnan(spread) and sig is None


def test_join_leaves_out_the_column_that_tells_sides_apart():
    a, b = side("A", "a", [0.5]), side("B", "b", [0.6])
    joined_on, differs = join_columns([a, b])
    assert differs == ["encoder"] and "templates" in joined_on and "epochs" in joined_on
    on, rest = join_columns([a, b], on=["templates"])
    assert on == ["templates"] and "encoder" in rest and "epochs" in rest
    with pytest.raises(BenchError):
        join_columns([a, b], on=["nosuch"])


def test_compare_pairs_each_template_set_and_judges_each_difference():
    """Two encoders x two template sets x 3 seeds: rows pair by template set; a +10 point gain over a 1 point
    spread is significant, a +0.5 point change is not."""
    a = pd.concat([side("A", "a", [0.50, 0.51, 0.52]).table, side("A", "a", [0.30, 0.31, 0.32], "openai").table])
    b = pd.concat([side("B", "b", [0.60, 0.61, 0.62]).table, side("B", "b", [0.305, 0.315, 0.325], "openai").table])
    result = compare([Source("A", a), Source("B", b)], metrics=["zeroshot_top1"])
    rows = result.rows.set_index("on_templates")
    assert rows.loc["seed", "diff"] == pytest.approx(0.10) and bool(rows.loc["seed", "significant"]) is True
    assert rows.loc["openai", "diff"] == pytest.approx(0.005) and bool(rows.loc["openai", "significant"]) is False
    assert rows.loc["seed", "ratio"] == pytest.approx(0.61 / 0.51)
    assert rows.loc["seed", "a_n"] == 3 and rows.loc["seed", "differs"] == "encoder: a -> b"


def test_unmatched_configurations_warn_and_no_overlap_is_an_error():
    a = side("A", "a", [0.5], templates="seed")
    b = pd.concat([side("B", "b", [0.6]).table, side("B", "b", [0.6], "openai").table])
    result = compare([a, Source("B", b)], metrics=["zeroshot_top1"])
    assert any("no partner" in w for w in result.warnings)
    with pytest.raises(BenchError, match="no configuration in common"):
        compare([side("A", "a", [0.5]), side("B", "b", [0.6], epochs=2)], on=["epochs"])


def test_warns_when_machines_or_protocols_differ():
    a = side("A", "a", [0.5, 0.6])
    b = side("B", "b", [0.5, 0.6], device_name="NVIDIA H100", test_images=1000)
    warnings = compare([a, b], metrics=["zeroshot_top1"]).warnings
    assert any("machines differ in device_name" in w for w in warnings)
    assert any("protocols differ in test_images" in w for w in warnings)
    assert not compare([a, side("B", "b", [0.5, 0.6])], metrics=["zeroshot_top1"]).warnings


def test_fail_on_thresholds_in_points():
    """A 0.8 point drop fails zeroshot_top1:-0.5 but not :-1; +3 s fails train_seconds:2 (a rise)."""
    a, b = side("A", "a", [0.500, 0.502]), side("B", "b", [0.492, 0.494])
    assert compare([a, b], fail_on=parse_fail_on(["zeroshot_top1:-0.5"])).failures
    assert not compare([a, b], fail_on=parse_fail_on(["zeroshot_top1:-1"])).failures
    slow = side("B", "b", [0.5, 0.5], train_seconds=13.5)
    assert compare([a, slow], fail_on=parse_fail_on(["train_seconds:2"])).failures
    with pytest.raises(BenchError):
        parse_fail_on(["zeroshot_top1"])
    with pytest.raises(BenchError, match="no such metric"):
        compare([a, b], fail_on=parse_fail_on(["nope:-1"]))


def test_split_by_makes_sides_from_one_table():
    table = pd.concat([side("A", "a", [0.5, 0.6]).table, side("B", "b", [0.7, 0.8]).table])
    sides = split_sides([Source("all", table)], "encoder")
    assert [s.label for s in sides] == ["encoder=a", "encoder=b"]
    with pytest.raises(BenchError):
        split_sides([Source("all", table)])


def test_cli_compare_reads_folders_run_ids_and_exits_1_past_threshold(tmp_path, run_cli):
    """End to end through files: run folders and run ids resolve, --fail-on gives exit 1, bad input exit 2."""
    base = write_results(tmp_path / "base", [make_row("ra0", "a", 0, 0.50), make_row("ra1", "a", 1, 0.52)])
    cand = write_results(tmp_path / "cand", [make_row("rb0", "a", 0, 0.40), make_row("rb1", "a", 1, 0.42)])
    code, out, err = run_cli("compare", base, cand, "--metrics", "zeroshot_top1", "--fail-on", "zeroshot_top1:-0.5")
    assert code == 1 and "compare failed" in err and "zeroshot_top1" in out
    code, out, _ = run_cli("compare", base / "runs" / "ra0", "rb1", "--results", cand, "--metrics", "zeroshot_top1")
    assert code == 0 and "n/a (one seed)" in out
    code, _, err = run_cli("compare", base, tmp_path / "nowhere")
    assert code == 2 and err.count("\n") == 1 and "bench: error:" in err
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    code, _, err = run_cli("compare", base, tmp_path / "junk.csv")
    assert code == 2 and "not a bench results table" in err
