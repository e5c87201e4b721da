"""Held-out classes (which ones, the training split without them) and the one-time resize of evaluation images."""
import numpy as np
import pytest

from bench.data.class_split import check_holdout_spec, resolve_holdout, without_classes
from bench.data.datasets import ArrayDataset
from bench.data.resize import INTERPOLATION, fit_to_size
from bench.errors import BenchError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_named_classes_are_held_out_in_the_datasets_order():
    assert resolve_holdout(("truck", "cat"), CLASSES, seed=5) == ("cat", "truck")
    assert resolve_holdout((), CLASSES, seed=5) == ()


def test_a_count_is_drawn_with_the_seed_so_seeds_hold_out_different_classes():
    drawn = {seed: resolve_holdout(("2",), CLASSES, seed) for seed in range(6)}
    assert all(len(d) == 2 and set(d) <= set(CLASSES) and list(d) == sorted(d, key=CLASSES.index)
               for d in drawn.values())
    assert drawn[3] == resolve_holdout(("2",), CLASSES, 3)  # the same seed, the same split
    assert len(set(drawn.values())) > 1
    picked = np.random.default_rng(3).choice(10, size=2, replace=False)  # the documented draw
    assert drawn[3] == tuple(CLASSES[i] for i in sorted(picked))


@pytest.mark.parametrize("spec, message", [
    (("0",), "holds out nothing"),
    (("cat", "cat"), "names 'cat' twice"),
    (("cat", ""), "an empty class name"),
])
def test_malformed_holdout_options_are_refused_before_any_data(spec, message):
    with pytest.raises(BenchError, match=message):
        check_holdout_spec(spec)


@pytest.mark.parametrize("spec, message", [
    (("kitten",), "'kitten' is not a class of dataset 'cifar10'; its classes are airplane, automobile"),
    (("truck", "Cat"), "'Cat' is not a class of dataset 'cifar10' \\(class names match exactly: 'cat'\\); its classes"),
    (("10",), "leaves no class to train on: dataset 'cifar10' has 10 classes; hold out at most 9"),
    (("cat", "2"), "class names or one count, not both"),
    (CLASSES, "names every class"),
])
def test_holdout_options_the_dataset_cannot_meet_are_refused(spec, message):
    with pytest.raises(BenchError, match=message):
        resolve_holdout(spec, CLASSES, 0, "cifar10")


def test_the_training_split_drops_held_out_images_and_renumbers_the_rest():
    images = np.arange(6, dtype=np.uint8)[:, None, None, None].repeat(3, axis=3).repeat(2, 1).repeat(2, 2)
    data = ArrayDataset(images, [0, 1, 2, 3, 1, 2], ("a", "b", "c", "d"), "toy/train")
    kept = without_classes(data, ("b",))
    assert kept.classes == ("a", "c", "d") and kept.labels.tolist() == [0, 1, 2, 1]
    assert kept.images[:, 0, 0, 0].tolist() == [0, 2, 3, 5]  # the images of a, c, d, c in their order
    assert without_classes(data, ()) is data


def test_a_transfer_split_is_resized_once_with_the_named_interpolation_and_says_so():
    """An evaluation split at another size comes to the model's size through the one resize of
    bench.data.resize (also used for training splits): flat colours stay, and the split's info names it."""
    flat = np.full((2, 40, 40, 3), 90, dtype=np.uint8)
    data = ArrayDataset(flat, [0, 1], ("x", "y"), "toy/test")
    small = fit_to_size(data, 16)
    assert small.images.shape == (2, 16, 16, 3) and (small.images == 90).all()
    assert small.labels.tolist() == [0, 1] and small.classes == ("x", "y")
    assert small.info == {"resize_interpolation": INTERPOLATION, "source_image_size": 40}
    assert fit_to_size(small, 16) is small  # already at the model's size: no copy


def test_several_numbers_are_the_names_of_digit_classes_and_one_number_is_a_count():
    """mnist's and svhn's classes are "0".."9": 3,7 holds out those two digits (as a run's unseen_classes reads);
    7 alone still draws seven classes with the seed."""
    digits = tuple(str(d) for d in range(10))
    check_holdout_spec(("3", "7"))
    assert resolve_holdout(("7", "3"), digits, seed=0, dataset="mnist") == ("3", "7")
    assert len(resolve_holdout(("7",), digits, seed=0, dataset="mnist")) == 7


def test_one_split_is_one_configuration_whatever_the_order_or_spacing_it_was_typed_in():
    """``--holdout-classes "cat, truck"`` (a space after the comma), ``truck,cat`` and ``" 2"`` name the splits
    ``cat,truck`` and ``2``: the same configuration id and the same holdout_classes in the row, so compare and report
    group them as one configuration (a space kept in the name gave another id and a row of " truck,cat")."""
    from bench.app.options import config_from_flags
    from bench.cli import _split
    from bench.results.columns import config_key

    def config(*typed):
        return config_from_flags(dataset="synthetic", preset="smoke", holdout_classes=_split(None, None, typed))

    plain = config("cat,truck")
    for typed in (("truck,cat",), ("cat, truck",), ("truck", " cat ")):
        assert config(*typed).holdout_classes == ("cat", "truck")
        assert config_key(config(*typed)) == config_key(plain)
    assert config(" 2").holdout_classes == ("2",) and config_key(config(" 2")) == config_key(config("2"))
