"""Result tables: configuration key, long table, seed aggregation, --where/--sort, and atomic writes."""
import io
import math
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace

import pandas as pd
import pytest

from bench.config import RunConfig, make_config
from bench.errors import BenchError
from bench.results.columns import config_key
from bench.results.views import (
    aggregate,
    filter_rows,
    long_table,
    sort_rows,
    wide_from_long,
)
from tests.support import REPO
from tests.support.fake_results import make_row, write_results


def test_config_key_ignores_seed_and_output_but_not_the_recipe():
    cfg = make_config("smoke", seed=0, out="a")
    assert config_key(cfg) == config_key(replace(cfg, seed=5, out="b", progress=True, evals=("probe",)))
    assert config_key(cfg) != config_key(replace(cfg, lr=1e-3))
    assert config_key(cfg) != config_key(replace(cfg, model=replace(cfg.model, encoder="modified_resnet_cifar")))


def test_config_key_survives_a_new_config_field_with_a_default():
    """Adding a field to RunConfig must not re-key existing results (or a sweep would rerun them)."""
    @dataclass(frozen=True)
    class Extended(RunConfig):
        new_knob: int = 3

    base = make_config("smoke")
    assert config_key(Extended(**{f: getattr(base, f) for f in base.__dataclass_fields__})) == config_key(base)


def test_long_table_has_one_row_per_run_and_metric_and_round_trips():
    wide = pd.DataFrame([make_row("r1", top1=0.5), make_row("r2", top1=0.7, probe_top1=float("nan"))])
    long = long_table(wide)
    assert not long.duplicated(["run_id", "metric"]).any()
    assert set(long[long.run_id == "r1"].metric) >= {"zeroshot_top1", "zeroshot_top5", "train_seconds"}
    assert long.value.notna().all()
    back = wide_from_long(long).set_index("run_id")
    assert back.loc["r2", "zeroshot_top1"] == 0.7 and back.loc["r1", "encoder"] == "a"


def test_zero_shot_top1_without_test_time_augmentation_is_an_accuracy_in_every_view(tmp_path):
    """zeroshot_top1_no_tta (an encoder with test-time augmentation, with it off) is an accuracy like the top-1
    beside it: listed right after it, in runs_long.csv, averaged over seeds, shown and filtered as percent."""
    from bench.results.columns import metric_columns
    from bench.results.views import display_table

    rows = [make_row("r1", top1=0.9, zeroshot_top1_no_tta=0.8), make_row("r2", seed=1, top1=0.9,
                                                                         zeroshot_top1_no_tta=0.86)]
    write_results(tmp_path, rows, run_folders=False)
    wide = pd.read_csv(tmp_path / "runs.csv")
    assert metric_columns(wide)[:3] == ["zeroshot_top1", "zeroshot_top1_no_tta", "zeroshot_top5"]
    long = pd.read_csv(tmp_path / "runs_long.csv")
    assert list(long.loc[long["metric"] == "zeroshot_top1_no_tta", "value"]) == [0.8, 0.86]
    assert aggregate(wide).loc[0, "zeroshot_top1_no_tta_mean"] == pytest.approx(0.83)
    shown = display_table(wide, columns=["zeroshot_top1_no_tta"], aggregate_=True)
    assert list(shown["zeroshot_top1_no_tta"]) == ["83.0 ± 4.2"]
    with pytest.raises(BenchError, match="write 0.85 for 85%"):
        filter_rows(wide, ["zeroshot_top1_no_tta>85"])


def test_the_long_view_in_markdown_shows_accuracies_in_percent_as_every_other_markdown_view(tmp_path, run_cli):
    """bench results --long printed raw fractions (0.7195) in markdown while the wide and aggregated views print
    percent (71.95 as 72.0): each value is shown as its metric's column is in the wide view. CSV and JSON keep
    the fractions runs_long.csv holds."""
    row = make_row("r1", top1=0.7195, target="zeroshot_top1=0.5", stop_at_target=False, reached_target=True,
                   epochs_to_target=1, time_to_target_seconds=5.25)
    write_results(tmp_path, [row], run_folders=False)
    code, out, err = run_cli("results", tmp_path, "--long", "--columns", "metric,value")
    assert code == 0, err
    cells = dict(tuple(c.strip() for c in line.split("|")[1:-1]) for line in out.splitlines()[2:])
    wide = run_cli("results", tmp_path, "--columns", ",".join(cells))[1].splitlines()
    shown = dict(zip([c.strip() for c in wide[0].split("|")[1:-1]], [c.strip() for c in wide[2].split("|")[1:-1]]))
    # reached_target stays the long table's 1 or 0 (True in the wide view)
    assert cells == {**shown, "reached_target": "1"} and shown["reached_target"] == "True"
    assert cells["zeroshot_top1"] == "72.0" and cells["params"] == "1,000"
    assert cells["time_to_target_seconds"] == "5.25"
    code, out, _ = run_cli("results", tmp_path, "--long", "--columns", "metric,value", "--format", "csv")
    assert "zeroshot_top1,0.7195" in out.split()


def test_every_seconds_column_shows_tenths_in_the_aggregated_view_as_in_the_per_run_view(tmp_path, run_cli):
    """--aggregate printed train_seconds to a tenth (11.5 ± 1.4) beside train_eval_seconds to a thousandth
    (13.346 ± 1.000); every time column now shows tenths, mean and std, as the per-run view shows train_seconds."""
    import re

    write_results(tmp_path, [make_row(f"r{s}", seed=s, train_seconds=10.123 + 1.37 * s,
                                      train_eval_seconds=12.3456 + s) for s in range(3)], run_folders=False)
    times = "train_seconds,train_eval_seconds"

    def cells(*args):
        code, out, err = run_cli("results", tmp_path, "--columns", times, *args)
        assert code == 0, err
        return [c.strip() for line in out.splitlines()[2:] for c in line.split("|")[1:-1]]

    assert cells("--aggregate") == ["11.5 ± 1.4", "13.3 ± 1.0"]
    per_run = cells()
    assert per_run[:2] == ["10.1", "12.3"] and all(re.fullmatch(r"\d+\.\d", c) for c in per_run), per_run


def test_runs_long_csv_keeps_the_columns_that_tell_pretrained_weights_apart(tmp_path, run_cli):
    """Two weights of one architecture (bench eval --open-clip rows: their own config ids, told apart by pretrained)
    compare from runs_long.csv as from runs.csv, not refused as configurations runs.csv has no column for."""
    for side, shift in (("A", 0.0), ("B", 0.02)):
        write_results(tmp_path / side, [make_row(f"{side}{i}", "ViT-B-32", 0, top1 + shift, preset="pretrained",
                                                 pretrained=weights, config_id=f"cfg-{weights}")
                                        for i, (weights, top1) in enumerate((("openai", 0.6), ("laion", 0.5)))],
                      run_folders=False)
    for name in ("runs.csv", "runs_long.csv"):
        code, out, err = run_cli("compare", tmp_path / "A" / name, tmp_path / "B" / name,
                                 "--metrics", "zeroshot_top1", "--format", "csv")
        assert code == 0, err
        rows = pd.read_csv(io.StringIO(out)).set_index("on_pretrained")
        assert rows.loc["openai", "diff"] == pytest.approx(0.02) and rows.loc["laion", "a_mean"] == 0.5


def test_shown_tables_keep_blanks_blank_and_whole_numbers_whole(tmp_path):
    """A blank seed (a pretrained model's row) makes runs.csv's seed column floats when read back: bench results
    still shows seed 0 as 0 and the blank as blank, not 0.0 and nan; other numbers and text are as they were."""
    from bench.results.views import display_table

    pretrained = make_row("p", "ViT-B-32", 0, 0.6, preset="pretrained", lr=0.25)
    pretrained.update(seed=None, epochs=None, tokenizer=None)
    write_results(tmp_path, [make_row("t", "a", 0, 0.5, epochs_to_target=2.0), pretrained], run_folders=False)
    table = pd.read_csv(tmp_path / "runs.csv")
    assert table["seed"].dtype == float  # what a blank does to the column
    shown = display_table(table, columns=["run_id", "seed", "epochs", "epochs_to_target", "lr", "tokenizer",
                                          "zeroshot_top1"])
    assert shown.to_dict("list") == {"run_id": ["t", "p"], "seed": ["0", ""], "epochs": ["1", ""],
                                     "epochs_to_target": ["2", ""], "lr": [0.0001, 0.25],
                                     "tokenizer": ["clip_bpe", ""], "zeroshot_top1": ["50.0", "60.0"]}


def test_the_default_view_shows_held_out_accuracies_and_targets_where_runs_measured_them():
    """bench results' default columns add the held-out classes with seen, unseen and harmonic top-1 where a run held
    classes out, and the target with the time to it where a run had one; a table of neither gains no column."""
    from bench.results.views import display_table

    plain = [make_row("a", "e", 0, 0.5), make_row("b", "e", 1, 0.6)]
    held = make_row("h", "e", 2, 0.4, unseen_classes="cat,truck", seen_top1=0.5, unseen_top1=0.1, harmonic_top1=0.1667,
                    target="zeroshot_top1=0.3", reached_target=True, epochs_to_target=1, time_to_target_seconds=2.5)
    columns = list(display_table(pd.DataFrame(plain + [held])).columns)
    assert columns[-8:] == ["unseen_classes", "seen_top1", "unseen_top1", "harmonic_top1", "target", "reached_target",
                            "epochs_to_target", "time_to_target_seconds"]
    assert display_table(pd.DataFrame(plain + [held])).iloc[-1]["harmonic_top1"] == "16.7"
    table = pd.DataFrame(plain + [{**plain[0], "run_id": "c", "harmonic_top1": None, "target": ""}])
    assert not {"harmonic_top1", "target"} & set(display_table(table).columns)


def test_a_missing_metric_of_any_float_type_is_a_blank_cell():
    """A metric column built from float32 values (an evaluation's) holds numpy NaN, no Python float: its missing
    value still prints blank, as a Python NaN, None or pandas' NA does, never "nan"; so does a missing std."""
    import numpy as np

    from bench.results.views import fmt_value

    for missing in (np.float32("nan"), np.float64("nan"), float("nan"), None, pd.NA):
        assert fmt_value(missing, "seen_top1") == fmt_value(missing, "final_train_loss") == ""
    assert fmt_value(np.float32(0.5), "seen_top1", np.float32("nan")) == "50.0"


def test_aggregate_mean_and_sample_std_over_seeds():
    """Seeds 0.5 and 0.7: mean 0.6, sample std sqrt(0.02); one seed: std NaN."""
    table = pd.DataFrame([make_row("r1", "a", 0, 0.5), make_row("r2", "a", 1, 0.7), make_row("r3", "b", 0, 0.4)])
    agg = aggregate(table).set_index("encoder")
    assert agg.loc["a", "n"] == 2 and agg.loc["a", "seeds"] == "0,1"
    assert agg.loc["a", "zeroshot_top1_mean"] == pytest.approx(0.6)
    assert agg.loc["a", "zeroshot_top1_std"] == pytest.approx(math.sqrt(0.02))
    assert math.isnan(agg.loc["b", "zeroshot_top1_std"])


def test_where_and_sort():
    table = pd.DataFrame([make_row("r1", "a", 0, 0.5), make_row("r2", "a", 1, 0.7), make_row("r3", "b", 0, 0.4)])
    assert list(filter_rows(table, ["encoder=a", "seed!=0"]).run_id) == ["r2"]
    assert list(filter_rows(table, ["zeroshot_top1>=0.5"]).run_id) == ["r1", "r2"]
    assert list(filter_rows(table, ["encoder=a,b"]).run_id) == ["r1", "r2", "r3"]
    assert list(sort_rows(table, "zeroshot_top1").run_id) == ["r2", "r1", "r3"]  # metrics: best first
    assert list(sort_rows(table, "train_seconds").run_id) == ["r1", "r3", "r2"]  # times: lowest first
    for bad in (["nosuch=1"], ["encoder"], ["seed>x"]):
        with pytest.raises(BenchError):
            filter_rows(table, bad)


def test_where_selects_a_held_out_split_however_its_classes_are_ordered(tmp_path):
    """A holdout_classes or unseen_classes cell is itself a list: --where holdout_classes=red,cat is that split (in
    any order), as well as any run holding out red or cat alone; before, "any of red, cat" matched no split of two
    and bench compare/report said --where left no runs. Read through runs.csv, where the blanks are NaN."""
    rows = [make_row("all", seed=0), make_row("pair", seed=1, holdout_classes="cat,red", unseen_classes="red,cat"),
            make_row("red", seed=2, holdout_classes="red", unseen_classes="red"),
            make_row("count", seed=3, holdout_classes="2", unseen_classes="cat,dog")]
    table = pd.read_csv(write_results(tmp_path, rows, run_folders=False) / "runs.csv")
    assert list(filter_rows(table, ["holdout_classes=red,cat"]).run_id) == ["pair", "red"]
    assert list(filter_rows(table, ["holdout_classes= cat, red"]).run_id) == ["pair"]
    assert list(filter_rows(table, ["unseen_classes=cat,red"]).run_id) == ["pair", "red"]
    assert list(filter_rows(table, ["holdout_classes!=red,cat"]).run_id) == ["all", "count"]
    assert list(filter_rows(table, ["holdout_classes=2"]).run_id) == ["count"]


def test_append_writes_runs_and_long_table_together(tmp_path):
    write_results(tmp_path, [make_row("r1"), make_row("r2", seed=1)], run_folders=False)
    wide = pd.read_csv(tmp_path / "runs.csv")
    long = pd.read_csv(tmp_path / "runs_long.csv")
    assert list(wide.run_id) == ["r1", "r2"]
    assert set(long.run_id) == {"r1", "r2"} and {"metric", "value"} <= set(long.columns)


def test_a_crash_while_writing_leaves_the_old_tables_intact(tmp_path):
    """A process SIGKILLed inside the write (data written, not yet renamed) must leave runs.csv and
    runs_long.csv exactly as they were, and readable."""
    write_results(tmp_path, [make_row("r1")], run_folders=False)
    before = {name: (tmp_path / name).read_bytes() for name in ("runs.csv", "runs_long.csv")}
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import bench.atomic_files
        from tests.support.fake_results import make_row
        from bench.results.runs_csv import append_run

        def crash(fd):  # the temp file holds the new table; die before os.replace
            os.kill(os.getpid(), signal.SIGKILL)

        bench.atomic_files.os.fsync = crash
        append_run({str(tmp_path)!r}, make_row("r2", seed=1))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the half-done write really happened
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data
    assert list(pd.read_csv(tmp_path / "runs.csv").run_id) == ["r1"]


def test_config_id_leaves_out_every_option_resume_may_change_and_only_the_marked_fields():
    """The fields `--resume` may change (and the other how-it-runs fields) never change a configuration's id;
    a field that shapes training does."""
    import dataclasses

    from bench.app.resume import ALLOWED_WITH_RESUME
    from bench.config import RunConfig, make_config

    excluded = {f.name for f in dataclasses.fields(RunConfig) if not f.metadata.get("config_id", True)}
    assert set(ALLOWED_WITH_RESUME) <= excluded
    # eval_every is conditional (bench.config.in_id_when): in the id only where it decides where a run stops
    assert excluded == {"seed", "out", "progress", "device", "log_every", "save_checkpoints", "compile", "data_dir",
                        "channels_last", "evals", "robust_limit", "robust_severities",
                        "cudnn_benchmark", "deterministic", "checkpoint_every", "log", "wandb_project",
                        "wandb_entity", "prewarm_steps", "transfer"}
    base = make_config("reference")
    for changed in (dict(out="elsewhere"), dict(progress=True), dict(checkpoint_every=100), dict(seed=3),
                    dict(log=("tensorboard", "wandb"), wandb_project="p")):
        assert config_key(dataclasses.replace(base, **changed)) == config_key(base), changed
    assert config_key(dataclasses.replace(base, lr=3e-4)) != config_key(base)


def test_where_reads_true_and_false_columns_as_written_or_read_back_as_text():
    """reached_target is a bool column, or text once a blank made it objects: =false, =true, =1 and !=true pick the
    same rows either way; a comparison (>) or another word is one line."""
    rows = [make_row("r1", reached_target=True), make_row("r2", reached_target=False), make_row("r3")]
    as_bool = pd.DataFrame(rows[:2])
    as_text = pd.DataFrame(rows).astype({"reached_target": object})
    assert list(filter_rows(as_bool, ["reached_target=false"]).run_id) == ["r2"]
    assert list(filter_rows(as_bool, ["reached_target=1"]).run_id) == ["r1"]
    assert list(filter_rows(as_text, ["reached_target=True"]).run_id) == ["r1"]
    assert list(filter_rows(as_text, ["reached_target!=true"]).run_id) == ["r2", "r3"]
    for bad in (["reached_target>0"], ["reached_target=maybe"]):
        with pytest.raises(BenchError, match="is true or false"):
            filter_rows(as_bool, bad)


def test_a_column_named_twice_is_shown_once(tmp_path, run_cli):
    write_results(tmp_path / "res", [make_row("r1"), make_row("r2", seed=1)])
    code, out, err = run_cli("results", tmp_path / "res", "--columns", "run_id,zeroshot_top1,zeroshot_top1",
                             "--format", "json")
    assert code == 0 and [list(r) for r in __import__("json").loads(out)] == [["run_id", "zeroshot_top1"]] * 2, err
    code, out, err = run_cli("results", tmp_path / "res", "--aggregate", "--columns", "zeroshot_top1,zeroshot_top1")
    assert code == 0 and out.count("zeroshot_top1") == 1 and "±" in out, err


def test_a_json_results_file_keeps_ids_that_look_like_numbers(tmp_path):
    from bench.results.lookup import read_results_file

    path = tmp_path / "runs.json"
    pd.DataFrame([make_row("0001", config_id="0123456789")]).to_json(path, orient="records")
    table = read_results_file(path)
    assert table["config_id"].tolist() == ["0123456789"] and table["run_id"].tolist() == ["0001"]


def test_one_configuration_trained_two_ways_has_one_id():
    """2 ranks x 16 trains on the global batch of 1 process x 32 (and not of 1 x 16); held-out classes name one
    split in any order."""
    from bench.app.options import config_from_flags

    base = make_config("smoke", dataset="synthetic")
    assert config_key(replace(base, batch_size=16), ranks=2) == config_key(replace(base, batch_size=32))
    assert config_key(replace(base, batch_size=16), ranks=2) != config_key(replace(base, batch_size=16))
    assert config_key(config_from_flags(holdout_classes=("red", "blue"))) == \
        config_key(config_from_flags(holdout_classes=("blue", "red")))
    assert config_from_flags(holdout_classes=("2",)).holdout_classes == ("2",)


def test_optimizer_settings_enter_the_id_only_under_the_optimizers_that_use_them():
    """--momentum is SGD's and Muon's, --muon-lr and --muon-momentum Muon's: under AdamW they change nothing trained,
    so nothing of the id; where they apply, they are configuration."""
    base = make_config("smoke", dataset="synthetic")
    assert config_key(replace(base, momentum=0.5)) == config_key(replace(base, muon_lr=0.1)) == config_key(base)
    sgd = replace(base, optimizer="sgd", text_lr=2e-3)
    assert config_key(replace(sgd, momentum=0.5)) != config_key(sgd) == config_key(replace(sgd, muon_momentum=0.3))
    muon = replace(base, optimizer="muon", text_lr=2e-3)
    assert config_key(replace(muon, muon_lr=0.1)) != config_key(muon) != config_key(replace(muon, momentum=0.5))
