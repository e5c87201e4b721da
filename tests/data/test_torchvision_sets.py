"""CIFAR-100, STL-10, SVHN, MNIST and Fashion-MNIST read from small archives in the exact formats torchvision
reads: the same arrays and labels as torchvision's own classes, CLIP's class names, grayscale as RGB, and
CIFAR-10's one-line errors for missing, damaged and foreign files."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torchvision

from bench.clip.dataset_prompts import (CIFAR100_CLASSES, CIFAR100_COARSE_NAMES, DIGIT_CLASSES, FASHION_MNIST_CLASSES,
                                        STL10_CLASSES)
from bench.data.torchvision_sets import load_dataset
from bench.errors import BenchError
from tests.support.archives import write_cifar100, write_mnist, write_stl10, write_svhn


def _no_md5(monkeypatch, *modules):
    """torchvision checks each file's md5 against the real release's: the tests' small archives differ, so its
    readers are asked to trust them (what they parse is what is compared)."""
    for module in modules:
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar100_reads_the_pickles_as_torchvision_does_with_clips_class_names(tmp_path, monkeypatch, split):
    written = write_cifar100(tmp_path)
    _no_md5(monkeypatch, torchvision.datasets.cifar)
    reference = torchvision.datasets.CIFAR100(str(tmp_path), train=split == "train", download=False)
    data = load_dataset("cifar100", split, tmp_path, download=False)
    np.testing.assert_array_equal(data.images, reference.data)
    np.testing.assert_array_equal(data.labels, reference.targets)
    np.testing.assert_array_equal(data.images, written[split][0])
    assert data.classes == CIFAR100_CLASSES == tuple(c.replace("_", " ") for c in reference.classes)
    assert data.images.dtype == np.uint8 and data.labels.dtype == np.int64 and data.name == f"cifar100/{split}"


def test_cifar100_coarse_gives_the_same_images_the_superclass_labels_and_readable_names(tmp_path):
    written = write_cifar100(tmp_path)
    fine = load_dataset("cifar100", "train", tmp_path, download=False)
    coarse = load_dataset("cifar100_coarse", "train", tmp_path, download=False)
    np.testing.assert_array_equal(coarse.images, fine.images)
    np.testing.assert_array_equal(coarse.labels, written["train"][2])
    assert coarse.classes == tuple(CIFAR100_COARSE_NAMES.values()) and len(set(coarse.classes)) == 20
    assert coarse.classes[list(CIFAR100_COARSE_NAMES).index("vehicles_2")] == "special-purpose vehicle"


@pytest.mark.parametrize("split", ["train", "test"])
def test_stl10_reads_the_binary_files_as_torchvision_does(tmp_path, monkeypatch, split):
    written = write_stl10(tmp_path)
    _no_md5(monkeypatch, torchvision.datasets.stl10)
    reference = torchvision.datasets.STL10(str(tmp_path), split=split, download=False)
    data = load_dataset("stl10", split, tmp_path, download=False)
    np.testing.assert_array_equal(data.images, reference.data.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(data.labels, reference.labels)
    np.testing.assert_array_equal(data.images, written[split][0])
    assert data.images.shape[1:] == (96, 96, 3) and data.classes == STL10_CLASSES == tuple(reference.classes)


@pytest.mark.parametrize("split", ["train", "test"])
def test_svhn_reads_the_mat_files_as_torchvision_does_with_label_10_as_the_digit_0(tmp_path, monkeypatch, split):
    written = write_svhn(tmp_path)
    _no_md5(monkeypatch, torchvision.datasets.svhn)
    reference = torchvision.datasets.SVHN(str(tmp_path), split=split, download=False)
    data = load_dataset("svhn", split, tmp_path, download=False)
    np.testing.assert_array_equal(data.images, reference.data.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(data.labels, reference.labels)
    np.testing.assert_array_equal(data.labels, written[split][1])
    assert 0 in data.labels and data.labels.max() == 9 and data.classes == DIGIT_CLASSES


@pytest.mark.parametrize("name, folder, cls, classes", [
    ("mnist", "MNIST", torchvision.datasets.MNIST, DIGIT_CLASSES),
    ("fashion_mnist", "FashionMNIST", torchvision.datasets.FashionMNIST, FASHION_MNIST_CLASSES),
])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_and_fashion_mnist_read_the_idx_files_as_torchvision_does_as_rgb(tmp_path, name, folder, cls, classes,
                                                                            split):
    write_mnist(tmp_path, folder)
    reference = cls(str(tmp_path), train=split == "train", download=False)
    data = load_dataset(name, split, tmp_path, download=False)
    assert data.images.shape[1:] == (28, 28, 3)
    for channel in range(3):  # grayscale repeated into red, green and blue
        np.testing.assert_array_equal(data.images[..., channel], reference.data.numpy())
    np.testing.assert_array_equal(data.labels, reference.targets.numpy())
    assert data.classes == classes


def test_mnist_reads_the_gzipped_files_when_they_are_all_there_is(tmp_path):
    written = write_mnist(tmp_path, gz=True)
    data = load_dataset("mnist", "test", tmp_path, download=False)
    np.testing.assert_array_equal(data.images[..., 0], written["test"][0])


@pytest.mark.parametrize("name, write, inner", [
    ("cifar100", write_cifar100, "cifar-100-python"), ("stl10", write_stl10, "stl10_binary"),
    ("mnist", write_mnist, "MNIST/raw"),
])
def test_the_folder_inside_the_root_works_as_data_dir_too(tmp_path, name, write, inner):
    write(tmp_path)
    np.testing.assert_array_equal(load_dataset(name, "test", tmp_path / inner, download=False).images,
                                  load_dataset(name, "test", tmp_path, download=False).images)


@pytest.mark.parametrize("name, title, layout", [
    ("cifar100", "CIFAR-100", "cifar-100-python/"), ("cifar100_coarse", "CIFAR-100", "cifar-100-python/"),
    ("stl10", "STL-10", "stl10_binary/"), ("svhn", "SVHN", "train_32x32.mat/test_32x32.mat"),
    ("mnist", "MNIST", "MNIST/raw/"), ("fashion_mnist", "Fashion-MNIST", "FashionMNIST/raw/"),
])
def test_a_missing_dataset_says_both_ways_to_provide_it_in_one_line(tmp_path, name, title, layout):
    with pytest.raises(BenchError) as info:
        load_dataset(name, "train", tmp_path / "nothing", download=False)
    message = str(info.value)
    assert message.startswith(f"{title} not found in {tmp_path / 'nothing'}") and "\n" not in message
    assert "network access to download it" in message and f"--data-dir DIR holding {layout}" in message


def test_without_the_files_torchvisions_download_is_asked_for_the_split(tmp_path, monkeypatch):
    """Online, torchvision's own class fetches the files (download=True) into a staging folder in the root, from
    where they are moved into the root, then read."""
    asked = []

    def fake_stl10(root, split, download):
        asked.append((root, split, download))
        write_stl10(root)

    monkeypatch.setattr(torchvision.datasets, "STL10", fake_stl10)
    data = load_dataset("stl10", "test", tmp_path)
    [(staging, split, download)] = asked
    assert (Path(staging).parent, split, download) == (tmp_path, "test", True) and len(data) == 10


def test_a_failed_download_ends_in_the_not_found_line(tmp_path, monkeypatch):
    def offline(root, train, download):
        raise RuntimeError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(BenchError, match="CIFAR-100 not found in .*run once with network access"):
        load_dataset("cifar100", "train", tmp_path)


def test_a_damaged_file_is_one_line_naming_it(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(BenchError) as info:
        load_dataset("cifar100", "train", tmp_path, download=False)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'cifar-100-python' / 'train'} is damaged or not the CIFAR-100 release")
    assert "delete it to download again" in message and "\n" not in message


def test_a_pickle_that_would_run_code_is_refused_not_run(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps({"data": print}, protocol=2))
    with pytest.raises(BenchError, match="is damaged or not the CIFAR-100 release .*UnpicklingError"):
        load_dataset("cifar100", "test", tmp_path, download=False)


@pytest.mark.parametrize("damage, expected", [
    ("cifar100_names", "not the CIFAR-100 release (ValueError: its fine_label_names are not CIFAR-100's"),
    ("stl10_names", "not the STL-10 release (ValueError: its class names are not STL-10's"),
    ("stl10_short", "not the STL-10 release (ValueError: "),
    ("svhn_text", "not the SVHN release"),
    ("mnist_labels", "not the MNIST release (ValueError: 20 images but 3 labels"),
    ("mnist_magic", "not the MNIST release (ValueError: not an IDX file"),
])
def test_foreign_files_in_the_right_places_are_not_read_as_the_release(tmp_path, damage, expected):
    name = damage.split("_")[0]
    if name == "cifar100":
        write_cifar100(tmp_path)
        (tmp_path / "cifar-100-python" / "meta").write_bytes(pickle.dumps(
            {"fine_label_names": ["x"] * 100, "coarse_label_names": ["y"] * 20}, protocol=2))
    elif name == "stl10":
        write_stl10(tmp_path)
        if damage == "stl10_names":
            (tmp_path / "stl10_binary" / "class_names.txt").write_text("a\nb\n")
        else:
            (tmp_path / "stl10_binary" / "train_X.bin").write_bytes(b"\x00" * 1000)
    elif name == "svhn":
        (tmp_path / "train_32x32.mat").write_text("not a MATLAB file")
    else:
        write_mnist(tmp_path)
        if damage == "mnist_labels":
            labels = bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])  # an IDX header for 3 labels, and 3 labels
            (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(labels)
        else:
            (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04 zip, not idx")
    with pytest.raises(BenchError, match="is damaged or " + expected.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(name, "train", tmp_path, download=False)


def test_the_not_found_line_offers_the_fix_that_applies(tmp_path, monkeypatch):
    """With --data-dir the fix is that folder; without it (a --transfer dataset, which never takes the training
    set's --data-dir) it is the default folder and BENCH_DATASETS_DIR, not a --data-dir that would point the
    training set elsewhere."""
    monkeypatch.setenv("BENCH_DATASETS_DIR", str(tmp_path / "all"))
    with pytest.raises(BenchError, match=r"or pass --data-dir DIR holding stl10_binary"):
        load_dataset("stl10", "test", tmp_path / "mine", download=False)
    with pytest.raises(BenchError, match=r"or put stl10_binary/ in .*all \(set BENCH_DATASETS_DIR") as caught:
        load_dataset("stl10", "test", None, download=False)
    assert "--data-dir" not in str(caught.value)
