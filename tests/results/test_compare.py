"""bench compare: how sides are joined, when a difference is significant (tests checked against values
computed by hand), warnings and --fail-on."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bench.errors import BenchError
from bench.results.compare import compare, join_columns, parse_fail_on, render_markdown, split_sides
from bench.results.lookup import Source, load_sources
from bench.results.predictions import load_predictions, save_predictions
from bench.results.stats import (
    holm,
    mcnemar_exact,
    mean_halfwidth,
    paired_bootstrap,
    paired_top1,
    tost_welch,
    welch,
)
from tests.support import REPO
from tests.support.fake_results import make_row, write_results, write_with_predictions


def side(label, encoder, tops, templates="seed", **extra):
    return Source(label, pd.DataFrame([make_row(f"{label}{i}", encoder, i, t, templates, **extra)
                                       for i, t in enumerate(tops)]))


def test_welch_matches_the_hand_computed_test():
    """a = .50/.51/.52, b = .53/.55/.57: variances of the means 1e-4/3 and 4e-4/3, so se = sqrt(5e-4/3) = 0.012910,
    t = 0.04 / se = 3.0984 and Welch-Satterthwaite df = (5e-4/3)^2 / ((1e-4/3)^2/2 + (4e-4/3)^2/2) = 2.9412."""
    a, b = [0.50, 0.51, 0.52], [0.53, 0.55, 0.57]
    se, t, df = math.sqrt(5e-4 / 3), 0.04 / math.sqrt(5e-4 / 3), (5e-4 / 3) ** 2 / ((1e-4 / 3) ** 2 / 2 + (4e-4 / 3) ** 2 / 2)
    assert (round(se, 6), round(t, 4), round(df, 4)) == (0.012910, 3.0984, 2.9412)
    result = welch(a, b)
    assert result.test == "welch" and result.n == 6
    assert result.p_value == pytest.approx(2 * scipy_stats.t.sf(t, df), rel=1e-12)
    # the same p from scipy's own Welch test, and the interval diff ± t_0.975(df) * se
    assert result.p_value == pytest.approx(scipy_stats.ttest_ind(b, a, equal_var=False).pvalue, rel=1e-9)
    half = scipy_stats.t.ppf(0.975, df) * se
    assert (result.ci_low, result.ci_high) == pytest.approx((0.04 - half, 0.04 + half), rel=1e-12)
    # a 4-point gain over 3 seeds a side is not yet significant at 0.05: p = 0.055, the interval just spans 0
    assert 0.05 < result.p_value < 0.06 and result.ci_low < 0 < result.ci_high


def test_welch_needs_two_seeds_a_side_and_variance():
    assert welch([0.5], [0.6, 0.7]) is None and welch([0.5, float("nan")], [0.6, 0.7]) is None
    flat = welch([0.5, 0.5], [0.6, 0.6])
    assert math.isnan(flat.p_value) and math.isnan(flat.ci_low)


def test_values_that_never_vary_are_no_variance_even_where_numpy_leaves_rounding_noise():
    """Three 0.1s have a numpy variance of about 3e-34, not 0: a t-test on it would call 0.1 and 0.3 different
    with an interval of width zero. Constant sides are undefined for Welch and exact for TOST and the half-width."""
    assert np.array([0.1] * 3).var(ddof=1) > 0  # the noise this guards against
    flat = welch([0.1] * 3, [0.3] * 3)
    assert math.isnan(flat.p_value) and math.isnan(flat.ci_low)
    assert tost_welch([0.1] * 3, [0.1] * 3, margin=0.01).p_value == 0.0
    assert mean_halfwidth([0.1] * 3) == 0.0


def test_exact_mcnemar_is_the_binomial_test_of_discordant_images():
    """1 image only the baseline gets right, 9 only the candidate: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024."""
    a = np.array([True] * 50 + [True] + [False] * 9 + [False] * 40)
    b = np.array([True] * 50 + [False] + [True] * 9 + [False] * 40)
    assert mcnemar_exact(a, b) == pytest.approx(22 / 1024, rel=1e-12)
    assert mcnemar_exact(a, a) == 1.0


def test_holm_adjusts_in_step_down_order():
    """Sorted p .01 .03 .04 .20 times 4, 3, 2, 1 = .04 .09 .08 .20, then made monotone: .04 .09 .09 .20."""
    assert holm([0.01, 0.04, 0.03, 0.20]).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.20])
    out = holm([0.5, float("nan"), 0.6])
    assert math.isnan(out[1]) and out[[0, 2]].tolist() == pytest.approx([1.0, 1.0])  # 0.5 x 2, then monotone


def test_paired_bootstrap_interval_is_the_normal_one_and_repeatable():
    """1,000 images, 60 won and 40 lost by the candidate: mean 0.02, sd of the mean sqrt((0.1 - 0.02^2) / 1000);
    the percentile interval of 10,000 resamples lands within 0.002 of mean ± 1.96 sd, and the fixed seed repeats it."""
    diff = np.array([1.0] * 60 + [-1.0] * 40 + [0.0] * 900)
    p, low, high = paired_bootstrap(diff)
    sd = math.sqrt((0.1 - 0.02 ** 2) / 1000)
    assert low == pytest.approx(0.02 - 1.96 * sd, abs=0.002) and high == pytest.approx(0.02 + 1.96 * sd, abs=0.002)
    assert 0.02 < p < 0.1 and paired_bootstrap(diff) == (p, low, high)
    assert paired_bootstrap(np.zeros(50))[0] == 1.0


def test_paired_bootstrap_p_counts_the_observed_sample_so_it_is_never_zero():
    """Every one of 10,000 resampled means above 0: p = 2 (1 + 0) / 10,001, not 0 (which Holm would keep at 0)."""
    assert paired_bootstrap(np.full(64, 0.25))[0] == 2 / 10_001
    correct_a = np.zeros((2, 64), bool)
    correct_b = correct_a.copy()
    correct_b[:, :20] = True
    assert paired_top1(correct_a, correct_b).p_value == 2 / 10_001


def test_paired_top1_uses_mcnemar_for_one_run_a_side_and_the_bootstrap_otherwise():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 400)) < 0.5, rng.random((2, 400)) < 0.6
    one = paired_top1(a[:1], b[:1])
    assert one.test == "mcnemar" and one.p_value == mcnemar_exact(a[0], b[0]) and one.n == 400
    many = paired_top1(a, b)
    assert many.test == "bootstrap"
    assert (many.p_value, many.ci_low, many.ci_high) == paired_bootstrap(b.mean(0) - a.mean(0))


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
    spread is significant in Welch's test, a +0.5 point change is not."""
    a = pd.concat([side("A", "a", [0.50, 0.51, 0.52]).table, side("A", "a", [0.30, 0.31, 0.32], "openai").table])
    b = pd.concat([side("B", "b", [0.60, 0.61, 0.62]).table, side("B", "b", [0.305, 0.315, 0.325], "openai").table])
    result = compare([Source("A", a), Source("B", b)], metrics=["zeroshot_top1"])
    rows = result.rows.set_index("on_templates")
    assert rows.loc["seed", "diff"] == pytest.approx(0.10) and bool(rows.loc["seed", "significant"]) is True
    assert rows.loc["openai", "diff"] == pytest.approx(0.005) and bool(rows.loc["openai", "significant"]) is False
    assert rows.loc["seed", "ratio"] == pytest.approx(0.61 / 0.51)
    assert rows.loc["seed", "a_n"] == 3 and rows.loc["seed", "differs"] == "encoder: a -> b"
    assert rows.loc["seed", "test"] == "welch" and rows.loc["seed", "seeds_p"] < 0.001
    assert rows.loc["openai", "seeds_p"] == pytest.approx(
        scipy_stats.ttest_ind([0.305, 0.315, 0.325], [0.30, 0.31, 0.32], equal_var=False).pvalue)


def test_the_committed_stem_comparison_is_not_significant_in_top1():
    """results/comparison (3 seeds a side): 28.6 ± 0.3 vs 27.8 ± 0.5 was called significant by the old
    larger-std rule; Welch's test gives p = 0.068, an interval across 0, and no."""
    table = pd.read_csv(REPO / "results" / "comparison" / "runs.csv")
    result = compare(split_sides([Source("all", table)], "encoder"), metrics=["zeroshot_top1", "probe_top1"])
    rows = result.rows.set_index("metric")
    assert rows.loc["zeroshot_top1", "significant"] is False
    assert rows.loc["zeroshot_top1", "p_value"] == pytest.approx(0.068, abs=0.001)
    assert rows.loc["zeroshot_top1", "seeds_ci_low"] < 0 < rows.loc["zeroshot_top1", "seeds_ci_high"]
    assert rows.loc["probe_top1", "significant"] is True  # +3.7 points: p = 0.042


def test_holm_correction_is_applied_within_each_comparison():
    a = pd.concat([side("A", "a", [0.50, 0.51, 0.52]).table])
    b = pd.concat([side("B", "b", [0.53, 0.55, 0.57]).table])
    plain = compare([Source("A", a), Source("B", b)], metrics=["zeroshot_top1", "zeroshot_top5"])
    adjusted = compare([Source("A", a), Source("B", b)], metrics=["zeroshot_top1", "zeroshot_top5"], correct="holm")
    p = plain.rows["p_value"].to_numpy()
    assert adjusted.rows["p_adjusted"].tolist() == pytest.approx(holm(p).tolist())
    assert (adjusted.rows["p_adjusted"] >= plain.rows["p_adjusted"]).all()
    with pytest.raises(BenchError, match="--alpha must be in"):
        compare([Source("A", a), Source("B", b)], alpha=1.5)


def _with_predictions(folder, rows, hits, labels):
    """A results folder whose runs kept predictions.npy: ``hits[i]`` marks the images run i got right."""
    write_results(folder, rows)
    for row, right in zip(rows, hits):
        top1 = np.where(right, labels, (labels + 1) % 3)
        save_predictions(folder / "runs" / row["run_id"] / "predictions.npy", labels, top1, 3)
    return folder


def test_one_seed_a_side_gets_mcnemar_from_the_predictions(tmp_path):
    """One run each, 300 test images: 30 only the candidate gets right, 5 only the baseline: the paired test decides
    (exact McNemar), with a bootstrap interval; without predictions it stays n/a."""
    labels = np.arange(300) % 3
    base_hits = np.arange(300) < 150
    cand_hits = base_hits.copy()
    cand_hits[:5], cand_hits[200:230] = False, True
    a = _with_predictions(tmp_path / "a", [make_row("ra", "a", 0, base_hits.mean())], [base_hits], labels)
    b = _with_predictions(tmp_path / "b", [make_row("rb", "b", 0, cand_hits.mean())], [cand_hits], labels)
    from bench.results.lookup import load_sources

    result = compare(load_sources([a, b]), metrics=["zeroshot_top1", "zeroshot_top5"])
    rows = result.rows.set_index("metric")
    top1 = rows.loc["zeroshot_top1"]
    assert top1["test"] == "mcnemar" and top1["significant"] is True
    assert top1["p_value"] == pytest.approx(mcnemar_exact(base_hits, cand_hits))
    assert top1["images_ci_low"] < top1["diff"] < top1["images_ci_high"]
    assert rows.loc["zeroshot_top5", "significant"] is None  # one seed and no per-image top-5: unknown
    (b / "runs" / "rb" / "predictions.npy").unlink()
    assert compare(load_sources([a, b]), metrics=["zeroshot_top1"]).rows["significant"].iloc[0] is None


def test_predictions_round_trip_in_int8_and_other_test_images_are_not_paired(tmp_path):
    labels = np.array([0, 1, 2, 1])
    save_predictions(tmp_path / "p.npy", labels, np.array([0, 2, 2, 1]), 10)
    assert np.load(tmp_path / "p.npy").dtype["label"] == np.int8
    got_labels, got_top1 = load_predictions(tmp_path / "p.npy")
    assert got_labels.tolist() == [0, 1, 2, 1] and got_top1.tolist() == [0, 2, 2, 1]
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    assert load_predictions(tmp_path / "junk.npy") is None
    hits = [np.ones(30, bool)]
    a = _with_predictions(tmp_path / "a", [make_row("ra", "a", 0, 1.0)], hits, np.arange(30) % 3)
    b = _with_predictions(tmp_path / "b", [make_row("rb", "b", 0, 1.0)], hits, (np.arange(30) + 1) % 3)
    from bench.results.lookup import load_sources

    result = compare(load_sources([a, b]), metrics=["zeroshot_top1"])
    assert result.rows["images_test"].iloc[0] is None and any("different test images" in w for w in result.warnings)


def test_unmatched_configurations_warn_and_no_overlap_is_an_error():
    a = side("A", "a", [0.5], templates="seed")
    b = pd.concat([side("B", "b", [0.6]).table, side("B", "b", [0.6], "openai").table])
    result = compare([a, Source("B", b)], metrics=["zeroshot_top1"])
    assert any("no partner" in w for w in result.warnings)
    with pytest.raises(BenchError, match="no configuration in common"):
        compare([side("A", "a", [0.5]), side("B", "b", [0.6], epochs=2)], on=["epochs"])


def test_runs_stopped_at_their_target_are_not_pooled_with_runs_that_trained_every_epoch():
    """A folder holding both kinds of run of one encoder: the stopped runs (0.60) and the whole ones (0.70) are two
    configurations, each compared with its own kind on the other side; a row without a target is a whole run."""
    stopped = dict(config_id="cfg-stop", target="zeroshot_top1=0.6", stop_at_target=True)
    a = pd.concat([side("A", "a", [0.70, 0.71]).table, side("As", "a", [0.60, 0.61], **stopped).table])
    b = pd.concat([side("B", "b", [0.72, 0.73], target="zeroshot_top1=0.6", stop_at_target=False).table,
                   side("Bs", "b", [0.62, 0.63], **stopped).table])
    result = compare([Source("A", a), Source("B", b)], metrics=["zeroshot_top1"])
    rows = result.rows.set_index("on_stop_at_target")
    assert rows.loc["False", ["a_mean", "b_mean"]].tolist() == pytest.approx([0.705, 0.725])
    assert rows.loc["True", ["a_mean", "b_mean"]].tolist() == pytest.approx([0.605, 0.625])
    # a side without any target column: all its runs trained every epoch
    whole = compare([side("A", "a", [0.70, 0.71]), Source("B", b)], metrics=["zeroshot_top1"]).rows
    assert whole["on_stop_at_target"].tolist() == ["False"] and whole["b_mean"].tolist() == pytest.approx([0.725])


def test_two_pretrained_weights_of_one_architecture_are_two_configurations():
    """bench eval --open-clip rows of ViT-B-32 with two sets of weights, against one trained side: each weight set
    is compared with the trained model on its own, not pooled."""
    weights = [side(f"P{w}", "open_clip:ViT-B-32", [top], config_id=f"cfg-{w}", pretrained=w, preset="pretrained")
               for w, top in (("openai", 0.9), ("laion", 0.8))]
    result = compare([Source("P", pd.concat([w.table for w in weights])), side("T", "a", [0.5])],
                     metrics=["zeroshot_top1"])
    assert "pretrained" in result.differs
    means = {d.split("pretrained: ")[1].split(" ->")[0]: m for d, m in zip(result.rows["differs"], result.rows["a_mean"])}
    assert means == pytest.approx({"openai": 0.9, "laion": 0.8})


def test_runs_of_configurations_the_columns_do_not_tell_apart_are_refused():
    """Two config ids with equal configuration columns (they differ in a flag runs.csv has no column for): their
    mean would describe neither, so compare says how to give each its own side."""
    mixed = pd.concat([side("A", "a", [0.5, 0.6]).table, side("Ad", "a", [0.7], config_id="cfg-dense").table])
    with pytest.raises(BenchError, match=r"A holds runs of 2 configurations \(cfg-a-seed, cfg-dense\).*--split-by "
                                         r"config_id"):
        compare([Source("A", mixed), side("B", "b", [0.5, 0.6])])
    sides = split_sides([Source("all", mixed)], "config_id")
    assert compare(sides, metrics=["zeroshot_top1"]).rows["b_mean"].tolist() == pytest.approx([0.7])


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
    # with --fail-on-significant a drop past the threshold fails only when Welch's test also calls it significant
    assert compare([a, b], fail_on=parse_fail_on(["zeroshot_top1:-0.5"]), fail_on_significant=True).failures
    noisy = side("B", "b", [0.452, 0.534])  # the same mean drop (0.8 points) over a 5.8 point seed spread
    assert compare([a, noisy], fail_on=parse_fail_on(["zeroshot_top1:-0.5"])).failures
    assert not compare([a, noisy], fail_on=parse_fail_on(["zeroshot_top1:-0.5"]), fail_on_significant=True).failures
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


def test_split_by_a_column_with_one_value_says_so_rather_than_asking_for_two_sides():
    """``bench compare A B --split-by eval_templates`` where every run has the same set: the user passed two
    sides, so the error names the column's single value instead of asking for A B."""
    table = pd.concat([side("A", "a", [0.5, 0.6]).table, side("B", "b", [0.7, 0.8]).table])
    with pytest.raises(BenchError, match=r"--split-by templates: every run has templates=seed"):
        split_sides([Source("A", table.iloc[:2]), Source("B", table.iloc[2:])], "templates")


def test_cli_compare_reads_folders_run_ids_and_exits_1_past_threshold(tmp_path, run_cli):
    """End to end through files: run folders and run ids resolve, --fail-on gives exit 1, bad input exit 2."""
    base = write_results(tmp_path / "base", [make_row("ra0", "a", 0, 0.50), make_row("ra1", "a", 1, 0.52)])
    cand = write_results(tmp_path / "cand", [make_row("rb0", "a", 0, 0.40), make_row("rb1", "a", 1, 0.42)])
    code, out, err = run_cli("compare", base, cand, "--metrics", "zeroshot_top1", "--fail-on", "zeroshot_top1:-0.5")
    assert code == 1 and "compare failed" in err and "zeroshot_top1" in out
    code, out, _ = run_cli("compare", base / "runs" / "ra0", "rb1", "--results", cand, "--metrics",
                           "zeroshot_top1,zeroshot_top5")
    assert code == 0 and "n/a (one seed, no predictions.npy)" in out and "n/a (one seed a side)" in out
    # -10 points over two seeds of 1.4 points spread: Welch p = 0.019, significant at 0.05 but not at 0.01
    gate = ["compare", base, cand, "--metrics", "zeroshot_top1", "--fail-on", "zeroshot_top1:-0.5", "--fail-on-significant"]
    code, out, err = run_cli(*gate)
    assert code == 1 and "yes (Welch, p=0.019)" in out and "yes (Welch, p=0.019)" in err
    code, out, err = run_cli(*gate, "--alpha", "0.01", "--correct", "holm")
    # one metric: Holm leaves its p as it is, and the cell still says the p is Holm's
    assert code == 0 and "no (Welch, Holm p=0.019)" in out and "Holm-adjusted" in out and "p < 0.01" in out
    code, _, err = run_cli("compare", base, tmp_path / "nowhere")
    assert code == 2 and err.count("\n") == 1 and "bench: error:" in err
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    code, _, err = run_cli("compare", base, tmp_path / "junk.csv")
    assert code == 2 and "not a bench results table" in err


def test_a_candidate_of_several_configurations_pairs_each_with_its_own_holm_family_and_name():
    """Side B holds encoders y and z, side A encoder x: both pairs are compared, no configuration of B is said to
    lack a partner, Holm adjusts within each pair (not across both), and the table names each row's pair."""
    a = side("A", "x", [0.50, 0.51, 0.52])
    b = Source("B", pd.concat([side("B", "y", [0.60, 0.61, 0.63]).table, side("Bz", "z", [0.40, 0.42, 0.41]).table]))
    metrics = ["zeroshot_top1", "zeroshot_top5"]
    plain, result = compare([a, b], metrics=metrics), compare([a, b], metrics=metrics, correct="holm")
    assert not any("no partner" in w for w in result.warnings)
    assert sorted(set(result.rows["configurations"])) == ["encoder: x -> y", "encoder: x -> z"]
    for pair, rows in result.rows.groupby("configurations"):
        p = plain.rows[plain.rows["configurations"] == pair]["p_value"].to_numpy()
        assert rows["p_adjusted"].tolist() == pytest.approx(holm(p).tolist())
    text = render_markdown(result)
    assert "| configurations " in text and "| encoder: x -> y " in text and "| encoder: x -> z " in text
    assert "| configurations " not in render_markdown(compare([a, side("C", "y", [0.6, 0.61])], metrics=metrics))


def test_a_seed_run_twice_counts_once_in_comparisons_and_aggregates(tmp_path):
    """Seeds 0 and 1 of side A ran again (the same runs again, the same numbers): A has 3 seeds, not 5, so the
    Welch test is the one of the 3 distinct values, and both compare and bench results --aggregate say so."""
    from bench.results.views import aggregate

    a_tops, b_tops = [0.50, 0.52, 0.51], [0.53, 0.55, 0.54]
    again = pd.DataFrame([make_row(f"A-again{i}", "a", i, a_tops[i]) for i in (0, 1)])
    a = Source("A", pd.concat([side("A", "a", a_tops).table, again], ignore_index=True))
    result = compare([a, side("B", "b", b_tops)], metrics=["zeroshot_top1"])
    (row,) = result.rows.to_dict("records")
    assert row["a_n"] == 3 and row["p_value"] == pytest.approx(scipy_stats.ttest_ind(b_tops, a_tops,
                                                                                    equal_var=False).pvalue)
    assert any("2 run(s) of A left out (A0, A1): a later run of the same configuration and seed" in w
               for w in result.warnings)
    agg = aggregate(a.table)
    assert agg["n"].tolist() == [3] and agg["seeds"].tolist() == ["0,1,2"]
    assert "2 run(s) left out (A0, A1)" in agg.attrs["repeated_seeds"]
    assert aggregate(side("B", "b", b_tops).table).attrs["repeated_seeds"] is None


def test_an_undefined_welch_test_leaves_top1_to_the_paired_test_over_images(tmp_path):
    """Two seeds a side, each side's seeds equal (0.5 and 0.7): Welch has no variance to work with, so the paired
    bootstrap over the same 300 test images decides top-1; top-5 has no such test and stays n/a (no variance)."""
    labels = np.arange(300) % 3
    base_hits, cand_hits = np.arange(300) < 150, np.arange(300) < 210
    a = _with_predictions(tmp_path / "a", [make_row(f"ra{s}", "a", s, 0.5) for s in (0, 1)], [base_hits] * 2, labels)
    b = _with_predictions(tmp_path / "b", [make_row(f"rb{s}", "b", s, 0.7) for s in (0, 1)], [cand_hits] * 2, labels)
    from bench.results.lookup import load_sources

    rows = compare(load_sources([a, b]), metrics=["zeroshot_top1", "zeroshot_top5"]).rows.set_index("metric")
    top1 = rows.loc["zeroshot_top1"]
    assert math.isnan(top1["seeds_p"]) and top1["test"] == "bootstrap" and top1["significant"] is True
    assert top1["p_value"] == top1["images_p"] and top1["images_ci_low"] > 0
    assert rows.loc["zeroshot_top5", "test"] == "welch" and rows.loc["zeroshot_top5", "significant"] is None


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_results_and_report_say_which_repeated_runs_they_left_out(tmp_path, run_cli):
    rows = [make_row(f"r{s}", "a", s, 0.5 + s / 100) for s in range(3)] + [make_row("r0-again", "a", 0, 0.5)]
    write_results(tmp_path / "res", rows)
    code, out, err = run_cli("results", tmp_path / "res", "--aggregate")
    assert code == 0 and "| 3 " in out and "bench: note: 1 run(s) left out (r0): a later run" in err
    code, out, err = run_cli("report", tmp_path / "res", "--out", tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert code == 0 and "3 runs in 1 configuration(s)" in report and "> note: 1 run(s) left out (r0)" in report


def test_a_repeated_seed_counts_by_its_latest_run_in_time_whatever_the_order_of_the_sources():
    """The later run of a seed is the one with the later time, also when its side lists it first."""
    from bench.results.views import aggregate

    late = make_row("late", "a", 0, 0.6, time="2026-12-07T02:19:00")
    early = make_row("early", "a", 0, 0.5, time="2026-12-07T02:17:00")
    agg = aggregate(pd.DataFrame([late, early]))
    assert agg["zeroshot_top1_mean"].tolist() == [0.6] and "(early)" in agg.attrs["repeated_seeds"]


def test_a_damaged_or_foreign_predictions_file_is_named_and_left_out_of_the_paired_test(tmp_path):
    """A predictions.npy that is not a predictions table, or whose top-1 is not its row's (another run's file),
    is warned about and not paired; the verdict says why there is no test, not "no predictions.npy"."""
    labels = np.arange(200) % 3
    hits_a, hits_b = np.arange(200) < 100, np.arange(200) < 120
    a = write_with_predictions(tmp_path / "a", [make_row("ra", "a", 0, 0.5)], [hits_a], labels)
    b = write_with_predictions(tmp_path / "b", [make_row("rb", "a", 1, 0.6)], [hits_b], labels)
    assert compare(load_sources([a, b]), metrics=["zeroshot_top1"]).rows.iloc[0]["test"] == "mcnemar"

    np.save(b / "runs" / "rb" / "predictions.npy", np.zeros((10, 3), np.int8))
    result = compare(load_sources([a, b]), metrics=["zeroshot_top1"])
    assert any("predictions.npy is not a predictions table bench wrote" in w for w in result.warnings)
    assert "n/a (one seed, a damaged predictions.npy)" in render_markdown(result)

    write_with_predictions(b, [make_row("rb", "a", 1, 0.6)], [np.ones(200, bool)], labels)  # 100%, its row 60%
    result = compare(load_sources([a, b]), metrics=["zeroshot_top1"])
    assert any("gives top-1 1.0000, its row 0.6: not this run's predictions" in w for w in result.warnings)
    assert "n/a (one seed, a predictions.npy not its row's)" in render_markdown(result)


def test_a_metric_neither_side_measured_is_no_row_and_one_side_lacking_it_is_said_so():
    """Transfer rows have no train_seconds: comparing them gives no train_seconds row (not one labelled "one seed a
    side" with n=0 on both); held-out accuracies on one side only read "not measured on one side"."""
    nan = float("nan")
    base = pd.DataFrame([make_row(f"a{s}", "a", s, 0.5 + s / 100, train_seconds=nan, seen_top1=nan) for s in range(3)])
    cand = pd.DataFrame([make_row(f"b{s}", "a", s + 3, 0.6 + s / 100, train_seconds=nan, seen_top1=0.7)
                         for s in range(3)])
    result = compare([Source("base", base), Source("cand", cand)])
    rows = result.rows.set_index("metric")
    assert "train_seconds" not in rows.index and (rows.loc["seen_top1", "a_n"], rows.loc["seen_top1", "b_n"]) == (0, 3)
    assert "| n/a (not measured on one side) |" in render_markdown(result)
    with pytest.raises(BenchError, match="train_seconds: no value on either side of any pair compared"):
        compare([Source("base", base), Source("cand", cand)], metrics=["train_seconds"])
