"""Datasets in runs: each dataset's own template set when --templates is not given (CIFAR-10's configuration ids
unchanged), images resized once at load to --image-size with the interpolation in the row, --data-opt, and an image
folder of the synthetic set training exactly as the synthetic set does."""
import numpy as np
import pandas as pd
import pytest

from bench.app.options import config_from_flags
from bench.app.run import load_components
from bench.app.sweep.points import configs_from_lists
from bench.data.resize import INTERPOLATION, fit_to_size, resize_images
from bench.errors import BenchError
from bench.results.columns import config_key
from tests.support.archives import write_image_folder, write_mnist, write_stl10
from tests.support.runs import FLAGS, TINY, finished_run, run_dir_of, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread in this module (tests/conftest.py)

# a tiny run on whatever the dataset holds: 1 epoch of batch 4
SMALL = ["--epochs", "1", "--batch-size", "4", "--device", "cpu", *TINY]


@pytest.mark.parametrize("dataset, templates", [
    ("cifar10", "seed"), ("synthetic", "seed"), ("cifar100", "openai_cifar100"), ("cifar100_coarse", "openai_cifar100"),
    ("stl10", "openai_stl10"), ("svhn", "openai_mnist"), ("mnist", "openai_mnist"),
    ("fashion_mnist", "plain_fashion_mnist"),
])
def test_without_templates_a_run_takes_its_datasets_own_set_and_a_given_one_wins(dataset, templates):
    assert config_from_flags(dataset=dataset).templates == templates
    assert config_from_flags(dataset=dataset, templates="openai").templates == "openai"
    cfgs, _ = configs_from_lists(["modified_resnet"], [], [], {"dataset": dataset})
    assert cfgs[0].templates == templates  # bench sweep's flags form too


def test_cifar10_and_synthetic_runs_keep_their_configuration_ids():
    """The ids bench gave these configurations before datasets named template sets (computed on the main branch)."""
    assert config_key(config_from_flags()) == "bf21a9e8fb"
    assert config_key(config_from_flags(preset="smoke", epochs=3)) == "f01ce166ac"
    assert config_key(config_from_flags(dataset="synthetic")) == "1cfaec0e8a"
    assert config_key(config_from_flags(dataset="synthetic", preset="smoke", epochs=3)) == "421ee35810"


def test_one_image_folder_is_one_dataset_however_its_path_is_typed(tmp_path):
    """imagefolder:shapes, shapes/, ./shapes and ./shapes// are one dataset name, so one configuration id and one
    runs.csv dataset label (the configuration's), for bench run, sweeps, --transfer and bench eval --dataset alike;
    the path stays relative as typed (not made absolute: a row must join rows of the same folder elsewhere)."""
    from bench.app.evaluate import dataset_list
    from bench.app.transfer_spec import TransferSpec, parse_transfer
    from bench.host.manager import get_entry

    rng = np.random.default_rng(0)
    write_image_folder(tmp_path / "shapes", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
                       np.repeat(np.arange(3), 2), ("circle", "square", "star"))  # the tests run in tmp_path
    spellings = ["imagefolder:shapes", "imagefolder:shapes/", "imagefolder:./shapes", "imagefolder:./shapes//"]
    cfgs = [config_from_flags(dataset=s, preset="smoke") for s in spellings]
    cfgs += [configs_from_lists(["modified_resnet"], [], [], {"dataset": s, "preset": "smoke"})[0][0]
             for s in spellings]  # bench sweep's flags form (a sweep file's points go through the same builder)
    assert {c.dataset for c in cfgs} == {"imagefolder:shapes"}
    assert len({config_key(c) for c in cfgs}) == 1
    assert parse_transfer(["imagefolder:./shapes/@seed"]) == [TransferSpec("imagefolder:shapes", "seed")]
    assert dataset_list(spellings) == ["imagefolder:shapes"]  # bench eval --dataset: one dataset, once
    with pytest.raises(BenchError, match="twice"):
        parse_transfer(["imagefolder:shapes", "imagefolder:shapes/"])
    with pytest.raises(BenchError, match="the dataset the run trains on"):
        config_from_flags(dataset="imagefolder:shapes/", transfer=["imagefolder:./shapes"])
    assert get_entry("datasets", "imagefolder:./shapes/").create("test").name == "imagefolder:shapes/test"
    absolute = config_from_flags(dataset=f"imagefolder:{tmp_path}//shapes/", preset="smoke")
    assert absolute.dataset == f"imagefolder:{tmp_path}/shapes"  # absolute as typed, relative as typed


def test_a_sweep_file_naming_one_image_folder_two_ways_names_one_run(tmp_path, run_cli):
    """A sweep file's points are one configuration whether the folder is typed with ./ and a trailing / or not."""
    from tests.support.sweep_files import sweep_text

    write_image_folder(tmp_path / "shapes", np.zeros((6, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(3), 2),
                       ("circle", "square", "star"))
    (tmp_path / "s.toml").write_text(sweep_text({"dataset": ["imagefolder:shapes", "imagefolder:./shapes/"]},
                                                dataset=None))
    code, _, err = run_cli("sweep", tmp_path / "s.toml", "--dry-run")
    assert code == 2 and "points 1 and 2 of the plan are the same run" in err, err


def test_bench_eval_of_a_run_saved_with_another_spelling_of_its_folder_evaluates_its_own_dataset(
        tmp_path, tmp_path_factory):
    """A run saved before names were tidied keeps imagefolder:synth/ in its configuration: bench eval --dataset
    imagefolder:./synth is that run's own dataset (its own row's dataset), not a transfer to itself."""
    import torch

    from bench.app.evaluate import evaluate_checkpoint
    from bench.data.datasets import make_synthetic

    for split in ("train", "test"):
        data = make_synthetic(split).subset(64)  # the first two of each class are among them: not all 5000 made
        two = np.concatenate([np.flatnonzero(data.labels == c)[:2] for c in range(10)])  # two of each class
        assert len(two) == 20, "the subset no longer holds two images of each class: take a larger one"
        write_image_folder(tmp_path / "synth" / split, data.images[two], data.labels[two], [f"c{i}" for i in range(10)])
    ckpt = torch.load(run_dir_of(finished_run(tmp_path_factory.getbasetemp())) / "best.pt", weights_only=False)
    ckpt["config"]["dataset"] = "imagefolder:synth/"
    torch.save(ckpt, tmp_path / "old.pt")
    row = evaluate_checkpoint(tmp_path / "old.pt", dataset="imagefolder:./synth", device="cpu", record=False).iloc[0]
    assert (row["dataset"], row["eval_dataset"]) == ("imagefolder:synth/", "imagefolder:synth/")
    assert "@" not in row["run_id"]  # a transfer's would be <run>@<dataset>


def test_a_datasets_images_are_resized_once_at_load_to_the_models_size(tmp_path):
    written = write_stl10(tmp_path)
    cfg = config_from_flags(dataset="stl10", data_dir=str(tmp_path), preset="smoke")
    parts = load_components(cfg)
    assert parts.train.images.shape == (20, 32, 32, 3) and parts.test.images.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(parts.train.images, resize_images(written["train"][0], 32))
    assert parts.train.info == {"resize_interpolation": INTERPOLATION, "source_image_size": 96}
    assert parts.templates == ["a photo of a {}.", "a photo of the {}."]
    big = load_components(config_from_flags(dataset="stl10", data_dir=str(tmp_path), image_size=96))
    np.testing.assert_array_equal(big.test.images, written["test"][0])  # at its own size: untouched
    assert big.test.info == {}


def test_mnist_is_enlarged_from_28_to_32_px_as_rgb(tmp_path):
    write_mnist(tmp_path)
    parts = load_components(config_from_flags(dataset="mnist", data_dir=str(tmp_path)))
    assert parts.test.images.shape == (10, 32, 32, 3) and parts.test.info["source_image_size"] == 28
    assert (parts.test.images[..., 0] == parts.test.images[..., 2]).all()


def test_resizing_keeps_a_flat_image_flat_and_is_the_same_every_time():
    flat = np.full((3, 96, 96, 3), 77, dtype=np.uint8)
    assert (resize_images(flat, 32) == 77).all() and (resize_images(flat[:, :28, :28], 32) == 77).all()
    noise = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_images(noise, 24), resize_images(noise, 24))


def test_a_dataset_far_smaller_than_the_model_or_not_square_is_one_line():
    from bench.data.datasets import ArrayDataset

    small = ArrayDataset(np.zeros((2, 8, 8, 3), np.uint8), [0, 1], ("a", "b"), "tiny/test")
    with pytest.raises(BenchError, match="dataset 'tiny' stores 8x8 images, which --image-size 65 would enlarge "
                                         "more than 8-fold; use --image-size 8"):
        fit_to_size(small, 65, "tiny")
    assert fit_to_size(small, 64, "tiny").images.shape == (2, 64, 64, 3)
    wide = ArrayDataset(np.zeros((2, 8, 16, 3), np.uint8), [0, 1], ("a", "b"), "wide/test")
    with pytest.raises(BenchError, match="has 8x16 images; bench trains on square images"):
        fit_to_size(wide, 32, "wide")


def test_data_options_a_dataset_does_not_take_are_one_line(run_cli):
    code, _, err = run_cli("run", *FLAGS, "--data-opt", "test_fraction=0.5", "--out", "res")
    assert code == 2 and "dataset 'synthetic' takes no option 'test_fraction'; its options are none" in err


@pytest.mark.slow
def test_a_run_on_stl10_records_the_resize_and_the_datasets_template_set(tmp_path, run_cli):
    write_stl10(tmp_path / "stl")
    code, _, err = run_cli("run", "--dataset", "stl10", "--data-dir", tmp_path / "stl", *SMALL, "--out", tmp_path / "r")
    assert code == 0, err
    row = pd.read_csv(tmp_path / "r" / "runs.csv").iloc[0]
    assert (row["dataset"], row["templates"], row["image_size"]) == ("stl10", "openai_stl10", 32)
    assert (row["resize_interpolation"], row["source_image_size"]) == (INTERPOLATION, 96)


@pytest.mark.slow
def test_an_image_folder_split_by_fraction_names_its_split_and_options_in_the_row(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8)
    write_image_folder(tmp_path / "shapes", rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), labels,
                       ("circle", "square", "star"))
    code, _, err = run_cli("run", "--dataset", f"imagefolder:{tmp_path / 'shapes'}", "--data-opt", "test_fraction=0.25",
                           *SMALL, "--out", tmp_path / "r")
    assert code == 0, err
    row = pd.read_csv(tmp_path / "r" / "runs.csv").iloc[0]
    assert row["data_split"] == "test_fraction=0.25 split_seed=0" and row["data_opts"] == '{"test_fraction": 0.25}'
    assert (row["train_images"], row["test_images"], row["templates"]) == (18, 6, "seed")


@pytest.mark.slow
def test_an_image_folder_written_from_the_synthetic_set_gives_the_same_metrics(tmp_path, tmp_path_factory):
    """The same images, labels and class names, through PNG files and the cache: the same zero-shot metrics. (A run
    trained on the folder differs from one on the synthetic set: ImageFolder orders images by class, so the
    loader's shuffle deals them out differently.)"""
    from bench.app.evaluate import evaluate_checkpoint
    from bench.data.datasets import SYNTHETIC_CLASSES, make_synthetic

    folders = [f"{i}_{name}" for i, name in enumerate(SYNTHETIC_CLASSES)]  # sorted folders keep the label order
    for split in ("train", "test"):
        data = make_synthetic(split).subset(64)  # what the finished run trained and evaluated on
        write_image_folder(tmp_path / "synth" / split, data.images, data.labels, folders)
    (tmp_path / "synth" / "classnames.txt").write_text("\n".join(SYNTHETIC_CLASSES) + "\n")
    ckpt = run_dir_of(finished_run(tmp_path_factory.getbasetemp())) / "best.pt"
    plain = evaluate_checkpoint(ckpt, device="cpu").iloc[0]
    folder = evaluate_checkpoint(ckpt, dataset=f"imagefolder:{tmp_path / 'synth'}", device="cpu").iloc[0]
    for metric in ("zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "test_images"):
        assert plain[metric] == folder[metric], metric
    assert folder["data_split"] == "train/ and test/ folders"


def test_offline_without_the_files_a_run_is_one_line_and_leaves_no_folders_behind(tmp_path, run_cli, monkeypatch):
    """torchvision's MNIST download makes MNIST/raw before it fails offline: bench removes the empty folders."""
    import os

    import torchvision

    def offline(root, train, download):
        os.makedirs(os.path.join(root, "MNIST", "raw"), exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    (tmp_path / "data").mkdir()
    before = snapshot(tmp_path)
    code, out, err = run_cli("run", "--dataset", "mnist", "--data-dir", tmp_path / "data", *SMALL, "--out",
                             tmp_path / "r")
    assert code == 2 and err.count("\n") == 1 and out == ""
    assert err.startswith(f"bench: error: MNIST not found in {tmp_path / 'data'}: run once with network access")
    assert snapshot(tmp_path) == before
