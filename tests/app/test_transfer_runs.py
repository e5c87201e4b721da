"""A run with held-out classes and zero-shot transfer end to end: the held-out classes never reach training, the row's
seen/unseen/harmonic top-1 are those of its saved predictions, each transfer dataset is one linked row with its own
classes, template set and resized images, and bench eval, --rebuild, compare and report agree with them."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

import bench
import bench.testing
from bench.results.predictions import FILENAME, load_predictions
from tests.support.fake_results import make_row
from tests.support.plugins import TransferSets, swatches
from tests.support.runs import TINY

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread in this module (tests/conftest.py)

RUN = ["run", "--dataset", "synthetic", "--epochs", "1", "--limit-train", "48", "--limit-test", "60", "--batch-size",
       "8", "--device", "cpu", *TINY]


@pytest.mark.slow  # a run, two evaluations of its checkpoint, a rebuild and a report
def test_a_run_holding_classes_out_and_transferring_records_what_it_measured(tmp_path, run_cli, monkeypatch):
    import bench.app.run as run_module
    from bench.data.datasets import SYNTHETIC_CLASSES, make_synthetic

    prompted = []
    table = run_module.prompt_table
    monkeypatch.setattr(run_module, "prompt_table", lambda tpl, classes, *a, **k: prompted.append(classes) or
                        table(tpl, classes, *a, **k))
    out = tmp_path / "results"
    with bench.testing.plugin_registered(TransferSets()):
        code, _, err = run_cli(*RUN, "--holdout-classes", "blue,red", "--transfer", "swatches48", "--out", out)
        assert code == 0, err
        rows = pd.read_csv(out / "runs.csv")
        home = rows[rows.eval_dataset == "synthetic"].iloc[0]
        away = rows[rows.eval_dataset == "swatches48"].iloc[0]

        # training never saw red or blue: not in the prompt table, not among the images trained on
        assert prompted == [tuple(c for c in SYNTHETIC_CLASSES if c not in ("red", "blue"))]
        labels = make_synthetic("train", 0).labels[:48]
        assert home.train_images == int(np.sum(~np.isin(labels, [0, 5]))) < 48
        assert (home.holdout_classes, home.unseen_classes, home.n_classes) == ("blue,red", "red,blue", 10)
        # seen/unseen/harmonic are those of the predictions it saved; zeroshot_top1 is over every test image
        truth, top1 = load_predictions(out / "runs" / home.run_id / FILENAME)
        hits, unseen = truth == top1, np.isin(truth, [0, 5])
        assert unseen.any() and (~unseen).any()
        seen_top1, unseen_top1 = hits[~unseen].mean(), hits[unseen].mean()
        assert (home.seen_top1, home.unseen_top1) == pytest.approx((seen_top1, unseen_top1))
        harmonic = 0.0 if 0 in (seen_top1, unseen_top1) else 2 * seen_top1 * unseen_top1 / (seen_top1 + unseen_top1)
        assert home.harmonic_top1 == pytest.approx(harmonic) and home.zeroshot_top1 == pytest.approx(hits.mean())

        # the transfer row: linked by run id, its own classes, template set and resized images
        assert (away.run_id, away.source_run_id) == (f"{home.run_id}@swatches48", home.run_id)
        assert (away.eval_templates, away.n_classes, away.native_image_size, away.image_size) == ("swatch_words", 4,
                                                                                                48, 32)
        assert (away.config_id, away.seed, away.dataset, away.holdout_classes) == (home.config_id, home.seed,
                                                                                  "synthetic", "blue,red")
        assert pd.isna(away.seen_top1) and pd.isna(away.train_seconds)  # the home dataset's measurements stay there
        truth, top1 = load_predictions(out / "runs" / away.run_id / FILENAME)
        assert truth.tolist() == swatches("test").labels[:60].tolist() and len(truth) == away.test_images
        assert away.zeroshot_top1 == pytest.approx((truth == top1).mean())

        # bench eval of the final weights measures the same, and does not record a row twice
        code, stdout, err = run_cli("eval", out / "runs" / home.run_id / "last.pt", "--dataset",
                                    "synthetic,swatches48", "--format", "csv", "--device", "cpu")
        assert code == 0, err
        assert "is already in" in err and len(pd.read_csv(out / "runs.csv")) == 2
        evaluated = pd.read_csv(io.StringIO(stdout)).set_index("eval_dataset")
        assert evaluated.loc["swatches48", "zeroshot_top1"] == pytest.approx(away.zeroshot_top1, abs=1e-6)
        assert evaluated.loc["synthetic", ["seen_top1", "unseen_top1", "harmonic_top1"]].tolist() == pytest.approx(
            [home.seen_top1, home.unseen_top1, home.harmonic_top1], abs=1e-6)
        # another template set on the transfer dataset is a row of its own
        code, _, err = run_cli("eval", out / "runs" / home.run_id / "last.pt", "--dataset", "swatches48",
                               "--templates", "seed", "--device", "cpu")
        assert code == 0, err
        assert f"{home.run_id}@swatches48+seed" in set(pd.read_csv(out / "runs.csv").run_id)

    # the rows come back from the run records, and report reads them as transfer and held-out results
    before = pd.read_csv(out / "runs.csv")
    code, _, err = run_cli("results", "--rebuild", "--results", out)
    assert code == 0, err
    assert sorted(pd.read_csv(out / "runs.csv").run_id) == sorted(before.run_id)
    code, _, err = run_cli("report", out, "--out", tmp_path / "report")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Zero-shot transfer" in md and "## Classes never seen in training" in md


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_transfer_with_another_template_set_is_named_as_bench_eval_names_it_and_a_foreign_checkpoint_records_none(
        tmp_path, run_cli):
    """--transfer DATASET@TEMPLATES with a set other than the dataset's default gets +TEMPLATES in its id, as bench
    eval names that evaluation, so the default set's evaluation can still be recorded beside it; a last.pt another
    run wrote, copied into this run's folder, is evaluated but never recorded under this run's id."""
    import torch

    out = tmp_path / "results"
    with bench.testing.plugin_registered(TransferSets()):
        code, _, err = run_cli(*RUN, "--transfer", "swatches48@seed", "--out", out)
        assert code == 0, err
        home = pd.read_csv(out / "runs.csv").run_id.iloc[-1]  # the run's own row, last
        assert pd.read_csv(out / "runs.csv").run_id.tolist() == [f"{home}@swatches48+seed", home]
        last = out / "runs" / home / "last.pt"
        code, _, err = run_cli("eval", last, "--dataset", "swatches48", "--device", "cpu")
        assert code == 0 and "already in" not in err, err
        assert f"{home}@swatches48" in set(pd.read_csv(out / "runs.csv").run_id)

        payload = torch.load(last, weights_only=True)
        torch.save({**payload, "run_id": "another-run"}, last)
        rows = len(pd.read_csv(out / "runs.csv"))
        code, _, err = run_cli("eval", last, "--dataset", "swatches48", "--templates", "openai", "--device", "cpu")
        assert code == 0 and "is run another-run's checkpoint, not run" in err, err
        assert len(pd.read_csv(out / "runs.csv")) == rows


class _Killed(BaseException):
    """The process ending at a chosen point (nothing after it runs, no handler catches it)."""


def test_a_run_killed_between_its_transfer_row_and_its_own_row_resumes_to_rows_that_agree(tmp_path, run_cli,
                                                                                          monkeypatch):
    """A run dies once its transfer row is in runs.csv, before its own row; --resume finishes it. The transfer row
    is the finishing attempt's, as its result.json is: resumes 1, as the run's own row says (it stayed 0, the dead
    attempt's, while result.json said 1), and still one row per run id."""
    import json

    import bench.app.run as run_module

    def killed(*args, **kwargs):  # bench.app.run's finish_run writes the run's own row; transfer rows are written
        raise _Killed             # through bench.app.transfer's

    monkeypatch.setattr(run_module, "finish_run", killed)
    out = tmp_path / "results"
    with bench.testing.plugin_registered(TransferSets()):
        with pytest.raises(_Killed):
            run_cli(*RUN, "--transfer", "swatches48", "--out", out)
        monkeypatch.undo()
        (away,) = pd.read_csv(out / "runs.csv").to_dict("records")
        assert away["resumes"] == 0 and away["eval_dataset"] == "swatches48"
        code, _, err = run_cli("run", "--resume", "latest", "--out", out, "--no-progress")
        assert code == 0, err
    rows = pd.read_csv(out / "runs.csv").set_index("run_id")
    home = rows.loc[away["source_run_id"]]
    assert len(rows) == 2 and rows.index.is_unique
    assert home["resumes"] == rows.loc[away["run_id"], "resumes"] == 1
    record = json.loads((out / "runs" / away["run_id"] / "result.json").read_text())
    assert rows.loc[away["run_id"], ["resumes", "eval_seconds", "zeroshot_top1"]].tolist() == pytest.approx(
        [record["resumes"], record["eval_seconds"], record["zeroshot_top1"]])


def test_a_sweep_counts_a_run_done_by_its_own_row_not_by_its_transfer_rows(tmp_path):
    from bench.app.sweep.plan import finished_keys
    from bench.results.runs_csv import append_run

    append_run(tmp_path, make_row("r0@stl", seed=0, eval_dataset="stl", source_run_id="r0"))
    append_run(tmp_path, {**make_row("clip", encoder="open_clip:RN50", preset="pretrained"), "seed": None})
    assert finished_keys(tmp_path) == {}  # a transfer row alone (its run stopped before its own row) is not done
    append_run(tmp_path, make_row("r0", seed=0, eval_dataset="synthetic"))
    assert finished_keys(tmp_path) == {("cfg-a-seed", 0): "r0"}


def test_held_out_classes_are_configuration_and_transfer_datasets_are_not(tmp_path, run_cli):
    """A sweep file's holdout_classes (a count) gives runs another id; transfer evaluates more, computes the same.
    Names are one split in any order (one id); a count is another id than any names (docs/evaluation.md)."""
    common = ["--dataset", "synthetic", "--preset", "smoke", *TINY, "--out", str(tmp_path / "res"), "--dry-run"]
    ids = {}
    for label, base in (("none", ""), ("transfer", "transfer = 'cifar10'\n"), ("holdout", "holdout_classes = 2\n"),
                        ("names", "holdout_classes = ['red', 'blue']\n"),
                        ("reordered", "holdout_classes = [' blue', 'red']\n")):
        path = tmp_path / f"{label}.toml"
        path.write_text(f"[base]\n{base}[[include]]\nencoder = 'modified_resnet'\n")
        code, out, err = run_cli("sweep", path, *common)
        assert code == 0, err
        ids[label] = out.split()[1]
    assert ids["none"] == ids["transfer"] and len({ids["none"], ids["holdout"], ids["names"]}) == 3
    assert ids["names"] == ids["reordered"]


@pytest.mark.slow  # two runs
def test_a_count_and_the_names_it_draws_train_the_same_bits_under_two_configuration_ids(tmp_path, run_cli):
    """--holdout-classes 2 draws purple and pink with seed 0; naming them trains the same run bit for bit (the draw
    uses a generator of its own, not the training streams), but the option as given is the configuration: the
    count and the names are two ids, as docs/evaluation.md says, and the rows tell them apart by holdout_classes."""
    from bench.data.class_split import resolve_holdout
    from bench.data.datasets import SYNTHETIC_CLASSES
    from tests.support.runs import FLAGS, assert_same_run

    assert resolve_holdout(("2",), SYNTHETIC_CLASSES, 0) == ("purple", "pink")
    for label, spec in (("count", "2"), ("names", "pink,purple")):
        code, _, err = run_cli("run", *FLAGS, "--holdout-classes", spec, "--out", tmp_path / label)
        assert code == 0, err
    named = assert_same_run(tmp_path / "count", tmp_path / "names")
    counted = pd.read_csv(tmp_path / "count" / "runs.csv").iloc[0]
    assert (str(counted.holdout_classes), named.holdout_classes) == ("2", "pink,purple")
    assert counted.unseen_classes == named.unseen_classes == "purple,pink"
    assert counted.config_id != named.config_id


def test_bench_eval_reports_the_classes_a_count_drew_in_training_not_a_new_draw(tmp_path, run_cli, monkeypatch):
    """--holdout-classes 2 draws two classes with the run's seed; the checkpoint keeps them, so bench eval reports
    the same unseen classes and metrics as the run's row even where a new draw would give others (numpy does not
    promise a seed's stream across its versions)."""
    import bench.app.evaluate as evaluate
    from bench.data.class_split import resolve_holdout

    out = tmp_path / "results"
    code, _, err = run_cli(*RUN, "--holdout-classes", "2", "--out", out)
    assert code == 0, err
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert len(row.unseen_classes.split(",")) == 2
    monkeypatch.setattr(evaluate, "resolve_holdout", lambda spec, classes, seed, name="": resolve_holdout(
        spec, classes, seed + 1, name))  # what another numpy might draw
    table = evaluate.evaluate_checkpoint(out / "runs" / row.run_id / "last.pt", device="cpu")
    assert table["unseen_classes"].tolist() == [row.unseen_classes]
    assert table[["seen_top1", "unseen_top1"]].iloc[0].tolist() == pytest.approx([row.seen_top1, row.unseen_top1],
                                                                                  abs=1e-6)


@pytest.mark.slow  # a whole run, a stopped one and its resume
def test_a_resumed_run_keeps_the_classes_its_count_drew_not_a_new_draw(tmp_path, run_cli, monkeypatch):
    """--holdout-classes 2, stopped after step 4 and resumed where a new draw gives other classes (another numpy):
    the rest of the run trains on the split its first part did, so it ends as the run never stopped. It used to
    draw again on resume: refused as "the dataset changed since" where the new split had another size, trained
    the remaining steps on other classes where it had the same."""
    import bench.app.run as run_module
    from bench.data.class_split import resolve_holdout
    from tests.support.runs import FLAGS, assert_same_run, run_dir_of, stop_at_ask

    flags = [*FLAGS, "--holdout-classes", "2"]
    code, _, err = run_cli("run", *flags, "--out", tmp_path / "whole")
    assert code == 0, err
    stop_at_ask(monkeypatch, 4)
    code, _, err = run_cli("run", *flags, "--out", tmp_path / "cut")
    assert code == 130, err
    monkeypatch.undo()
    monkeypatch.setattr(run_module, "resolve_holdout", lambda spec, classes, seed, name="": resolve_holdout(
        spec, classes, seed + 1, name))  # what another numpy might draw
    code, _, err = run_cli("run", "--resume", run_dir_of(tmp_path / "cut"), "--no-progress")
    assert code == 0, err
    assert assert_same_run(tmp_path / "whole", tmp_path / "cut")["unseen_classes"] == "purple,pink"


def test_a_resumed_runs_recorded_draw_is_its_split_and_a_class_the_dataset_lost_is_one_line():
    """load_components with the classes last.pt recorded: those are held out (in the dataset's order), whatever the
    seed would draw now; one the dataset no longer has stops the resume with one line naming it."""
    from bench.app.options import config_from_flags
    from bench.app.run import load_components
    from bench.errors import BenchError

    cfg = config_from_flags(dataset="synthetic", limit_train=40, limit_test=20, holdout_classes=("2",))
    parts = load_components(cfg, drawn=("red", "blue"))
    assert parts.unseen == ("red", "blue") and "red" not in parts.trained.classes
    assert load_components(cfg).unseen == ("purple", "pink")  # a fresh run draws with its seed
    with pytest.raises(BenchError, match="the run held out class 'tan', which dataset 'synthetic' does not have now"):
        load_components(cfg, drawn=("red", "tan"))


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_transfer_with_an_explicit_set_never_needs_the_datasets_own(tmp_path, run_cli):
    """A dataset naming a template set nobody registers, transferred to with @TEMPLATES: the run records both rows
    (deciding the +TEMPLATES suffix must not require the dataset's own set), as it did before the suffix."""
    class UnsetDefault:
        @bench.hookimpl
        def register_datasets(self, register):
            register("swatches_bare", swatches, "4 colours at 48 px", templates="never_registered")

    out = tmp_path / "results"
    with bench.testing.plugin_registered(UnsetDefault()):
        code, _, err = run_cli(*RUN, "--transfer", "swatches_bare@seed", "--out", out)
    assert code == 0, err
    home = pd.read_csv(out / "runs.csv").run_id.iloc[-1]
    assert pd.read_csv(out / "runs.csv").run_id.tolist() == [f"{home}@swatches_bare+seed", home]


def test_bench_eval_prints_a_metric_a_transfer_row_did_not_measure_as_a_blank_not_nan(tmp_path, run_cli, capsys,
                                                                                       tmp_path_factory):
    """Held-out classes are the run's own dataset's: the transfer row has no seen/unseen/harmonic top-1. In markdown
    those cells are blank (JSON: null), not the word nan; the measured ones are still numbers."""
    import json
    import shutil

    from tests.support.runs import finished_run, run_dir_of

    out = tmp_path / "results"  # a copy: the transfer row is recorded beside the session's finished run
    shutil.copytree(finished_run(tmp_path_factory.getbasetemp()), out)
    capsys.readouterr()  # what making the finished run printed is not bench eval's output
    args = ("eval", run_dir_of(out) / "last.pt", "--dataset", "synthetic,swatches48", "--holdout-classes", "2",
            "--device", "cpu")
    printed = {}
    with bench.testing.plugin_registered(TransferSets()):
        for fmt in ("markdown", "json"):
            code, printed[fmt], err = run_cli(*args, "--format", fmt)
            assert code == 0, err
    held_out = ("seen_top1", "unseen_top1", "harmonic_top1")
    rows = {r["eval_dataset"]: r for r in json.loads(printed["json"])}
    assert [rows["synthetic"][m] is None for m in held_out] == [False] * 3
    assert [rows["swatches48"][m] is None for m in held_out] == [True] * 3
    assert "nan" not in {c.strip().lower() for c in printed["markdown"].split("|")}  # no cell reads nan
    (away,) = [line for line in printed["markdown"].splitlines() if "@swatches48" in line]
    cells = [c.strip() for c in away.strip().strip("|").split("|")]
    header = [c.strip() for c in printed["markdown"].splitlines()[0].strip().strip("|").split("|")]
    assert [cells[header.index(m)] for m in held_out] == ["", "", ""]
    assert cells[header.index("zeroshot_top1")] != ""


def test_bench_eval_prints_a_transfer_row_under_the_run_id_it_records(tmp_path, run_cli, capsys, tmp_path_factory):
    """A user greps runs.csv for the id bench eval printed: each transfer row's printed run_id is the id its row was
    recorded under (<run>@<dataset>, +<set> for a set other than the dataset's own), not <run>@<dataset>:<set>; a
    single template's row, printed only, is its set's id and the template's index."""
    import json
    import shutil

    from tests.support.runs import finished_run, run_dir_of

    out = tmp_path / "results"
    shutil.copytree(finished_run(tmp_path_factory.getbasetemp()), out)
    capsys.readouterr()
    before = set(pd.read_csv(out / "runs.csv").run_id)
    home = run_dir_of(out).name
    with bench.testing.plugin_registered(TransferSets()):
        code, printed, err = run_cli("eval", out / "runs" / home / "last.pt", "--dataset", "swatches48", "--templates",
                                     "swatch_words,seed", "--per-template", "--format", "json", "--device", "cpu")
    assert code == 0, err
    rows = json.loads(printed)
    recorded = set(pd.read_csv(out / "runs.csv").run_id) - before
    assert recorded == {f"{home}@swatches48", f"{home}@swatches48+seed"}
    assert {r["run_id"] for r in rows if not r["template"]} == recorded
    assert {r["run_id"] for r in rows if r["template"]} == {f"{home}@swatches48[0]", f"{home}@swatches48[1]",
                                                            *(f"{home}@swatches48+seed[{i}]" for i in range(5))}


def test_a_transfer_row_records_how_its_images_were_resized():
    """A 48-px dataset evaluated by a 32-px model: its row names the interpolation and the images' own size, as a
    run's own row does for its dataset."""
    from bench.app.dataset_lookup import load_target
    from bench.app.transfer import transfer_row

    with bench.testing.plugin_registered(TransferSets()):
        target = load_target("swatches48", "swatch_words", None, 0, None, 32)
    metrics = {"top1": 0.5, "top5": 1.0, "mean_per_class_recall": 0.5}
    row = transfer_row(make_row("r0"), "r0@swatches48", target, metrics)
    assert (row["native_image_size"], row["source_image_size"], row["resize_interpolation"]) == (
        48, 48, "bilinear_antialias")


def test_an_image_folder_evaluated_by_another_size_of_model_is_decoded_at_its_input(tmp_path):
    """imagefolder:PATH as a transfer dataset of a 64-px model (or a pretrained one's 64-px transform): its images
    are decoded at 64 px from the files, not at the folder's default 32 px and enlarged again."""
    from dataclasses import replace

    from PIL import Image

    from bench.app.evaluate import LoadedCheckpoint, plan_evaluations
    from bench.app.dataset_lookup import decode_options, load_target
    from bench.app.transfer import load_targets
    from bench.data.imagefolder import load_imagefolder

    board = (np.indices((96, 96)).sum(0) % 2 * 255).astype(np.uint8)  # a 1-px checkerboard: 32 px blurs it grey
    for split in ("train", "test"):
        for name in ("red", "blue"):
            (tmp_path / "f" / split / name).mkdir(parents=True)
            Image.fromarray(np.stack([board] * 3, -1)).save(tmp_path / "f" / split / name / "a.png")
    dataset = f"imagefolder:{tmp_path / 'f'}"
    assert decode_options(dataset, 64) == {"size": 64} and decode_options("synthetic", 64) == {}
    direct = load_imagefolder(tmp_path / "f", "test", size=64).images
    cfg = bench.RunConfig(transfer=(dataset,))
    cfg = replace(cfg, model=replace(cfg.model, image_resolution=64))
    (in_run,) = load_targets(cfg)  # bench run --image-size 64 --transfer imagefolder:PATH
    pretrained = load_target(dataset, "seed", None, 0, None, None, decode_options(dataset, 64))  # open_clip's own resize
    # bench eval of an OpenAI-format state dict, whose own 64-px transform resizes (its image_size is None)
    state_dict = LoadedCheckpoint(None, bench.RunConfig(), {}, True, None, "openai_state_dict", "", "openai", 77, None,
                                  {"image_size": 64, "normalization": "openai"}, None, None, ())
    (evaluation,) = plan_evaluations(state_dict, [dataset], None, None, None)
    for target in (in_run, pretrained, evaluation.target):
        np.testing.assert_array_equal(target.test.images, direct)
        assert target.native_size == 64 and "resize_interpolation" not in target.test.info


def test_an_at_sign_in_an_image_folders_path_is_part_of_the_dataset_not_a_template_set(tmp_path):
    """--transfer imagefolder:/data/me@home names that folder; @seed after it still names the template set."""
    from bench.app.transfer_spec import TransferSpec, parse_transfer

    folder = tmp_path / "me@home"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
    dataset = f"imagefolder:{folder}"
    assert parse_transfer([dataset]) == [TransferSpec(dataset)]
    assert parse_transfer([f"{dataset}@seed"]) == [TransferSpec(dataset, "seed")]
    assert parse_transfer(["stl10@openai"]) == [TransferSpec("stl10", "openai")]


class EmptySplits:
    """A dataset plugin whose filter left a split without images."""

    @bench.hookimpl
    def register_datasets(self, register):
        from bench.data.datasets import make_synthetic

        def none_in_test(split, data_dir=None, seed=0):
            data = make_synthetic(split, seed, n=16)
            return data if split == "train" else data.subset(0)

        register("none_in_test", none_in_test, "a test split of no images", templates="seed")


@pytest.mark.parametrize("how", ["home", "transfer"])
def test_a_dataset_split_without_images_is_one_line_before_anything_is_written(how, tmp_path, run_cli):
    """An empty split used to pass into the run and end as a traceback from evaluation; it is one line naming the
    dataset and split, exit 2, and the results folder is not made."""
    out = tmp_path / "results"
    flags = ["--dataset", "none_in_test"] if how == "home" else ["--transfer", "none_in_test"]
    with bench.testing.plugin_registered(EmptySplits()):
        code, _, err = run_cli(*RUN, *flags, "--out", out)
    assert code == 2, err
    assert err.strip().splitlines() == ["bench: error: dataset 'none_in_test' has no images in its test split; check "
                                        "--dataset, --data-dir and --data-opt (or the plugin that makes it)"]
    assert not out.exists()
