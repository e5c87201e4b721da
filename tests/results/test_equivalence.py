"""bench compare --equivalence: two one-sided tests checked against values computed by hand, the verdict when both
the seeds and the test images apply, the CI gate, bad options, equivalence shown for two seed sets of one
configuration and not for two configurations that differ; bench report --correct holm across every configuration."""
import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bench.errors import BenchError
from bench.results.compare import compare, holm_across_all
from bench.results.equivalence import add_equivalence, parse_equivalence
from bench.results.lookup import Source, load_sources
from bench.results.report import baseline_section
from bench.results.stats import holm, tost_paired, tost_welch
from tests.support.fake_results import make_row, write_results, write_with_predictions
from tests.support.sweep_files import sweep_text


def side(label, encoder, tops, seeds=None):
    seeds = seeds or range(len(tops))
    return Source(label, pd.DataFrame([make_row(f"{label}{s}", encoder, s, t) for s, t in zip(seeds, tops)]))


def test_tost_over_seeds_matches_the_hand_computed_test():
    """a = .50/.51/.52, b = .53/.55/.57: d = 0.04, se = sqrt(1e-4/3 + 4e-4/3) = 0.012910, Welch df = 2.9412.
    Margin 0.08: upper test t = (0.04 - 0.08) / se = -3.0984, p = P(T < -3.0984) = 0.0276 (half of Welch's two-sided
    0.055); lower test t = (0.04 + 0.08) / se = 9.2952, p far smaller; so p = 0.0276 < 0.05: equivalent, and the 90%
    interval 0.04 ± t_0.95(df) se lies inside ±0.08. Margin 0.05: t = -0.7746, p = 0.25: not shown."""
    a, b = [0.50, 0.51, 0.52], [0.53, 0.55, 0.57]
    se, df = math.sqrt(5e-4 / 3), (5e-4 / 3) ** 2 / ((1e-4 / 3) ** 2 / 2 + (4e-4 / 3) ** 2 / 2)
    assert (round(se, 6), round(df, 4)) == (0.012910, 2.9412)
    wide = tost_welch(a, b, 0.08)
    assert (wide.test, wide.n) == ("seeds", 6) and wide.diff == pytest.approx(0.04)
    assert wide.p_value == pytest.approx(scipy_stats.t.cdf((0.04 - 0.08) / se, df), rel=1e-9)
    assert wide.p_value == pytest.approx(scipy_stats.ttest_ind(b, a, equal_var=False).pvalue / 2, rel=1e-9)
    assert 0.027 < wide.p_value < 0.028
    half = scipy_stats.t.ppf(0.95, df) * se
    assert (wide.ci_low, wide.ci_high) == pytest.approx((0.04 - half, 0.04 + half), rel=1e-12)
    assert -0.08 < wide.ci_low and wide.ci_high < 0.08  # p < 0.05 exactly when the 90% interval is inside
    narrow = tost_welch(a, b, 0.05)
    assert narrow.p_value == pytest.approx(scipy_stats.t.cdf(-0.01 / se, df), rel=1e-9) and 0.24 < narrow.p_value < 0.26
    assert narrow.ci_high > 0.05
    assert tost_welch([0.5], [0.5, 0.6], 0.1) is None  # one seed says nothing about the spread


def test_tost_refuses_an_alpha_whose_interval_does_not_exist():
    """At alpha 0.6 the "1 - 2 alpha" interval would be inverted, and the larger one-sided p (0.55 for these
    sides, 3 pp apart with a 2.9 pp margin) would pass as equivalence."""
    with pytest.raises(ValueError, match="alpha < 0.5"):
        tost_welch([0.0, 0.01], [0.03, 0.04], 0.029, alpha=0.6)
    assert tost_welch([0.0, 0.01], [0.03, 0.04], 0.029, alpha=0.49).p_value > 0.49


def test_paired_tost_over_images_matches_the_hand_computed_test():
    """100 images: the candidate alone right on 6, the baseline alone on 4, 90 alike. Mean d = 0.02, sample variance
    (6 + 4 - 100 * 0.02^2) / 99 = 0.100606, se = sqrt(0.100606 / 100) = 0.031718 on 99 df. Margin 0.10: the upper
    test's t = (0.02 - 0.10) / se = -2.5222, p = 0.0067: equivalent. Margin 0.05: t = -0.9458, p = 0.173: not."""
    d = np.array([1.0] * 6 + [-1.0] * 4 + [0.0] * 90)
    se = math.sqrt((10 - 100 * 0.02 ** 2) / 99 / 100)
    assert round(se, 6) == 0.031718
    wide, narrow = tost_paired(d, 0.10), tost_paired(d, 0.05)
    assert wide.p_value == pytest.approx(scipy_stats.t.cdf((0.02 - 0.10) / se, 99), rel=1e-9) and wide.p_value < 0.05
    assert narrow.p_value == pytest.approx(scipy_stats.t.cdf((0.02 - 0.05) / se, 99), rel=1e-9)
    assert 0.17 < narrow.p_value < 0.18 and (wide.test, wide.n) == ("images", 100)
    # the same predictions on every image: the difference is exactly 0, inside any margin (p = 0), outside none
    same = tost_paired(np.zeros(50), 0.01)
    assert (same.p_value, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)


def test_two_seed_sets_of_one_configuration_are_equivalent_at_a_wide_margin_two_configurations_are_not():
    base = side("A", "a", [0.50, 0.51, 0.52])
    again = side("A2", "a", [0.515, 0.505, 0.51], seeds=[3, 4, 5])
    other = side("B", "b", [0.60, 0.61, 0.62])
    same = add_equivalence(compare([base, again], metrics=["zeroshot_top1"]), {"zeroshot_top1": 0.03}, 0.05)
    row = same.rows.iloc[0]
    assert row["equivalent"] is True and row["equivalence_test"] == "seeds"
    assert row["equivalence"].startswith("equivalent within ±3.00 pp (TOST over seeds, p=")
    differ = add_equivalence(compare([base, other], metrics=["zeroshot_top1"]), {"zeroshot_top1": 0.03}, 0.05)
    row = differ.rows.iloc[0]
    assert row["equivalent"] is False and row["equivalence"].startswith("not shown equivalent within ±3.00 pp")
    # 90% interval: 10 ± t_0.95(df 4) * sqrt(1e-4/3 + 1e-4/3) = 10 ± 2.1318 * 0.8165 = 10 ± 1.74 points
    assert row["equivalence_ci"] == "[+8.26, +11.74] pp"
    one = add_equivalence(compare([side("A", "a", [0.5]), side("B", "a", [0.5])], metrics=["zeroshot_top1"]),
                          {"zeroshot_top1": 0.03}, 0.05)
    assert one.rows.iloc[0]["equivalent"] is None
    assert one.rows.iloc[0]["equivalence"] == "not shown equivalent within ±3.00 pp (n/a: one seed a side, no " \
                                              "predictions.npy)"


def test_an_untested_cell_says_why_as_the_significance_column_does():
    """A metric one side never measured is not 'one seed a side', nor is a side of 2 seeds against 1: the cell (and
    so the --fail-on-not-equivalent line) gives the reason that holds, as the significance column does."""
    def held_out(label, tops, seeds):
        return Source(label, pd.DataFrame([make_row(f"{label}{s}", "a", s, 0.5, seen_top1=t)
                                           for s, t in zip(seeds, tops)]))

    base, measured = held_out("A", [0.5, 0.52], [0, 1]), held_out("B", [0.51], [2])
    plain = held_out("C", [math.nan, math.nan], [3, 4])  # trained on every class: seen_top1 blank
    rows = add_equivalence(compare([base, measured, plain], metrics=["seen_top1"]), {"seen_top1": 0.03}, 0.05).rows
    assert rows["equivalence"].tolist() == ["not shown equivalent within ±3.00 pp (n/a: one seed on a side)",
                                            "not shown equivalent within ±3.00 pp (n/a: not measured on one side)"]
    assert rows["significant"].isna().all()


def test_where_seeds_and_images_both_apply_both_must_show_it_and_the_larger_p_decides(tmp_path):
    """Seeds agree closely (equivalent over seeds at ±3 points); each side's 3 runs agree on every image, and the
    candidate wins 12 images and loses 6 of 300 (d = 2 points): over images the 90% interval reaches past +3."""
    labels = np.arange(300) % 3
    hits_a = np.arange(300) < 150
    hits_b = hits_a.copy()
    hits_b[:6], hits_b[200:212] = False, True
    tops_a, tops_b = [hits_a.mean() + e for e in (0, 0.001, -0.001)], [hits_b.mean() + e for e in (0, 0.001, -0.001)]
    a = write_with_predictions(tmp_path / "a", [make_row(f"ra{s}", "a", s, t) for s, t in enumerate(tops_a)],
                               [hits_a] * 3, labels)
    b = write_with_predictions(tmp_path / "b", [make_row(f"rb{s}", "a", s + 3, t) for s, t in enumerate(tops_b)],
                               [hits_b] * 3, labels)
    result = add_equivalence(compare(load_sources([a, b]), metrics=["zeroshot_top1"]), {"zeroshot_top1": 0.03}, 0.05)
    row = result.rows.iloc[0]
    images = tost_paired(hits_b.astype(float) - hits_a.astype(float), 0.03)
    assert row["eq_seeds_p"] < 0.05 < row["eq_images_p"] == pytest.approx(images.p_value)
    assert row["equivalence_test"] == "images" and row["equivalence_p"] == row["eq_images_p"]
    assert row["equivalent"] is False and "(paired TOST over images, p=" in row["equivalence"]
    wide = add_equivalence(compare(load_sources([a, b]), metrics=["zeroshot_top1"]), {"zeroshot_top1": 0.06}, 0.05)
    assert wide.rows.iloc[0]["equivalent"] is True  # both tests inside ±6 points


def test_holm_adjusts_the_equivalence_p_values_across_every_test_shown():
    base, b, c = side("A", "a", [0.50, 0.51, 0.52]), side("B", "b", [0.51, 0.52, 0.53]), side("C", "c", [0.5, 0.5])
    result = compare([base, b, c], metrics=["zeroshot_top1", "zeroshot_top5"])
    plain = add_equivalence(result, {"zeroshot_top1": 0.04, "zeroshot_top5": 0.04}, 0.05)
    holmed = add_equivalence(result, {"zeroshot_top1": 0.04, "zeroshot_top5": 0.04}, 0.05, "holm")
    assert holmed.rows["equivalence_p_adjusted"].tolist() == pytest.approx(holm(plain.rows["equivalence_p"]).tolist())
    assert "Holm p=" in holmed.rows["equivalence"].iloc[0]


@pytest.mark.parametrize("spec, needle", [
    ("zeroshot_top1", "is not METRIC:MARGIN"),
    ("zeroshot_top1:x", "is not METRIC:MARGIN"),
    ("zeroshot_top1:inf", "is not METRIC:MARGIN"),
    ("zeroshot_top1:0", "MARGIN must be > 0"),
    ("zeroshot_top1:-0.01", "MARGIN must be > 0"),
    ("zeroshot_top1:0.5", "accuracies are fractions, so MARGIN is too"),
])
def test_bad_margins_are_refused(spec, needle):
    with pytest.raises(BenchError, match=needle.replace("(", r"\(")):
        parse_equivalence([spec])


@pytest.fixture(scope="module")
def two_seed_sets(tmp_path_factory):
    """Results folders of one configuration over seeds 0-2 and 3-5 (no run folders: nothing to pair by image)."""
    root = tmp_path_factory.mktemp("sides")
    return (write_results(root / "a", [make_row(f"a{s}", "a", s, 0.50 + s / 100) for s in range(3)], False),
            write_results(root / "b", [make_row(f"b{s}", "a", s + 3, 0.505 + s / 100) for s in range(3)], False))


@pytest.mark.parametrize("args, needle", [
    (("--equivalence", "zeroshot_top1:0"), "MARGIN must be > 0"),
    (("--equivalence", "zeroshot_top1:1"), "accuracies are fractions"),
    (("--equivalence", "zeroshot_top1:0.01", "--equivalence", "zeroshot_top1:0.02"), "names zeroshot_top1 twice"),
    (("--fail-on-not-equivalent",), "--fail-on-not-equivalent needs a margin"),
    (("--equivalence", "probe_top1:0.01"), "not a metric of this comparison"),
    (("--equivalence", "zeroshot_top5:0.01", "--metrics", "zeroshot_top1"), "is not among --metrics"),
    (("--equivalence", "zeroshot_top1:0.2", "--alpha", "0.6"), "need --alpha below 0.5"),
])
def test_bad_equivalence_options_are_one_line_exit_2(two_seed_sets, run_cli, args, needle):
    code, out, err = run_cli("compare", *two_seed_sets, *args)
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and out == ""


@pytest.mark.parametrize("args", [
    ("--equivalence", "seen_top1:0.01"),
    ("--equivalence", "seen_top1:0.01", "--fail-on-not-equivalent", "--correct", "holm"),
    ("--fail-on", "seen_top1:-0.5"),  # a gate that could never fire: CI would pass silently
])
def test_a_metric_one_side_never_reports_is_one_line_exit_2(tmp_path, run_cli, args):
    """Held-out accuracies of runs that held no class out (the column is there, blank: a folder holding both kinds):
    no difference exists to test or gate, so the option is refused in one line naming the side that lacks it, not
    answered with n/a cells and exit 0 or 1."""
    plain, held = (write_results(tmp_path / name, [make_row(f"{name}{s}", "a", s, 0.5, seen_top1=seen)
                                                   for s in range(3)], False)
                   for name, seen in (("plain", math.nan), ("held", 0.6)))
    code, out, err = run_cli("compare", plain, held, *args)
    assert code == 2 and out == "", err
    assert err.startswith(f"bench: error: {args[0]} seen_top1: no run of {plain} reports it") and \
        err.endswith("compare runs that both report seen_top1, or drop it\n") and err.count("\n") == 1, err


def test_fail_on_not_equivalent_gates_ci_on_the_margin(two_seed_sets, run_cli):
    a, b = two_seed_sets
    code, out, err = run_cli("compare", a, b, "--equivalence", "zeroshot_top1:0.04", "--fail-on-not-equivalent")
    assert code == 0, err
    assert "equivalent within ±4.00 pp (TOST over seeds, p=0.006)" in out and "| equivalence: 90% CI " in out
    code, out, err = run_cli("compare", a, b, "--equivalence", "zeroshot_top1:0.005", "--fail-on-not-equivalent")
    assert code == 1 and "bench: compare failed: zeroshot_top1 not shown equivalent within ±0.50 pp" in err
    code, out, err = run_cli("compare", a, b, "--equivalence", "zeroshot_top1:0.04", "--format", "json")
    assert code == 0 and '"equivalent":true' in out.replace(" ", "")


def test_report_corrects_across_every_configuration_and_metric_and_says_so(tmp_path, run_cli):
    rows = [make_row(f"{e}{s}", e, s, base + 0.01 * s) for e, base in (("a", 0.5), ("b", 0.52), ("c", 0.6))
            for s in range(3)]
    results = write_results(tmp_path / "results", rows, run_folders=False)
    code, out, err = run_cli("report", results, "--out", tmp_path / "holm", "--correct", "holm")
    assert code == 0, err
    md = (tmp_path / "holm" / "report.md").read_text()
    table = pd.DataFrame(rows)
    sides = [Source(e, table[table.encoder == e]) for e in "abc"]
    raw = compare(sides, metrics=["zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "train_seconds"])
    tested = int(raw.rows["p_value"].notna().sum())
    assert f"p-values are Holm-adjusted across all {tested} tests of this report" in md
    adjusted = holm_across_all(raw).rows.set_index(["side", "metric"])["p_adjusted"]
    assert adjusted.tolist() == pytest.approx(holm(raw.rows["p_value"]).tolist())
    assert f"**+10.00 pp (Holm p={adjusted.loc[('c', 'zeroshot_top1')]:.3f})**" in md  # c against a, bold
    assert "p-values Holm-adjusted across all" in md and "Holm p=" in md
    plain = "\n".join(baseline_section(raw, ["zeroshot_top1"]))  # the section without the correction
    assert f"no correction (`--correct none`). This report holds {tested} tests at alpha 0.05" in plain
    code, out, err = run_cli("report", results, "--out", tmp_path / "bad", "--correct", "bonferroni")
    assert code == 2 and "--correct" in err and not (tmp_path / "bad").exists()




@pytest.mark.slow  # nine tiny runs on the synthetic set
def test_on_the_synthetic_set_seed_sets_of_one_configuration_are_equivalent_and_two_configurations_are_not(
        tmp_path, run_cli):
    """lr 0.01 over seeds 0-2 and again over seeds 3-5: the same configuration, so within a wide margin of top-1 (20
    points, both tests: over seeds and, from predictions.npy, over the 64 test images) and of the final loss (0.15);
    lr 1e-5 stays near its random start, about 2 above in final loss, so it is not shown equivalent there."""
    for name, lr, seeds in (("a", 0.01, [0, 1, 2]), ("again", 0.01, [3, 4, 5]), ("other", 0.00001, [0, 1, 2])):
        path = tmp_path / f"{name}.toml"
        path.write_text(sweep_text({"lr": [lr], "seed": seeds}, limit_test=64, checkpoints=False))
        code, out, err = run_cli("sweep", path, "--out", tmp_path / name)
        assert code == 0, err
    margins = ("--equivalence", "zeroshot_top1:0.2", "--equivalence", "final_train_loss:0.15")
    code, out, err = run_cli("compare", tmp_path / "a", tmp_path / "again", *margins, "--fail-on-not-equivalent",
                             "--format", "json")
    assert code == 0, err
    rows = pd.read_json(io.StringIO(out)).set_index("metric")
    assert rows.loc["zeroshot_top1", "eq_images_p"] < 0.05 and rows.loc["zeroshot_top1", "eq_seeds_p"] < 0.05
    assert rows.loc["final_train_loss", "equivalent"]
    code, out, err = run_cli("compare", tmp_path / "a", tmp_path / "other", *margins, "--fail-on-not-equivalent")
    assert code == 1 and "final_train_loss not shown equivalent within ±0.15 (TOST over seeds" in err
