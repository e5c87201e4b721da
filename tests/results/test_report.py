"""bench report writes report.md and readable PNG figures, each referenced from the markdown."""
import math
import re
import shutil

import pandas as pd
import pytest
from PIL import Image

from tests.support.fake_results import make_row, write_results

FIGURES = {"curves", "confusion", "per_class", "accuracy_vs_time", "accuracy_vs_params", "robustness", "differences"}


def _rows():
    rows = []
    for enc, base in (("a", 0.5), ("b", 0.6)):
        for seed in (0, 1):
            rows.append(make_row(f"{enc}{seed}", enc, seed, base + 0.01 * seed, robust_mean=base - 0.1,
                                 robust_clean=base, robust_contrast=base - 0.2, robust_gaussian_noise=base - 0.05,
                                 probe_top1=base + 0.2, retrieval_i2t_r1=base, retrieval_t2i_r1=base))
    return rows


def test_report_writes_markdown_and_every_figure(tmp_path, run_cli):
    results = write_results(tmp_path / "results", _rows())
    code, out, err = run_cli("report", results, "--out", tmp_path / "report", "--title", "a vs b")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    for section in ("# a vs b", "## Summary", "## Comparison", "## Robustness", "## Linear probe",
                    "## Per-class zero-shot accuracy", "## Runs"):
        assert section in md
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\.png\)", md))
    assert linked == FIGURES
    for name in FIGURES:
        with Image.open(tmp_path / "report" / f"{name}.png") as img:
            img.verify()
            assert img.size[0] >= 600 and img.size[1] >= 300
    # the comparison names the side that differs and tests the 10 point gain over seeds (Welch), with its interval:
    # variances 0.5 points^2 a side: se = sqrt(0.5/2 + 0.5/2) = 0.707 points, df = 2, t_0.975(2) = 4.303: 10 ± 3.04
    assert "b vs a (baseline)" in md and "yes (Welch, p=0.005)" in md and "[+6.96 pp, +13.04 pp], p=0.005" in md


@pytest.mark.slow  # a report drawn twice, every figure
def test_report_from_a_file_alone_says_which_figures_need_run_folders(tmp_path, run_cli):
    results = write_results(tmp_path / "results", _rows(), run_folders=False)
    code, _, err = run_cli("report", results / "runs.csv", "--out", tmp_path / "r")
    assert code == 0, err
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Not drawn (curves, confusion, per_class)" in md
    # with some run folders back, each figure drawn from them names the runs it could not read
    shutil.rmtree(results)
    rows = _rows()
    write_results(results, rows)
    shutil.rmtree(results / "runs" / rows[0]["run_id"])
    code, _, err = run_cli("report", results, "--out", tmp_path / "r2")
    md = (tmp_path / "r2" / "report.md").read_text()
    assert code == 0 and f"Left out of per-class (1 run(s) without a readable runs/<run_id>/per_class.csv): {rows[0]['run_id']}" \
        in md, err
    assert (tmp_path / "r" / "accuracy_vs_time.png").is_file() and not (tmp_path / "r" / "curves.png").exists()


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_damaged_run_file_is_left_out_with_a_warning_not_a_traceback(tmp_path, run_cli):
    """A history.csv that is not CSV, a per_class.csv of bytes, a confusion.csv without its columns: each is named
    on stderr and left out of the figures as a missing file would be; the report is still written."""
    rows = _rows()
    results = write_results(tmp_path / "results", rows)
    (results / "runs" / rows[0]["run_id"] / "history.csv").write_text('garbage,"\n')
    (results / "runs" / rows[1]["run_id"] / "per_class.csv").write_bytes(b"\xff\xfe\x00\x81")
    (results / "runs" / rows[2]["run_id"] / "confusion.csv").write_text("a,b\n1,2\n")
    code, _, err = run_cli("report", results, "--out", tmp_path / "report")
    assert code == 0 and "Traceback" not in err, err
    warnings = [line for line in err.splitlines() if "is damaged" in line]
    assert len(warnings) == 3 and "(no column 'true'); the report leaves it out" in " ".join(warnings), err
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"without a readable runs/<run_id>/per_class.csv): {rows[1]['run_id']}" in md


def test_results_command_filters_sorts_and_formats(tmp_path, run_cli):
    results = write_results(tmp_path / "results", _rows(), run_folders=False)
    code, out, _ = run_cli("results", "--results", results, "--where", "encoder=b", "--sort", "zeroshot_top1",
                           "--format", "csv", "--columns", "run_id,zeroshot_top1")
    assert code == 0 and out.split() == ["run_id,zeroshot_top1", "b1,0.61", "b0,0.6"]
    code, out, _ = run_cli("results", results, "--aggregate", "--columns", "encoder,n,zeroshot_top1")
    assert "50.5 ± 0.7" in out and "60.5 ± 0.7" in out
    code, out, _ = run_cli("results", results, "--long", "--format", "json", "--where", "run_id=a0")
    import json

    records = json.loads(out)
    assert {r["metric"] for r in records} >= {"zeroshot_top1", "robust_mean"} and {r["run_id"] for r in records} == {"a0"}
    code, _, err = run_cli("results", results, "--sort", "nosuch")
    assert code == 2 and "no column 'nosuch'" in err


@pytest.mark.parametrize("lo, hi, integer", [(0.0, 1.0, False), (2.13, 3.31, False), (0.95, 2.05, True),
                                             (0.5, 50.5, True), (-0.02, 0.37, False), (1e-5, 3e-5, False)])
def test_curve_ticks_are_round_evenly_spaced_and_inside_the_axis(lo, hi, integer):
    from bench.results.curves import nice_ticks, tick_label

    ticks = nice_ticks(lo, hi, most=7, integer=integer)
    tolerance = (hi - lo) * 1e-9
    assert 2 <= len(ticks) <= 7 and all(lo - tolerance <= t <= hi + tolerance for t in ticks)
    steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    mantissa = steps.pop() / 10 ** math.floor(math.log10(ticks[1] - ticks[0]))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
    if integer:
        assert all(t == int(t) for t in ticks)
    labels = [tick_label(t, ticks) for t in ticks]
    assert len(set(labels)) == len(labels) and all(math.isclose(float(x), t, abs_tol=1e-12) for x, t in zip(labels, ticks))


def test_configurations_that_differ_only_outside_the_table_columns_get_labels_of_their_own():
    """Two configurations alike in every column runs.csv shows (a speed switch such as --no-compact-embedding
    changes only the config id) are told apart by their config ids, not pooled under one label."""
    import pandas as pd

    from bench.results.report import LABEL, label_configs

    rows = [make_row(f"r{i}", seed=i % 2) for i in range(4)]
    for row in rows[2:]:
        row["config_id"] = "other-cfg"
    labels = label_configs(pd.DataFrame(rows))[LABEL]
    assert labels.nunique() == 2 and labels.iloc[0] == labels.iloc[1] != labels.iloc[2] == labels.iloc[3]
    assert "[other-cfg]" in labels.iloc[2]
    same = label_configs(pd.DataFrame([make_row(f"r{i}", seed=i) for i in range(2)]))[LABEL]
    assert same.tolist() == ["a", "a"]  # one configuration: the plain name, no id


def test_pretrained_models_of_one_architecture_are_labelled_by_their_weights():
    import pandas as pd

    from bench.results.report import LABEL, label_configs

    rows = [make_row(f"p{w}", "open_clip:ViT-B-32", config_id=f"cfg-{w}", pretrained=w) for w in ("openai", "laion")]
    assert label_configs(pd.DataFrame(rows))[LABEL].tolist() == ["openai", "laion"]


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_the_report_compares_one_run_a_side_over_the_test_images_as_compare_does(tmp_path, run_cli):
    """One seed per configuration, each run with its predictions.npy (10 and 25 of 30 images right): the report's
    comparison uses the paired test over the images (exact McNemar), as bench compare does, not n/a."""
    import numpy as np

    from bench.results.predictions import save_predictions

    labels = np.arange(30) % 3
    rows = [make_row("ra", "a", 0, 10 / 30), make_row("rb", "b", 0, 25 / 30)]
    write_results(tmp_path / "res", rows)
    for row, right in zip(rows, (np.arange(30) < 10, np.arange(30) < 25)):
        save_predictions(tmp_path / "res" / "runs" / row["run_id"] / "predictions.npy", labels,
                         np.where(right, labels, (labels + 1) % 3), 3)
    code, _, err = run_cli("report", tmp_path / "res", "--out", tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert code == 0 and "yes (McNemar, p=<0.001)" in text, err


def test_runs_are_shown_in_percent_without_a_seed_column_and_many_configurations_get_colours_of_their_own(
        tmp_path, run_cli):
    import pandas as pd

    from bench.results.figures import config_colors as _colors

    pd.DataFrame({"run_id": ["r1", "r2"], "encoder": ["a", "b"], "zeroshot_top1": [0.5, 0.6],
                  "train_seconds": [1.0, 2.0]}).to_csv(tmp_path / "noseed.csv", index=False)
    code, _, err = run_cli("report", tmp_path / "noseed.csv", "--out", tmp_path / "report")
    runs = (tmp_path / "report" / "report.md").read_text().split("## Runs")[1]
    assert code == 0 and "50.0" in runs and "60.0" in runs and "0.5 " not in runs, err
    colors = _colors([f"c{i}" for i in range(20)])
    assert len(set(colors.values())) == 20


def test_a_report_of_transfer_rows_alone_names_the_dataset_evaluated_and_prints_no_nan(tmp_path, run_cli):
    """Transfer rows carry no training time: the overview cell is blank (not +nan), and the protocol line names the
    dataset the numbers are on beside the one the models trained on."""
    nan = float("nan")
    rows = [make_row(f"{e}{s}@other", e, s, 0.4 + s / 10, eval_dataset="other", train_seconds=nan, test_images=12)
            for e in ("a", "b") for s in range(3)]
    folder = write_results(tmp_path / "res", rows, run_folders=False)
    code, _, err = run_cli("report", folder, "--out", tmp_path / "report")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    assert "- protocol: dataset synthetic (evaluated on other), 12 test images" in md
    assert "nan" not in md.lower()


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_pretrained_model_beside_trained_configurations_of_other_lengths_is_named_not_a_traceback(tmp_path,
                                                                                                   run_cli):
    """A pretrained model's row (no epochs, lr or seed) in a report whose trained runs differ in epochs: the
    configuration names show the blank as "-" and the trained epochs as written (2, not the 2.0 the blank makes of
    its column), instead of a TypeError from joining a missing value into a name."""
    nan = float("nan")
    rows = [make_row(f"e{e}s{s}", "a", s, 0.4 + e / 10, config_id=f"cfg-{e}", epochs=e) for e in (1, 2)
            for s in (0, 1)]
    rows.append(make_row("pt", "open_clip:RN50", nan, 0.7, config_id="cfg-pt", preset="pretrained", pretrained="openai",
                         epochs=nan, lr=nan, batch_size=nan, weight_decay=nan, train_seconds=nan))
    folder = write_results(tmp_path / "res", rows, run_folders=False)
    code, _, err = run_cli("report", folder, "--out", tmp_path / "report")
    assert code == 0 and "Traceback" not in err, err
    summary = (tmp_path / "report" / "report.md").read_text().split("## Summary")[1].split("##")[0]
    names = [line.split("|")[1].strip() for line in summary.splitlines()[4:] if line.startswith("|")]
    assert names == ["a / smoke / 1 / none", "a / smoke / 2 / none", "open_clip:RN50 / pretrained / - / openai"], names


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_history_cut_short_is_named_as_damaged_and_left_out_not_drawn_as_nothing(tmp_path, run_cli):
    """A history.csv that ends part way through a row (a copy cut short) reads in pandas as a row of blanks: the
    run's line vanished from the time-to-accuracy figure while its legend entry stayed, and nothing said so. It is
    now named on stderr as damaged and listed with the runs each figure left out; a whole history is still drawn."""
    from bench.results.run_folder import write_csv

    rows = [make_row(f"r{i}", "a", i, 0.5, target="zeroshot_top1=0.4", stop_at_target=False, reached_target=True,
                     epochs_to_target=1, time_to_target_seconds=1.0) for i in range(2)]
    folder = write_results(tmp_path / "res", rows)
    for row in rows:
        write_csv(pd.DataFrame({"epoch": [1, 2], "step": [4, 8], "train_loss": [3.0, 2.5], "epoch_seconds": [1.0, 1.5],
                                "zeroshot_top1": [0.45, 0.5]}), folder / "runs" / row["run_id"] / "history.csv")
    history = folder / "runs" / "r1" / "history.csv"
    history.write_bytes(history.read_bytes()[:len("epoch,step,train_loss,epoch_seconds,zeroshot_top1\n1,4,3.0")])
    code, _, err = run_cli("report", folder, "--out", tmp_path / "report")
    assert code == 0, err
    assert f"{history} is damaged (cut short: its last row ends part way); the report leaves it out" in err
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Left out of time to accuracy (1 run(s) without an evaluated epoch in a readable " \
           "runs/<run_id>/history.csv): r1." in md
    assert "Left out of curves (1 run(s) without a readable runs/<run_id>/history.csv): r1." in md
    assert "![time to accuracy](time_to_accuracy.png)" in md  # r0's whole history is still drawn


def test_a_summary_cell_averaged_over_fewer_runs_than_its_configuration_says_how_many(tmp_path, run_cli):
    """A configuration of 3 runs, one with a blank top-1: the summary's mean and std are of the other 2 (50 and 52:
    51.0 ± 1.4), and the cell says n=2, where before it sat under "runs 3" as if all three had measured it."""
    rows = [make_row(f"a{s}", "a", s, 0.5 + s / 100) for s in range(3)]
    rows[1]["zeroshot_top1"] = float("nan")
    folder = write_results(tmp_path / "res", rows, run_folders=False)
    code, _, err = run_cli("report", folder, "--out", tmp_path / "report")
    assert code == 0, err
    summary = (tmp_path / "report" / "report.md").read_text().split("## Summary")[1].split("##")[0]
    cells = [c.strip() for c in summary.splitlines()[4].split("|")[1:-1]]
    assert cells[:5] == ["a", "3", "0,1,2", "51.0 ± 1.4 (n=2)", "81.0 ± 1.0"], cells


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_run_id_two_folders_hold_with_different_rows_keeps_the_later_row_and_says_so(tmp_path, run_cli):
    """One sweep plan run into two results folders gives both the same run ids (encoder, configuration, seed).
    Reported together, the row written later is used, with its own run folder, and the report and bench results
    name the rows left out; before, the first folder's rows won without a word. The same folder given twice is
    one set of runs, with no note."""
    def rows(top1, time):
        return [make_row(f"a-cfg-s{s}", "a", s, top1 + s / 100, time=time) for s in (0, 1)]

    first = write_results(tmp_path / "first", rows(0.3, "2026-01-01T10:00:00+00:00"))
    second = write_results(tmp_path / "second", rows(0.6, "2026-01-02T10:00:00+00:00"))
    code, _, err = run_cli("report", first, second, "--out", tmp_path / "report")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    assert "> note: 2 row(s) left out (a-cfg-s0 of " in md and f"bench compare {first} {second}" in md
    assert "| a               | 2      | 0,1     | 60.5 ± 0.7" in md  # the later folder's top-1, 60 and 61
    per_class = md.split("## Per-class zero-shot accuracy")[1]
    assert "| cat     | 60.5 ± 0.7" in per_class  # read from the later folder's run folders
    code, out, err = run_cli("results", first, second, "--format", "csv", "--columns", "run_id,zeroshot_top1")
    assert code == 0 and out.split() == ["run_id,zeroshot_top1", "a-cfg-s0,0.6", "a-cfg-s1,0.61"]
    assert "bench: note: 2 row(s) left out" in err
    code, _, err = run_cli("report", first, first, "--out", tmp_path / "again")
    assert code == 0 and "> note" not in (tmp_path / "again" / "report.md").read_text(), err
    code, out, err = run_cli("results", first / "runs.csv", first / "runs_long.csv")  # no time in the long table
    assert code == 0 and out.count("a-cfg-s0") == 1 and "note" not in err, err


def test_the_runs_table_shows_seeds_as_written_beside_a_pretrained_models_blank_seed(tmp_path, run_cli):
    """A pretrained model's row has no seed, which makes the seed column floats: the runs table showed 0.0, 1.0
    and "nan"; it shows the seeds runs.csv holds, 0 and 1, and a blank."""
    nan = float("nan")
    rows = [make_row(f"a{s}", "a", s, 0.5) for s in (0, 1)]
    rows.append(make_row("pt", "open_clip:RN50", nan, 0.7, config_id="cfg-pt", preset="pretrained", pretrained="openai",
                         epochs=nan, lr=nan, train_seconds=nan))
    folder = write_results(tmp_path / "res", rows, run_folders=False)
    code, _, err = run_cli("report", folder, "--out", tmp_path / "report")
    assert code == 0, err
    runs = (tmp_path / "report" / "report.md").read_text().split("## Runs")[1].split("Commands")[0]
    seeds = [line.split("|")[3].strip() for line in runs.strip().splitlines()[2:]]
    assert seeds == ["0", "1", ""], runs


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_run_reached_through_a_copied_table_and_its_run_folder_keeps_the_folders_figures(tmp_path, run_cli):
    """The same row in a results table copied elsewhere (no run folders beside it) and in its own results folder:
    one run, whose per-class figure is read from the run folder the other source has."""
    rows = [make_row("r0", time="2026-01-01T10:00:00+00:00")]
    folder = write_results(tmp_path / "res", rows)
    (tmp_path / "copy").mkdir()
    shutil.copy(folder / "runs.csv", tmp_path / "copy" / "runs.csv")
    code, _, err = run_cli("report", tmp_path / "copy" / "runs.csv", folder, "--out", tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert code == 0 and "1 runs in 1 configuration(s)" in md and "![per class](per_class.png)" in md, err
    assert "> note" not in md


def test_every_table_of_the_report_lists_configurations_baseline_first_and_classes_in_label_order(tmp_path, run_cli):
    """The report compares every configuration with the first (the baseline), so each of its tables lists the
    configurations in that order, not by name: the per-class table's pivot sorted its columns alphabetically
    (alpha, mid, zeta) while the summary beside it read zeta, alpha, mid. Its rows are the classes in the runs'
    label order (per_class.csv's), not by name either."""
    rows = [make_row(f"{enc}-0", enc, 0, top1, target="zeroshot_top1=0.3", stop_at_target=False,
                     reached_target=True, epochs_to_target=1, time_to_target_seconds=5.0)
            for enc, top1 in (("zeta", 0.5), ("alpha", 0.6), ("mid", 0.7))]
    results = write_results(tmp_path / "results", rows)
    for row in rows:  # label order: frog is class 0
        pd.DataFrame({"class": ["frog", "cat", "dog"], "accuracy": [0.9, 0.5, 0.2], "support": [10, 10, 10]}).to_csv(
            results / "runs" / row["run_id"] / "per_class.csv", index=False)
    code, _, err = run_cli("report", results, "--out", tmp_path / "report")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    sections = {s.split("\n", 1)[0]: s for s in md.split("\n## ")[1:]}
    for name in ("Summary", "Time to target", "Comparison", "Zero-shot classification", "Runs"):
        assert _column(sections[name], "configuration") in (["zeta", "alpha", "mid"], ["alpha", "mid"]), name
    per_class = sections["Per-class zero-shot accuracy"]
    assert _header(per_class) == ["class", "zeta", "alpha", "mid"]
    assert _column(per_class, "class") == ["frog", "cat", "dog"]


def test_the_per_class_table_lists_the_baseline_first_when_its_first_run_has_no_per_class_file(tmp_path):
    """The baseline's first run without per_class.csv (its folder from an older bench, the file deleted) and the
    other configuration's run before the baseline's second: the per-class table and figure still list the baseline
    first, as the summary does, not in the order the runs holding the file come in (alpha, zeta)."""
    from bench.results.report import LABEL, label_configs, per_class_table

    rows = [make_row("zeta-0", "zeta", 0, 0.5), make_row("alpha-0", "alpha", 0, 0.6), make_row("zeta-1", "zeta", 1, 0.5)]
    results = write_results(tmp_path / "results", rows)
    (results / "runs" / "zeta-0" / "per_class.csv").unlink()
    table = label_configs(pd.DataFrame(rows))
    pc = per_class_table(table, {r["run_id"]: results / "runs" / r["run_id"] for r in rows})
    assert list(dict.fromkeys(table[LABEL])) == ["zeta", "alpha"]
    assert list(dict.fromkeys(pc[LABEL])) == ["zeta", "alpha"]

def _table(section: str) -> list[list[str]]:
    """The cells of a section's first markdown table, its header first (the |---| line left out)."""
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[c.strip() for c in line.split("|")[1:-1]] for j, line in enumerate(lines[start:end]) if j != 1]


def _header(section: str) -> list[str]:
    return _table(section)[0]


def _column(section: str, name: str) -> list[str]:
    header, *rows = _table(section)
    return [row[header.index(name)] for row in rows]


@pytest.mark.slow  # 4 s: twelve configurations through every figure; the fallback below stays quick
def test_a_report_over_twelve_configurations_with_long_names_draws_every_figure_without_a_library_warning(
        tmp_path, run_cli):
    """The figures with a legend beside the axes (robustness, accuracy against time and parameters) grow to hold
    it: at a fixed size, 12 configurations whose names run over a dozen columns left constrained layout no room
    for the axes, and matplotlib's UserWarning reached the user's terminal."""
    import warnings

    rows = [make_row(f"r{i}", f"encoder_{i}", 0, 0.3 + 0.02 * i, templates=["seed", "ensemble"][i % 2],
                     lr=[1e-4, 3e-4, 1e-3][i // 4], preset=["reference", "fast"][i % 2],
                     batch_size=[32, 64, 128][i % 3], loss=["clip", "multipositive"][i % 2], weight_decay=[0.01, 0.05, 0.1][i % 3],
                     limit_train=[64, 128][i % 2], precision=["fp32", "bf16"][i % 2], image_size=[32, 64][i % 2],
                     tokenizer=["clip_bpe", "a_much_longer_tokenizer_name"][i % 2], robust_mean=0.2, robust_clean=0.3,
                     robust_contrast=0.1) for i in range(12)]
    results = write_results(tmp_path / "results", rows, run_folders=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli("report", results, "--out", tmp_path / "report")
    assert code == 0 and "Warning" not in err, err
    assert [str(w.message) for w in caught] == []
    for name in ("robustness", "accuracy_vs_time", "accuracy_vs_params"):
        with Image.open(tmp_path / "report" / f"{name}.png") as img:
            img.verify()


def test_a_figure_constrained_layout_cannot_fit_is_saved_without_it_and_without_a_warning(tmp_path):
    """Where decorations outgrow any figure (a title as long as a configuration name), the figure is saved again
    without constrained layout, its box tight around everything drawn, and matplotlib's warning stays in."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.results.figures import _save

    fig, ax = plt.subplots(figsize=(2, 2), constrained_layout=True)
    ax.set_ylabel("\n".join(["a configuration name"] * 30))  # taller than the figure: no room for the axes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _save(fig, tmp_path / "f.png")
    assert [str(w.message) for w in caught] == []
    with Image.open(tmp_path / "f.png") as img:
        img.verify()
