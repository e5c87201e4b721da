"""bench run / eval / predict end to end on the synthetic set with a tiny model."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import bench
from tests.support.processes import spawn_bench
from tests.support.runs import TINY

REQUIRED = ["run_id", "encoder", "tokenizer", "templates", "dataset", "epochs", "batch_size", "lr", "seed", "device",
            "params", "train_seconds", "train_images_per_s", "zeroshot_top1", "zeroshot_top5", "mean_per_class_recall",
            "final_train_loss", "git_commit", "torch_version", "device_name", "time"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the tests below: it must learn the synthetic set."""
    import os

    from bench.cli import main
    from bench.host.manager import set_host

    out = tmp_path_factory.mktemp("results")
    os.environ["BENCH_LOAD_PLUGINS"] = ""
    set_host(None)
    args = ["run", "--encoder", "modified_resnet", "--dataset", "synthetic", "--epochs", "3", "--batch-size", "64",
            "--lr", "3e-3", "--limit-train", "1600", "--limit-test", "400", "--out", str(out), *TINY,
            "--encoder-opt", "width=16"]
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None)
    set_host(None)
    return out


def test_synthetic_set_is_learnable_to_90_percent_zero_shot(trained):
    runs = pd.read_csv(trained / "runs.csv")
    assert len(runs) == 1
    assert runs.loc[0, "zeroshot_top1"] >= 0.9


def test_run_writes_the_documented_tables_and_files(trained):
    runs = pd.read_csv(trained / "runs.csv")
    assert set(REQUIRED) <= set(runs.columns)
    row = runs.iloc[0]
    assert 0 <= row.zeroshot_top1 <= row.zeroshot_top5 <= 1 and row.params > 0 and row.train_images_per_s > 0
    run_dir = trained / "runs" / row.run_id
    for name in ("config.json", "history.csv", "per_class.csv", "confusion.csv", "curves.png", "best.pt", "last.pt"):
        assert (run_dir / name).is_file(), name
    history = pd.read_csv(run_dir / "history.csv")
    assert history.epoch.tolist() == [1, 2, 3] and history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    assert list(history.columns) == ["epoch", "step", "train_loss", "lr", "epoch_seconds", "images_per_s",  # README
                                     "zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "eval_seconds",
                                     "elapsed_seconds"]
    assert history.elapsed_seconds.is_monotonic_increasing and (history.eval_seconds > 0).all()
    per_class = pd.read_csv(run_dir / "per_class.csv")
    assert len(per_class) == 10 and per_class.support.sum() == 400
    assert json.loads((run_dir / "config.json").read_text())["model"]["encoder"] == "modified_resnet"


def test_curves_figure_draws_the_loss_and_each_zero_shot_metric_in_its_colour(trained):
    from bench.results.curves import COLORS

    row = pd.read_csv(trained / "runs.csv").iloc[0]
    image = Image.open(trained / "runs" / row.run_id / "curves.png")
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (1100, 418))
    pixels = np.asarray(image).reshape(-1, 3)
    left, right = np.asarray(image)[:, :550].reshape(-1, 3), np.asarray(image)[:, 550:].reshape(-1, 3)
    assert (left == COLORS[0]).all(axis=1).any()  # the training loss, on the left
    for colour in COLORS[:3]:  # top-1, top-5 and mean per-class recall, on the right
        assert (right == colour).all(axis=1).any(), colour
    assert len(np.unique(pixels, axis=0)) > 20  # text and grid besides the lines


def test_main_in_a_callers_process_leaves_its_gc_as_it_was(run_cli):
    """python -m bench freezes the GC over torch's objects once imported (:func:`bench.app.own_process.imports_without_gc`); a
    program that calls main() keeps its GC as it was."""
    import gc

    before = gc.get_freeze_count(), gc.isenabled()
    code, _, err = run_cli("run", "--preset", "no-such-preset", "--dataset", "synthetic")
    assert code == 2 and "no-such-preset" in err  # refused after the command's imports
    assert (gc.get_freeze_count(), gc.isenabled()) == before


def test_eval_reproduces_the_run_and_ablates_template_sets(trained, run_cli):
    row = pd.read_csv(trained / "runs.csv").iloc[0]
    ckpt = trained / "runs" / row.run_id / "last.pt"
    code, out, err = run_cli("eval", ckpt, "--templates", "seed,openai", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["eval_templates"] for r in rows] == ["seed", "openai"]  # "templates" is what it was trained with
    assert rows[0]["zeroshot_top1"] == pytest.approx(row.zeroshot_top1, abs=1e-6)


def test_predict_names_the_class_of_image_files(trained, run_cli, tmp_path):
    from bench.data.datasets import make_synthetic

    test = make_synthetic("test", n=20)
    paths = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(test.images[i]).resize((64, 64)).save(path)  # any size: resized to 32
        paths.append(path)
    ckpt = trained / "runs" / pd.read_csv(trained / "runs.csv").run_id[0] / "best.pt"
    code, out, err = run_cli("predict", ckpt, *paths, "--top-k", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 4
    hits = sum(line.split(": ")[1].split(" ")[0] == test.classes[test.labels[i]] for i, line in enumerate(lines))
    assert hits >= 3


# The reference spec's "Key Functions" (../shared/spec/reference-clip-cifar10.md), public API under their names
SPEC_FUNCTIONS = ["create_model", "build_model", "train_epoch", "validate", "contrastive_loss", "CIFARCLIPDataset",
                  "collate_fn", "tokenize", "convert_weights", "test_model_inference"]


def test_every_function_the_spec_names_is_bench_public_api():
    assert [name for name in SPEC_FUNCTIONS if not callable(getattr(bench, name, None))] == []
    assert set(SPEC_FUNCTIONS) <= set(bench.__all__)


# The classes the spec's architecture sections name ("Key Components", the two encoders and their parts): code
# ported from the reference script imports them from bench as it did from CLIP.py
SPEC_COMPONENTS = ["CLIP", "ModifiedResNet", "Bottleneck", "AttentionPool2d", "Transformer", "ResidualAttentionBlock",
                   "LayerNorm", "QuickGELU", "SimpleTokenizer"]


def test_every_component_the_spec_names_is_bench_public_api():
    assert [name for name in SPEC_COMPONENTS if not isinstance(getattr(bench, name, None), type)] == []
    assert set(SPEC_COMPONENTS) <= set(bench.__all__)
    assert isinstance(bench.CLIP().visual.layer1[0], bench.Bottleneck)


def test_the_specs_test_model_inference_prints_true_and_predicted_classes_of_test_images(trained, tmp_path):
    """bench.test_model_inference(), as the reference script calls it, reads the newest best.pt under results/: the
    first five test images with their true class, the class picked and its confidence; the model learned the
    synthetic set, so it picks most of them right."""
    import os

    lines = []
    cwd = os.getcwd()
    os.chdir(trained.parent)
    try:
        rows = bench.test_model_inference(results=trained.name, echo=lines.append)
    finally:
        os.chdir(cwd)
    test = __import__("bench.data.datasets", fromlist=["make_synthetic"]).make_synthetic("test", n=5)
    assert [r["true_class"] for r in rows] == [test.classes[label] for label in test.labels]
    assert sum(r["true_class"] == r["predicted_class"] for r in rows) >= 4
    assert all(0 < r["confidence"] <= 1 for r in rows)
    assert lines[0].startswith("Image 1:\n  True class: ") and "Predicted class: " in lines[0]
    with pytest.raises(bench.BenchError, match="no best.pt under"):
        bench.test_model_inference(results=tmp_path)


def test_epoch_log_line_names_loss_accuracy_and_times_only_when_measured():
    """Without progress bars (a log file, a batch job) each epoch is one line; an epoch without evaluation
    says nothing about accuracy rather than printing nan."""
    from bench.app.run import epoch_line
    from bench.engine.epoch_loop import bars_shown

    row = {"epoch": 3, "train_loss": 2.41191, "zeroshot_top1": 0.5977, "epoch_seconds": 4.656, "images_per_s": 10733.9,
           "eval_seconds": 0.102}
    assert epoch_line(row, 50) == ("epoch 3/50, loss 2.4119, zero-shot top-1 0.5977, train 4.66 s (10,734 images/s), "
                                   "eval 0.10 s")
    assert epoch_line({**row, "zeroshot_top1": np.nan, "eval_seconds": np.nan}, 50) == (
        "epoch 3/50, loss 2.4119, train 4.66 s (10,734 images/s)")
    assert bars_shown(True) and not bars_shown(False)


def test_presets_set_the_recipe_and_flags_override_them():
    from bench.config import make_config

    smoke = make_config("smoke", epochs=1)
    assert smoke.epochs == 1 and smoke.limit_train == 256 and smoke.model.encoder == "modified_resnet"
    ref = make_config("reference")
    assert (ref.epochs, ref.batch_size, ref.lr, ref.weight_decay) == (50, 32, 1e-4, 0.01)
    assert make_config("smoke").model == ref.model  # a preset never changes the architecture


def test_run_help_gives_the_cudnn_autotuning_default_the_presets_set():
    """The reference preset (bench run's default) turns cuDNN autotuning off, so --help must not call it on."""
    import click

    from bench.cli import cli
    from bench.config import PRESETS, make_config

    assert PRESETS["reference"]["cudnn_benchmark"] is False
    assert make_config("smoke").recipe().cudnn_benchmark is True
    option = next(p for p in cli.commands["run"].params if p.name == "cudnn_benchmark")
    text = " ".join(option.get_help_record(click.Context(cli.commands["run"]))[1].split())
    assert "default: on, off in the reference preset" in text


def test_run_help_names_the_encoder_each_preset_defaults_to():
    """--preset's help names the fast presets' own encoders (fast: airbench_wide, not the encoder airbench)."""
    import click

    from bench.cli import cli
    from bench.config import PRESETS

    option = next(p for p in cli.commands["run"].params if p.name == "preset")
    text = " ".join(option.get_help_record(click.Context(cli.commands["run"]))[1].split())
    assert f"fast ({PRESETS['fast']['encoder']} encoder," in text
    assert f"fast96 ({PRESETS['fast96']['encoder']}'s tower)" in text


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_run_and_sweep_help_shows_every_option_under_a_named_section(command, run_cli):
    """bench run's ~60 options and sweep's ~75 read by section (Model, Data, Recipe, ...); an option added without
    a section would land under "Other options", which holds only --help."""
    from bench.cli import HELP_SECTIONS, cli

    code, out, _ = run_cli(command, "--help")
    assert code == 0
    headings = [line[:-1] for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings == [h for h in (*HELP_SECTIONS, "Other options") if h in headings]  # the table's order
    other = out.split("Other options:\n", 1)[1]
    assert other.split() == ["-h,", "--help", "Show", "this", "message", "and", "exit."]
    options = [p for p in cli.commands[command].params if p.param_type_name == "option"]
    assert all(p.opts[0] in out for p in options)
    assert "Model" in headings and "Recipe" in headings and ("Sweep plan" in headings) == (command == "sweep")
    assert "[FILE]" not in out.split("\n\n", 2)[2]  # the argument is in the usage line, not a bare row


def test_every_option_of_every_command_says_what_it_does():
    """--help gives each option a line of its own (--epochs, --lr, eval's --data-dir showed a bare name)."""
    import click

    from bench.cli import cli

    commands = [(name, c) for name, c in cli.commands.items() if not isinstance(c, click.Group)]
    commands += [(f"{name} {sub}", s) for name, c in cli.commands.items() if isinstance(c, click.Group)
                 for sub, s in c.commands.items()]
    bare = [f"{name} {p.opts[0]}" for name, c in commands for p in c.params
            if isinstance(p, click.Option) and not p.help]
    assert not bare, bare


def test_python_dash_m_bench_is_the_bench_command():
    """``python -m bench`` (how the subprocess tests start bench) runs the command line, version and commands."""
    from bench import __version__

    version, listing = spawn_bench("--version"), spawn_bench("--help")
    (out, err), (commands, _) = version.communicate(timeout=120), listing.communicate(timeout=120)
    assert version.returncode == listing.returncode == 0, err
    assert out.strip() == f"bench, version {__version__}"
    listed = {line.split()[0] for line in commands.split("Commands:")[1].splitlines() if line.strip()}
    assert {"run", "eval", "sweep", "compare"} <= listed
