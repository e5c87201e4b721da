"""Transfer rows (a run evaluated on another dataset) and held-out classes through bench results, compare and report:
each evaluated dataset is compared and aggregated on its own, never pooled with another, and tables from before
eval_dataset read as their own dataset's evaluation."""
import io

import pandas as pd
import pytest

from bench.results.compare import compare
from bench.results.lookup import Source
from tests.support.fake_results import make_row, write_results


def runs(label, encoder, home, transfer, **extra):
    """One side: per seed the run's own row (synthetic, 30 test images) and its transfer row on 'stl' (80 images,
    its own template set), linked by source_run_id."""
    rows = []
    for seed, (top1, stl) in enumerate(zip(home, transfer)):
        run_id = f"{label}{seed}"
        rows.append(make_row(run_id, encoder, seed, top1, eval_dataset="synthetic", **extra))
        rows.append(make_row(f"{run_id}@stl", encoder, seed, stl, eval_dataset="stl", eval_templates="stl_prompts",
                             source_run_id=run_id, test_images=80, **extra))
    return rows


def test_compare_pairs_each_evaluated_dataset_with_its_own():
    """+4 points at home and -6 points on stl (two seeds a side): two comparisons, one per dataset, each from that
    dataset's rows alone, and no protocol warning for the transfer rows' other test images."""
    a = Source("A", pd.DataFrame(runs("a", "a", [0.50, 0.52], [0.30, 0.34])))
    b = Source("B", pd.DataFrame(runs("b", "b", [0.54, 0.56], [0.24, 0.28])))
    result = compare([a, b], metrics=["zeroshot_top1"])
    rows = result.rows.set_index("on_eval_dataset")
    assert sorted(rows.index) == ["stl", "synthetic"] and result.differs == ["encoder"]
    assert (rows.loc["synthetic", "a_mean"], rows.loc["synthetic", "b_mean"]) == pytest.approx((0.51, 0.55))
    assert (rows.loc["stl", "a_mean"], rows.loc["stl", "b_mean"]) == pytest.approx((0.32, 0.26))
    assert rows.loc["stl", "diff"] == pytest.approx(-0.06) and rows.loc["stl", "a_n"] == 2
    assert not result.warnings, result.warnings


def test_a_table_from_before_eval_dataset_compares_as_its_own_datasets_evaluation():
    """Old rows (no eval_dataset column) join the new side's home rows; the new side's transfer rows have no partner
    and are left out with a warning, not pooled into the home comparison."""
    old = pd.DataFrame([make_row(f"o{s}", "a", s, t) for s, t in enumerate([0.50, 0.52])])
    assert "eval_dataset" not in old.columns
    new = Source("new", pd.DataFrame(runs("n", "b", [0.60, 0.62], [0.10, 0.12])))
    result = compare([Source("old", old), new], metrics=["zeroshot_top1"])
    assert result.rows["on_eval_dataset"].tolist() == ["synthetic"]
    assert result.rows["b_mean"].iloc[0] == pytest.approx(0.61)
    assert any("no partner" in w for w in result.warnings)


def test_sides_that_share_no_evaluated_dataset_are_compared_with_a_warning():
    table = pd.DataFrame(runs("a", "a", [0.5, 0.52], [0.3, 0.34]))
    home, away = table[table.eval_dataset == "synthetic"], table[table.eval_dataset == "stl"]
    result = compare([Source("home", home), Source("away", away)], metrics=["zeroshot_top1"])
    assert "eval_dataset" in result.differs
    assert any("evaluated on different datasets" in w for w in result.warnings)


def test_results_aggregate_keeps_each_evaluated_dataset_apart(tmp_path, run_cli):
    results = write_results(tmp_path / "results", runs("a", "a", [0.50, 0.52], [0.30, 0.34]), run_folders=False)
    code, out, err = run_cli("results", results, "--aggregate", "--format", "csv",
                             "--columns", "eval_dataset,n,zeroshot_top1_mean")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out)).set_index("eval_dataset")
    assert table.loc["synthetic", "zeroshot_top1_mean"] == pytest.approx(0.51)
    assert table.loc["stl", "zeroshot_top1_mean"] == pytest.approx(0.32) and table.loc["stl", "n"] == 2
    code, out, err = run_cli("results", results, "--format", "csv")  # the default view says what each row measured
    assert code == 0, err
    assert pd.read_csv(io.StringIO(out))["eval_dataset"].tolist() == ["synthetic", "stl", "synthetic", "stl"]


@pytest.mark.slow  # a whole report with its figures: seconds
def test_report_has_a_models_by_datasets_transfer_table_and_reads_the_rest_on_home_rows(tmp_path, run_cli):
    """Two encoders, two seeds, home and stl rows, plus a pretrained model evaluated on both datasets (its rows name
    the dataset evaluated as theirs): the transfer table has one row per model and one column per dataset, the
    body of the report (summary, runs) counts the runs on their own datasets only."""
    rows = runs("a", "a", [0.50, 0.52], [0.30, 0.34]) + runs("b", "b", [0.60, 0.62], [0.40, 0.46])
    for dataset, top1 in (("synthetic", 0.7), ("stl", 0.8)):
        row = make_row(f"clip-{dataset}", "open_clip:RN50", 0, top1, templates="openai", preset="pretrained",
                       dataset=dataset, eval_dataset=dataset, config_id=f"oc-{dataset}", pretrained="openai")
        rows.append({**row, "seed": None, "train_seconds": None})  # a pretrained model's row: no training columns
    results = write_results(tmp_path / "results", rows, run_folders=False)
    code, _, err = run_cli("report", results, "--out", tmp_path / "report")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    # the 4 runs on synthetic and the pretrained model's 2 rows (each its own dataset's evaluation), not the 4
    # transfer rows
    assert "6 runs in 4 configuration(s)" in md
    section = md.split("## Zero-shot transfer")[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert [c.strip() for c in table[0].split("|")[1:-1]] == ["configuration", "synthetic", "stl"]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table[2:]}
    # a: home 0.50, 0.52 -> 51.0 ± 1.4; stl 0.30, 0.34 -> 32.0 ± 2.8. b: 61.0 ± 1.4; 0.40, 0.46 -> 43.0 ± 4.2
    assert cells["a"] == ["51.0 ± 1.4 (n=2)", "32.0 ± 2.8 (n=2)"]
    assert cells["b"] == ["61.0 ± 1.4 (n=2)", "43.0 ± 4.2 (n=2)"]
    assert cells["open_clip:RN50 (openai)"] == ["70.0 (n=1)", "80.0 (n=1)"]
    assert "Template sets: synthetic: seed, openai; stl: openai, stl_prompts." in section
    long = pd.read_csv(tmp_path / "report" / "transfer.csv")
    stl = long[(long.eval_dataset == "stl") & (long.configuration == "b")].iloc[0]
    assert (stl.n, stl.eval_templates, stl.test_images) == (2, "stl_prompts", 80)
    assert stl.zeroshot_top1_mean == pytest.approx(0.43) and stl.zeroshot_top1_std == pytest.approx(0.0424264, rel=1e-5)


def test_report_shows_seen_unseen_and_harmonic_top1_of_runs_that_held_classes_out(tmp_path, run_cli):
    rows = [make_row(f"h{s}", "a", s, 0.5, holdout_classes="2", unseen_classes=u, seen_top1=sv, unseen_top1=uv,
                     harmonic_top1=2 * sv * uv / (sv + uv), config_id="cfg-a-holdout")
            for s, (u, sv, uv) in enumerate([("cat,dog", 0.6, 0.2), ("dog,frog", 0.7, 0.1)])]
    rows += [make_row(f"f{s}", "a", s, 0.55) for s in range(2)]
    results = write_results(tmp_path / "results", rows, run_folders=False)
    code, _, err = run_cli("report", results, "--out", tmp_path / "report")
    assert code == 0, err
    section = (tmp_path / "report" / "report.md").read_text().split("## Classes never seen in training")[1]
    section = section.split("\n## ")[0]
    line = next(x for x in section.splitlines() if x.startswith("| 2 "))  # named by what varies: the hold-out
    # harmonic 0.3 and 0.175 -> 23.8 ± 8.8; seen 65.0 ± 7.1; unseen 15.0 ± 7.1; the drawn splits listed
    assert [c.strip() for c in line.split("|")[4:9]] == ["23.8 ± 8.8", "65.0 ± 7.1", "15.0 ± 7.1", "50.0 ± 0.0",
                                                          "cat,dog; dog,frog"]
    assert "| none " not in section  # the configuration without held-out classes has no row here


def test_the_transfer_table_keeps_apart_models_the_configuration_columns_do_not_tell_apart():
    """Two trained configurations equal in every configuration column (a flag runs.csv has no column for): two
    models in the transfer table, each with its own mean, not one pooled over both."""
    from bench.results.report import transfer_table

    table = pd.DataFrame(runs("A", "a", [0.5, 0.6], [0.3, 0.4]) +
                         runs("D", "a", [0.7, 0.8], [0.5, 0.6], config_id="cfg-dense"))
    models = transfer_table(table).set_index(["configuration", "eval_dataset"])["zeroshot_top1_mean"]
    assert models.to_dict() == pytest.approx({("a [cfg-a-seed]", "synthetic"): 0.55, ("a [cfg-a-seed]", "stl"): 0.35,
                                              ("a [cfg-dense]", "synthetic"): 0.75, ("a [cfg-dense]", "stl"): 0.55})


def test_the_transfer_rows_of_a_run_stopped_at_its_target_are_that_stopped_model():
    """A transfer row keeps its run's stop_at_target: the stopped runs (home and stl rows) and the runs that trained
    every epoch are compared per dataset, stop_at_target telling the sides apart, and the report's transfer table
    names the stopped model once, its stl rows with its home rows."""
    from bench.app.dataset_lookup import Target
    from bench.app.transfer import transfer_row
    from bench.data.datasets import make_synthetic
    from bench.results.report import transfer_table

    stl = Target("stl", "stl_prompts", [], make_synthetic("test", 0, n=8), 32)
    metrics = {"top1": 0.3, "top5": 0.6, "mean_per_class_recall": 0.3}

    def side(label, stop, tops):
        home = [make_row(f"{label}{s}", "a", s, t, eval_dataset="synthetic", target="zeroshot_top1=0.5",
                         stop_at_target=stop) for s, t in enumerate(tops)]
        return home + [transfer_row(row, f"{row['run_id']}@stl", stl, metrics) for row in home]

    whole, stopped = pd.DataFrame(side("w", False, [0.60, 0.62])), pd.DataFrame(side("s", True, [0.50, 0.52]))
    assert stopped["stop_at_target"].tolist() == [True] * 4
    result = compare([Source("whole", whole), Source("stopped", stopped)], metrics=["zeroshot_top1"])
    assert "stop_at_target" in result.differs and not any("no partner" in w for w in result.warnings)
    assert sorted(result.rows["on_eval_dataset"]) == ["stl", "synthetic"]
    labels = transfer_table(pd.concat([whole, stopped], ignore_index=True)).groupby("configuration")["eval_dataset"]
    assert sorted(labels.agg(sorted).tolist()) == [["stl", "synthetic"], ["stl", "synthetic"]]
