"""imagefolder:PATH reads torchvision's ImageFolder layout (train/ and test/, or one tree split by a seeded
fraction), any size and format PIL reads, class names from folders or classnames.txt, and caches the decoded arrays
outside the user's folder until the folder changes."""
import os

import numpy as np
import pytest
from PIL import Image

from bench.data import imagefolder
from bench.data.imagefolder import cache_root, load_imagefolder
from bench.errors import BenchError
from tests.support.archives import write_image_folder
from tests.support.runs import snapshot

CLASSES = ("cat", "dog", "frog")
# how a split of _folder's 4 files a class is listed: the classes interleaved, each class's first file, then second...
LISTED = np.arange(12).reshape(3, 4).T.ravel()


def _folder(root, per_class=4, seed=0, size=32, split=True):
    """``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` (or one tree with ``split=False``) of random
    images; returns what was written per split."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in ("train", "test") if split else ("all",):
        labels = np.repeat(np.arange(len(CLASSES)), per_class)
        images = rng.integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8)
        write_image_folder(root / name if split else root, images, labels, CLASSES)
        written[name] = images, labels
    return written


def test_train_and_test_folders_read_back_the_images_written_with_folder_names_as_classes(tmp_path):
    written = _folder(tmp_path / "pets")
    for split in ("train", "test"):
        data = load_imagefolder(tmp_path / "pets", split)
        np.testing.assert_array_equal(data.images, written[split][0][LISTED])  # PNG is lossless
        np.testing.assert_array_equal(data.labels, written[split][1][LISTED])
        assert data.classes == CLASSES and data.info == {"data_split": "train/ and test/ folders"}


def test_classnames_txt_names_the_class_folders_in_their_sorted_order(tmp_path):
    _folder(tmp_path / "pets")
    (tmp_path / "pets" / "classnames.txt").write_text("tabby cat\ngolden retriever\n\ntree frog\n")
    assert load_imagefolder(tmp_path / "pets", "test").classes == ("tabby cat", "golden retriever", "tree frog")


def test_one_tree_splits_each_class_by_a_seeded_fraction_the_dataset_names(tmp_path):
    written = _folder(tmp_path / "pets", per_class=10, split=False)
    train = load_imagefolder(tmp_path / "pets", "train", test_fraction=0.3, split_seed=5)
    test = load_imagefolder(tmp_path / "pets", "test", test_fraction=0.3, split_seed=5)
    assert np.bincount(test.labels).tolist() == [3, 3, 3] and np.bincount(train.labels).tolist() == [7, 7, 7]
    together = sorted(map(bytes, np.concatenate([train.images, test.images])))
    assert together == sorted(map(bytes, written["all"][0]))  # every image in exactly one split
    assert test.info == {"data_split": "test_fraction=0.3 split_seed=5"}
    again = load_imagefolder(tmp_path / "pets", "test", test_fraction=0.3, split_seed=5)
    other = load_imagefolder(tmp_path / "pets", "test", test_fraction=0.3, split_seed=6)
    np.testing.assert_array_equal(again.images, test.images)
    assert not np.array_equal(other.images, test.images)
    # without split_seed the dataset's seed (the run's data seed) splits it
    np.testing.assert_array_equal(load_imagefolder(tmp_path / "pets", "test", seed=5, test_fraction=0.3).images,
                                  test.images)


def test_any_size_mode_and_format_pil_reads_becomes_rgb_at_the_stored_size(tmp_path):
    root = tmp_path / "mixed" / "red"
    root.mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 10, 10)).save(root / "wide.jpg", quality=100)
    Image.new("L", (20, 20), 90).save(root / "gray.png")
    Image.new("RGBA", (32, 32), (5, 6, 7, 128)).save(root / "alpha.webp", lossless=True)
    Image.new("P", (40, 80)).save(root / "palette.bmp")
    (root / "notes.txt").write_text("not an image: skipped, as torchvision skips it")
    data = load_imagefolder(tmp_path / "mixed", "train", test_fraction=0.25, split_seed=0)
    whole = np.concatenate([data.images, load_imagefolder(tmp_path / "mixed", "test", test_fraction=0.25).images])
    assert whole.shape == (4, 32, 32, 3) and whole.dtype == np.uint8
    colours = {tuple(int(v) for v in image.reshape(-1, 3).mean(0).round()) for image in whole}
    assert (90, 90, 90) in colours and (5, 6, 7) in colours
    assert any(abs(c[0] - 200) <= 2 and c[1] <= 12 for c in colours)  # the JPEG, within its rounding


def test_a_16_bit_grey_image_keeps_its_tones_instead_of_clipping_to_white(tmp_path):
    """PIL's convert("RGB") clips a 16-bit image's values at 255; decoded, it matches its own 8-bit export."""
    root = tmp_path / "f" / "grey"
    root.mkdir(parents=True)
    ramp = np.tile((np.arange(32, dtype=np.uint16) * 2048), (32, 1))  # 0, 2048, ... 63488
    Image.fromarray(ramp).save(root / "deep.png")
    assert Image.open(root / "deep.png").mode.startswith("I;16")
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(root / "flat.png")
    deep, flat = (imagefolder.decode(root / name, 32) for name in ("deep.png", "flat.png"))
    np.testing.assert_array_equal(deep, flat)
    assert deep[0, :4, 0].tolist() == [0, 8, 16, 24]


def test_a_classnames_txt_with_a_byte_order_mark_names_its_first_class_without_it(tmp_path):
    _folder(tmp_path / "pets")
    (tmp_path / "pets" / "classnames.txt").write_bytes(b"\xef\xbb\xbfkitty\r\ndoggo\r\nemu\r\n")
    assert load_imagefolder(tmp_path / "pets", "test").classes == ("kitty", "doggo", "emu")


def test_a_larger_image_is_scaled_on_its_shorter_side_and_centre_cropped(tmp_path):
    root = tmp_path / "f" / "bars"
    root.mkdir(parents=True)
    image = np.zeros((64, 128, 3), dtype=np.uint8)
    # white but for 24 px each side: scaled to 32 x 64, its centre square (columns 16-48) is white, black stays out
    image[:, 24:104] = 255
    Image.fromarray(image).save(root / "a.png")
    Image.fromarray(image).save(root / "b.png")
    data = load_imagefolder(tmp_path / "f", "train", size=32, test_fraction=0.5)
    assert data.images.shape == (1, 32, 32, 3) and data.images.min() == 255


def test_the_cache_lives_outside_the_folder_and_is_reused_while_the_folder_is_unchanged(tmp_path, monkeypatch):
    written = _folder(tmp_path / "pets")
    before = snapshot(tmp_path / "pets")
    first = load_imagefolder(tmp_path / "pets", "train")
    assert snapshot(tmp_path / "pets") == before  # nothing written into the user's folder
    assert len(list(cache_root().glob("*.npz"))) == 2  # train/ and test/ (both checked): one entry each
    assert str(cache_root()).startswith(os.environ["BENCH_CACHE_DIR"])

    def no_decoding(tree, size):
        raise AssertionError("decoded again although the folder is unchanged")

    with monkeypatch.context() as patched:
        patched.setattr(imagefolder, "decode_tree", no_decoding)
        np.testing.assert_array_equal(load_imagefolder(tmp_path / "pets", "train").images, first.images)

    # a changed folder is decoded again: one image rewritten (new size and time), one added
    new = np.full((32, 32, 3), 7, dtype=np.uint8)
    Image.fromarray(new).save(tmp_path / "pets" / "train" / "dog" / "000004.png")
    Image.fromarray(new).save(tmp_path / "pets" / "train" / "frog" / "zzz.png")
    changed = load_imagefolder(tmp_path / "pets", "train")
    assert len(changed) == len(written["train"][0]) + 1
    assert (changed.images == 7).all(axis=(1, 2, 3)).sum() == 2
    assert len(list(cache_root().glob("*.npz"))) == 2  # the entry was replaced, not added to


def _flipped(data: bytes) -> bytes:
    """``data`` with 16 bytes in its middle inverted: inside the images' array, the zip's directory and the key
    intact, so only the array's CRC tells."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 16]) + data[mid + 16:]


@pytest.mark.parametrize("damage", ["truncated", "not-a-zip", "empty", "flipped"])
def test_a_damaged_cache_entry_is_decoded_again_and_replaced(tmp_path, damage):
    """A cache entry damaged from outside (a disk full mid-copy, a stray edit) costs a decoding, not the run:
    whether its key cannot be read or only its images (the key matched, then reading the arrays was a traceback)."""
    _folder(tmp_path / "pets")
    first = {split: load_imagefolder(tmp_path / "pets", split) for split in ("train", "test")}
    damaged = {"truncated": lambda d: d[: len(d) // 2], "not-a-zip": lambda d: b"PK" + bytes(64),
               "empty": lambda d: b"", "flipped": _flipped}[damage]
    for entry in cache_root().glob("*.npz"):
        entry.write_bytes(damaged(entry.read_bytes()))
    for split, dataset in first.items():
        np.testing.assert_array_equal(load_imagefolder(tmp_path / "pets", split).images, dataset.images)
    for entry in cache_root().glob("*.npz"):  # written anew, readable again
        with np.load(entry) as cached:
            assert cached["images"].ndim == 4


@pytest.mark.parametrize("path, name", [
    ("pets", "pets"), ("pets/", "pets"), ("pets//", "pets"), ("./pets", "pets"), ("./pets/./", "pets"),
    ("a//b/./c/", "a/b/c"), ("/data//pets/", "/data/pets"), ("//data", "/data"), ("/", "/"), (".", "."),
    ("./", "."), ("~/pets/", "~/pets"), ("../pets/", "../pets"),
    ("a/../pets", "a/../pets"),  # not pets: where a is a link, a/.. is the link's parent
])
def test_a_folder_name_drops_dots_and_extra_slashes_and_is_never_resolved(path, name):
    assert imagefolder.folder_name(path) == name
    assert imagefolder.dataset_name(f"imagefolder:{path}") == f"imagefolder:{name}"


def test_other_dataset_names_are_kept_as_given():
    for name in ("cifar10", "imagefolder:", "stl10/", "./imagefolder:x/"):
        assert imagefolder.dataset_name(name) == name


def test_one_folder_has_one_cache_entry_however_its_path_is_typed(tmp_path, monkeypatch):
    """The cache is keyed by the folder itself: a relative, ./-prefixed, trailing-slash or absolute path, or a link
    to it, reads the entry the first load wrote."""
    _folder(tmp_path / "pets")  # the tests run in tmp_path
    (tmp_path / "link").symlink_to(tmp_path / "pets")
    first = load_imagefolder("pets", "train")
    monkeypatch.setattr(imagefolder, "decode_tree", lambda tree, size: pytest.fail("decoded again"))
    for path in ("./pets/", f"{tmp_path}//pets/", "link/"):
        np.testing.assert_array_equal(load_imagefolder(path, "train").images, first.images)
    assert len(list(cache_root().glob("*.npz"))) == 2  # train/ and test/


def test_a_read_only_cache_only_costs_the_decoding(tmp_path, monkeypatch):
    written = _folder(tmp_path / "pets")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "afile"))
    (tmp_path / "afile").write_text("a file where the cache folder would be")
    np.testing.assert_array_equal(load_imagefolder(tmp_path / "pets", "test").images, written["test"][0][LISTED])


@pytest.mark.parametrize("case, expected", [
    ("no-class-folders", "image folder {root} has no class folders"),
    ("empty-class", "image folder {root}/train/dog has no images"),
    ("unreadable", "image {root}/test/cat/000000.png cannot be read"),
    ("other-classes", "image folders {root}/train and {root}/test have different classes (bird, frog)"),
    ("train-only", "image folder {root} has train/ but no test/"),
    ("classnames-count", "{root}/classnames.txt has 2 names for 3 class folders"),
    ("not-a-folder", "image folder {root} is not a folder"),
])
def test_each_problem_is_one_line_naming_the_file_or_folder_and_writes_nothing(tmp_path, case, expected):
    root = tmp_path / "pets"
    if case == "no-class-folders":
        root.mkdir()
        (root / "stray.png").write_bytes(b"")
    elif case != "not-a-folder":
        _folder(root)
    if case == "empty-class":
        for f in (root / "train" / "dog").iterdir():
            f.unlink()
    elif case == "unreadable":
        (root / "test" / "cat" / "000000.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    elif case == "other-classes":
        (root / "test" / "frog").rename(root / "test" / "bird")
    elif case == "train-only":
        import shutil

        shutil.rmtree(root / "test")
    elif case == "classnames-count":
        (root / "classnames.txt").write_text("cat\ndog\n")
    before = snapshot(tmp_path)
    with pytest.raises(BenchError) as info:
        load_imagefolder(root, "train")
        load_imagefolder(root, "test")
    assert str(info.value).startswith(expected.format(root=root)) and "\n" not in str(info.value)
    assert snapshot(tmp_path) == before and not cache_root().exists()


@pytest.mark.parametrize("per_class, split, fraction, expected", [
    (1, "test", 0.2, "split by test_fraction=0.2 has no test images (3 images in 3 classes); add images"),
    (2, "train", 0.9, "split by test_fraction=0.9 has no train images (6 images in 3 classes); lower test_fraction"),
])
def test_a_one_tree_split_left_without_images_is_one_line_naming_the_folder(tmp_path, per_class, split, fraction,
                                                                           expected):
    """A folder of one image per class has no test image once split (a large fraction: no training image): one
    line, not a traceback from the evaluation of zero images after training."""
    _folder(tmp_path / "pets", per_class=per_class, split=False)
    with pytest.raises(BenchError) as info:
        load_imagefolder(tmp_path / "pets", split, test_fraction=fraction)
    assert str(info.value).startswith(f"image folder {tmp_path / 'pets'} {expected}")


@pytest.mark.parametrize("opts", [{"test_fraction": 0.5}, {"split_seed": 3}])
def test_split_options_for_a_folder_of_train_and_test_are_refused_not_ignored(tmp_path, opts):
    """train/ and test/ are the splits: a test_fraction or split_seed would change nothing but the run's data_opts
    and configuration id (two ids for one experiment), so it is one line, not silently unused."""
    _folder(tmp_path / "pets")
    key = next(iter(opts))
    with pytest.raises(BenchError, match=f"has train/ and test/ folders, its splits as given; {key} splits a one-tree "
                                         f"folder only: drop --data-opt {key}"):
        load_imagefolder(tmp_path / "pets", "test", **opts)
    assert load_imagefolder(tmp_path / "pets", "test").info == {"data_split": "train/ and test/ folders"}


@pytest.mark.parametrize("opts, expected", [
    ({"test_fraction": 0}, "test_fraction=0 must be a number in (0, 1)"),
    ({"test_fraction": 1.5}, "test_fraction=1.5 must be a number in (0, 1)"),
    ({"size": 4}, "size=4 must be an integer of at least 8"),
    ({"size": "big"}, "size='big' must be an integer"),
    ({"split_seed": -1}, "split_seed=-1 must be an integer >= 0"),
])
def test_bad_options_are_one_line(tmp_path, opts, expected):
    _folder(tmp_path / "pets", split=False)
    with pytest.raises(BenchError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_imagefolder(tmp_path / "pets", "train", **opts)


def test_the_first_images_of_a_split_hold_every_class_in_proportion(tmp_path):
    """Classes of 8, 4 and 2 images: the first 7 (--limit-test 7) are 4, 2 and 1 of them, each class's images in
    their files' order, where the folder's class-by-class order would give 7 images of the first class."""
    from bench.data.imagefolder import stratified_order

    labels = np.repeat([0, 1, 2], [8, 4, 2])
    order = stratified_order(labels)
    assert sorted(order.tolist()) == list(range(14)) and np.bincount(labels[order[:7]]).tolist() == [4, 2, 1]
    for label in range(3):
        assert np.all(np.diff(order[labels[order] == label]) > 0)
    images = np.arange(14, dtype=np.uint8)[:, None, None, None].repeat(32, 1).repeat(32, 2).repeat(3, 3)
    write_image_folder(tmp_path / "pets" / "test", images, labels, CLASSES)
    write_image_folder(tmp_path / "pets" / "train", images, labels, CLASSES)
    limited = load_imagefolder(tmp_path / "pets", "test").subset(7)
    assert np.bincount(limited.labels).tolist() == [4, 2, 1]
    assert limited.images[:, 0, 0, 0].tolist() == order[:7].tolist()


def test_a_class_named_train_in_one_tree_is_a_class_not_a_split(tmp_path):
    """CIFAR-100 has a class "train": written as one tree, its folder holds images beside the other class folders,
    and the folder is one class split by test_fraction, not a train/ split missing its test/. A train/ of class
    folders beside another folder (val/) is still a split without test/."""
    classes = ("bus", "train", "tram")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 5)
    write_image_folder(tmp_path / "vehicles", rng.integers(0, 256, (15, 32, 32, 3), dtype=np.uint8), labels, classes)
    test = load_imagefolder(tmp_path / "vehicles", "test", test_fraction=0.2)
    assert test.classes == classes and np.bincount(test.labels).tolist() == [1, 1, 1]
    assert test.info == {"data_split": "test_fraction=0.2 split_seed=0"}

    _folder(tmp_path / "pets")
    (tmp_path / "pets" / "test").rename(tmp_path / "pets" / "val")
    with pytest.raises(BenchError, match="has train/ but no test/"):
        load_imagefolder(tmp_path / "pets", "test")


@pytest.mark.parametrize("others", [("bus",), ()], ids=["beside-other-classes", "alone"])
def test_classes_named_train_and_test_in_one_tree_are_classes_not_the_splits(tmp_path, others):
    """A one-tree folder whose classes include both ``train`` and ``test`` (with or without other classes): each of
    those folders holds images, not class folders, so they are two classes split by test_fraction, not a train/
    and test/ layout that then fails for want of class folders. Folders of class folders stay the splits (the
    first test), and a train/ of class folders beside a test/ of images is still named as the broken split."""
    classes = tuple(sorted(("test", "train", *others)))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(classes)), 5)
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    write_image_folder(tmp_path / "tree", images, labels, classes)
    test = load_imagefolder(tmp_path / "tree", "test")  # the default test_fraction, 0.2
    train = load_imagefolder(tmp_path / "tree", "train", test_fraction=0.2)
    assert test.classes == train.classes == classes
    assert np.bincount(test.labels).tolist() == [1] * len(classes)
    assert np.bincount(train.labels).tolist() == [4] * len(classes)
    assert test.info == {"data_split": "test_fraction=0.2 split_seed=0"}

    _folder(tmp_path / "pets")
    import shutil

    shutil.rmtree(tmp_path / "pets" / "test")
    write_image_folder(tmp_path / "loose", images[:3], np.zeros(3, dtype=np.int64), ("test",))
    (tmp_path / "loose" / "test").rename(tmp_path / "pets" / "test")  # images directly in test/
    with pytest.raises(BenchError, match=f"image folder {tmp_path / 'pets' / 'test'} has no class folders"):
        load_imagefolder(tmp_path / "pets", "train")


def test_a_lone_train_folder_of_images_is_still_a_train_split_without_its_test(tmp_path):
    """``PATH/train/*.png`` and nothing else is a split layout missing test/ (and its class folders), as before: a
    one-class tree would be no dataset to classify."""
    write_image_folder(tmp_path / "pets", np.zeros((3, 32, 32, 3), dtype=np.uint8), np.zeros(3, dtype=np.int64),
                       ("train",))
    with pytest.raises(BenchError, match="has train/ but no test/"):
        load_imagefolder(tmp_path / "pets", "train")
