"""Datasets and the device-resident loader."""
import numpy as np
import pytest
import torch

from bench.data.datasets import ArrayDataset, CIFARCLIPDataset, collate_fn, load_cifar10, make_synthetic
from bench.data.loader import DeviceLoader, batch_flip_crop, cutout_masks
from bench.errors import BenchError


def test_synthetic_is_deterministic_per_seed_and_split():
    a, b = make_synthetic("train", seed=3, n=64), make_synthetic("train", seed=3, n=64)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, make_synthetic("test", seed=3, n=64).images)
    assert a.images.shape == (64, 32, 32, 3) and a.images.dtype == np.uint8 and len(a.classes) == 10


def test_flip_crop_moves_whole_images_and_pads_with_zeros():
    # An image whose pixel values encode their own position: every output pixel must be either padding (0)
    # or the source pixel at a constant shift (a crop), possibly mirrored (a flip).
    h = w = 8
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = (1 + ys * w + xs).to(torch.uint8)[None, None].repeat(64, 3, 1, 1)
    out = batch_flip_crop(img, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == img.shape
    flips = shifts = 0
    for o in out[:, 0]:
        inside = o > 0
        assert inside.any()
        pos = o[inside].long() - 1
        sy, sx = pos // w - ys[inside], pos % w - xs[inside]
        flipped = len(set(sx.tolist())) > 1
        if flipped:
            sx = (w - 1 - pos % w) - xs[inside]
        assert len(set(sy.tolist())) == 1 and len(set(sx.tolist())) == 1
        flips += flipped
        shifts += int(sy[0] != 0 or sx[0] != 0)
    assert 10 < flips < 54 and shifts > 32  # both augmentations happen, at random


def test_device_loader_batches_cover_an_epoch_without_repeats():
    data = make_synthetic("train", n=100)
    loader = DeviceLoader(data, 32, "cpu", n_templates=5, generator=torch.Generator().manual_seed(0), augment=False)
    order = loader.epoch_order()
    assert len(loader) == 3 and len(set(order.tolist())) == 96
    batch = loader.make_batch(order[:32])
    assert batch.images.shape == (32, 3, 32, 32) and batch.images.min() >= -1 and batch.images.max() <= 1
    assert torch.equal(batch.prompt_ids // 5, batch.labels)


def test_cutout_blanks_one_whole_square_inside_each_image_at_every_possible_place():
    masks = cutout_masks(4000, 8, 3, torch.Generator().manual_seed(0))
    assert masks.shape == (4000, 1, 8, 8) and bool((masks.sum((1, 2, 3)) == 9).all())
    rows, cols = masks[:, 0].any(2), masks[:, 0].any(1)  # which rows / columns each square covers
    assert bool((rows.sum(1) == 3).all() and (cols.sum(1) == 3).all())  # a 3 x 3 square, never clipped
    top = rows.float().argmax(1) * 6 + cols.float().argmax(1)
    assert torch.bincount(top, minlength=36).min() > 60  # all 6 x 6 corners, about 111 times each
    # a rank's masks are its slice of the global batch's (as every other draw of the loader)
    global_masks = cutout_masks(6, 8, 3, torch.Generator().manual_seed(1))
    assert torch.equal(cutout_masks(3, 8, 3, torch.Generator().manual_seed(1), shard=(1, 2)), global_masks[3:])


def test_loader_cutout_zeroes_a_square_and_changes_nothing_else():
    data = make_synthetic("train", n=64)
    plain = DeviceLoader(data, 32, "cpu", 5, torch.Generator().manual_seed(0))
    cut = DeviceLoader(data, 32, "cpu", 5, torch.Generator().manual_seed(0), cutout=12)
    order = plain.epoch_order()
    assert torch.equal(order, cut.epoch_order())
    a, b = plain.make_batch(order[:32]), cut.make_batch(order[:32])
    changed = a.images != b.images
    assert bool((b.images[changed] == 0).all())  # only blanked pixels differ
    assert bool(((b.images == 0).all(1).sum((1, 2)) >= 144).all())  # every image has its 12 x 12 square
    assert torch.equal(a.labels, b.labels)


def test_batch_larger_than_the_data_is_a_clear_error():
    with pytest.raises(BenchError, match="lower --batch-size"):
        DeviceLoader(make_synthetic("train", n=10), 32, "cpu", 5, torch.Generator())


def test_cifar10_reads_npz_folders(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "test.npz", images=rng.integers(0, 255, (7, 32, 32, 3), dtype=np.uint8),
             labels=np.arange(7, dtype=np.uint8))
    data = load_cifar10("test", tmp_path, download=False)
    assert len(data) == 7 and data.classes[0] == "airplane" and data.labels.dtype == np.int64


def test_a_cifar10_npz_of_the_wrong_arrays_is_named_as_the_file_to_replace(tmp_path):
    """An .npz whose images are not uint8 (N, H, W, 3) is the user's file to unpack again, not the built-in plugin's
    fault: the error names the file and what is wrong with its arrays."""
    np.savez(tmp_path / "test.npz", images=np.zeros((7, 32, 32, 3), np.float32), labels=np.arange(7))
    with pytest.raises(BenchError) as info:
        load_cifar10("test", tmp_path, download=False)
    assert str(tmp_path / "test.npz") in str(info.value) and "images must be uint8" in str(info.value)
    assert "plugin" not in str(info.value)


def test_missing_cifar10_says_both_ways_to_provide_it(tmp_path):
    with pytest.raises(BenchError) as info:
        load_cifar10("train", tmp_path / "nothing", download=False)
    assert "download" in str(info.value) and "train.npz/test.npz" in str(info.value)


def test_reference_per_sample_dataset_and_collate():
    base = make_synthetic("train", n=8)
    ds = CIFARCLIPDataset(base, base.classes)
    images, tokens, labels = collate_fn([ds[i] for i in range(4)])
    assert images.shape == (4, 3, 32, 32) and tokens.shape == (4, 77) and labels.tolist() == base.labels[:4].tolist()
    assert float(images.min()) >= -1 and float(images.max()) <= 1


def test_array_dataset_rejects_wrong_dtype():
    with pytest.raises(BenchError, match="uint8"):
        ArrayDataset(np.zeros((2, 32, 32, 3), dtype=np.float32), np.zeros(2), ("a",), "x")


def _flipped_per_epoch(flip: str, pad: int, epochs: int = 4, n: int = 64) -> list[torch.Tensor]:
    """Which of ``n`` left-to-right ramp images each epoch's batches show mirrored (the ramp's slope flips sign)."""
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    images = np.repeat(ramp[None, :, :, None], 3, axis=3).repeat(n, axis=0)
    data = ArrayDataset(images, np.arange(n) % 10, tuple(str(i) for i in range(10)))
    loader = DeviceLoader(data, 16, "cpu", 1, torch.Generator().manual_seed(0), pad=pad, flip=flip)
    seen = []
    for epoch in range(epochs):
        order, flipped = loader.epoch_order(), torch.zeros(n, dtype=torch.bool)
        for i, batch in enumerate(loader.iter_from(0, order, epoch)):
            # columns 8 and 24 stay inside the image under any crop shift of up to 4 pixels
            flipped[order[i * 16:(i + 1) * 16]] = batch.images[:, 0, 16, 24] < batch.images[:, 0, 16, 8]
        seen.append(flipped)
    return seen


@pytest.mark.parametrize("pad", [0, 4])
def test_alternating_flips_show_each_image_the_other_way_every_epoch(pad):
    """flip="alternate": the first epoch mirrors about half the images, and every later epoch mirrors exactly the
    images the epoch before did not, through the loader's own batches (with and without the padded crop);
    random flips do not alternate."""
    seen = _flipped_per_epoch("alternate", pad)
    assert 16 < int(seen[0].sum()) < 48
    for before, after in zip(seen, seen[1:]):
        assert torch.equal(after, ~before)
    randomly = _flipped_per_epoch("random", pad)
    assert not all(torch.equal(b, ~a) for a, b in zip(randomly, randomly[1:]))



def _synthetic_whole_arrays(split, seed, n, size=32):
    """make_synthetic as one computation over whole arrays (how it was first written): the plain form."""
    from bench.data.datasets import _SYNTHETIC_RGB

    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    labels = rng.integers(0, 10, size=n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = labels * (np.pi / 10)
    freq = rng.uniform(2.0, 4.0, size=n) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi, size=n)
    proj = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    wave = 0.5 + 0.5 * np.sin(freq[:, None, None] * proj + phase[:, None, None])
    contrast = rng.uniform(0.6, 1.0, size=n)[:, None, None, None]
    background = rng.uniform(0, 80, size=(n, 1, 1, 3)).astype(np.float32)
    img = background + contrast * wave[..., None] * (_SYNTHETIC_RGB[labels][:, None, None, :] - background)
    img += rng.normal(0, 20, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), labels


@pytest.mark.parametrize("split, size", [("train", 32), ("test", 32), ("train", 9)])
def test_a_synthetic_subset_makes_only_its_images_and_they_equal_the_whole_array_computation(split, size):
    """A smoke run keeps 256 of the 5000 training images: its subset makes those alone, in chunks, and they are the
    first images of the set as one computation over whole arrays makes it, bit for bit."""
    images, labels = _synthetic_whole_arrays(split, 1, 600, size)
    whole = make_synthetic(split, seed=1, n=600, size=size)
    assert np.array_equal(whole.images, images) and np.array_equal(whole.labels, labels)
    for limit in (1, 255, 256, 257, 599):
        part = make_synthetic(split, seed=1, n=600, size=size).subset(limit)
        assert part._images is None  # nothing is made before it is read
        assert np.array_equal(part.images, images[:limit]) and np.array_equal(part.labels, labels[:limit])
        assert (part.classes, part.name, len(part)) == (whole.classes, whole.name, limit)
    assert whole.subset(10).images.base is whole.images  # once made, a subset is a view, as for any ArrayDataset
