"""A results folder an older bench wrote (tests/support/old_results: commit 7bd3d82, before transfer rows, held-out
classes, time to target and the CLI reshape) reads with today's tables: its rows are their own dataset's runs, its
configurations keep their ids, and a column it wrote under an older name reads under today's."""
import io
import shutil

import numpy as np
import pandas as pd
import pytest

from bench.results.columns import is_transfer, with_current_columns
from bench.results.lookup import load_source
from tests.support.fake_results import OLD_RESULTS

IDS = {"ff02f78e86": "seed", "0236aefa19": "openai"}  # the fixture's configurations, as its rows name them


def test_old_rows_are_their_own_datasets_evaluation_not_transfer_rows():
    """The old runs.csv has no eval_dataset: each row evaluated the dataset it trained on, so none is a transfer row
    (a transfer row is compared and aggregated apart from the runs' own numbers)."""
    table = load_source(str(OLD_RESULTS)).table
    assert len(table) == 4 and "eval_dataset" not in pd.read_csv(OLD_RESULTS / "runs.csv").columns
    assert (table["eval_dataset"] == "synthetic").all() and not is_transfer(table).any()


def test_old_prewarm_time_reads_as_prewarm_seconds_and_skipped_steps_as_none():
    """7bd3d82 wrote --warm-up's time as warmup_seconds; it reads as prewarm_seconds, so a table of old and new runs
    shows one column, not two half-empty ones. That bench trained no fp16, whose loss scaling alone skips steps, so
    its runs skipped none (0, not blank)."""
    table = load_source(str(OLD_RESULTS)).table
    assert "warmup_seconds" not in table.columns
    assert (table["prewarm_seconds"] == 0.0).all() and (table["skipped_steps"] == 0).all()


def test_renamed_columns_fill_only_the_rows_that_wrote_the_old_name():
    """A mixed table: an old row (warmup_seconds), a new training row (its own prewarm_seconds and skipped_steps,
    kept) and a bench eval row (neither: stays blank; it trained nothing)."""
    mixed = pd.DataFrame([
        {"run_id": "old", "dataset": "synthetic", "warmup_seconds": 1.5},
        {"run_id": "new", "dataset": "synthetic", "eval_dataset": "synthetic", "prewarm_seconds": 2.0,
         "skipped_steps": 3},
        {"run_id": "new@stl", "dataset": "synthetic", "eval_dataset": "stl"},
    ])
    out = with_current_columns(mixed).set_index("run_id")
    assert "warmup_seconds" not in out.columns
    assert out.loc["old", "prewarm_seconds"] == 1.5 and out.loc["old", "skipped_steps"] == 0
    assert out.loc["new", "prewarm_seconds"] == 2.0 and out.loc["new", "skipped_steps"] == 3
    assert pd.isna(out.loc["new@stl", "prewarm_seconds"]) and pd.isna(out.loc["new@stl", "skipped_steps"])
    assert out.loc["old", "eval_dataset"] == "synthetic"


def test_old_robustness_rows_name_the_contrast_they_measured_and_compare_warns_against_todays():
    """7bd3d82's contrast corruption pulled images towards their mean over all channels (ca939d5 made it per
    channel): the same model scores differently, so an old robust_contrast set against a new one without a word
    is a difference of protocol read as one of models."""
    from bench.data.corruptions import PROTOCOL
    from bench.results.columns import OLD_ROBUST_PROTOCOL
    from bench.results.compare import compare_context
    from bench.results.lookup import Source

    old = with_current_columns(pd.DataFrame([
        {"run_id": "old", "dataset": "synthetic", "warmup_seconds": 0.0, "robust_clean": 0.5, "robust_contrast": 0.3},
        {"run_id": "old-plain", "dataset": "synthetic", "warmup_seconds": 0.0},  # measured no robustness
    ]))
    assert old["robust_protocol"].tolist()[0] == OLD_ROBUST_PROTOCOL and pd.isna(old["robust_protocol"][1])
    new = with_current_columns(pd.DataFrame([
        {"run_id": "new", "dataset": "synthetic", "eval_dataset": "synthetic", "robust_clean": 0.5,
         "robust_contrast": 0.4, "robust_protocol": PROTOCOL}]))
    assert new["robust_protocol"].tolist() == [PROTOCOL]
    (warning,) = compare_context([Source("A", old.iloc[:1]), Source("B", new)])
    assert "robust_protocol" in warning and OLD_ROBUST_PROTOCOL in warning and PROTOCOL in warning
    assert compare_context([Source("A", new), Source("B", new)]) == []


def test_robustness_rows_that_recorded_no_protocol_are_compared_blank_whatever_else_their_folder_holds():
    """Rows between the warm-up rename (d9a8ec4) and ca939d5 measured the old contrast but wrote neither
    warmup_seconds nor robust_protocol, so bench cannot name their protocol: blank. bench compare warned of blank
    against today's only where the side's table also held a row with the column; a folder of such rows alone
    lacked the column, and its robust_contrast was set against today's without a word."""
    from bench.data.corruptions import PROTOCOL
    from bench.results.compare import compare_context
    from bench.results.lookup import Source

    older = {"dataset": "synthetic", "prewarm_seconds": 0.0, "robust_clean": 0.5, "robust_contrast": 0.3}
    today = {"run_id": "new", "dataset": "synthetic", "robust_clean": 0.5, "robust_contrast": 0.4,
             "robust_protocol": PROTOCOL}
    alone = with_current_columns(pd.DataFrame([{"run_id": "mid", **older}]))
    assert pd.isna(alone["robust_protocol"]).all()
    mixed = with_current_columns(pd.DataFrame([{"run_id": "mid", **older}, {**today, "run_id": "new2"}]))
    new = with_current_columns(pd.DataFrame([today]))
    for side in (alone, mixed):
        (warning,) = compare_context([Source("A", side), Source("B", new)])
        assert "robust_protocol" in warning and PROTOCOL in warning
    plain = with_current_columns(pd.DataFrame([{"run_id": "p", "dataset": "synthetic", "zeroshot_top1": 0.5}]))
    assert "robust_protocol" not in plain.columns  # no robustness measured: no column


def test_aggregate_groups_the_old_runs_by_the_configuration_ids_they_recorded(run_cli):
    code, out, err = run_cli("results", str(OLD_RESULTS), "--aggregate", "--format", "csv")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out), dtype={"config_id": str}).set_index("config_id")
    assert dict(table["templates"]) == IDS and (table["n"] == 2).all()
    assert (table["eval_dataset"] == "synthetic").all()


def test_compare_of_old_runs_joins_them_and_reads_their_predictions(run_cli):
    """Old against old: the sides differ by template set only, and the paired test over the test images reads
    each old run's predictions.npy."""
    code, out, err = run_cli("compare", str(OLD_RESULTS), "--split-by", "templates")
    assert code == 0, err
    assert "differs: templates: seed -> openai" in out or "differs: templates: openai -> seed" in out
    assert "(bootstrap)" in out  # the paired test over test images ran on the old predictions


def test_compare_of_old_runs_with_new_ones_of_the_same_configuration_joins_them(run_cli, tmp_path):
    """A new run's row (eval_dataset written, prewarm_seconds) beside the old runs of its configuration: one
    configuration on each side, joined; nothing reported as another dataset's rows."""
    new = tmp_path / "new"
    new.mkdir()
    old = pd.read_csv(OLD_RESULTS / "runs.csv", dtype={"config_id": str})
    rows = old[old["config_id"] == "ff02f78e86"].drop(columns=["warmup_seconds"]).assign(
        run_id=lambda d: d["run_id"] + "-new", eval_dataset="synthetic", prewarm_seconds=0.0, skipped_steps=0,
        zeroshot_top1=lambda d: d["zeroshot_top1"] + 0.01)
    rows.to_csv(new / "runs.csv", index=False)
    code, out, err = run_cli("compare", str(OLD_RESULTS), str(new), "--where", "templates=seed",
                             "--metrics", "zeroshot_top1")
    assert code == 0, err
    assert "+1.00 pp" in out and "eval_dataset" in out.split("joined on:")[1].splitlines()[0]
    assert "warning" not in err


@pytest.mark.slow
def test_report_of_an_old_results_folder_draws_without_warnings(run_cli, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(OLD_RESULTS, folder)
    code, out, err = run_cli("report", str(folder), "--out", str(tmp_path / "report"))
    assert code == 0 and err == "", err
    text = (tmp_path / "report" / "report.md").read_text()
    assert "4 runs in 2 configuration(s)" in text and "Zero-shot transfer" not in text
    assert np.load(folder / "runs" / "modified_resnet-0236aefa19-s0" / "predictions.npy").shape == (256,)
