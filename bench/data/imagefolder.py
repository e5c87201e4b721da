"""``imagefolder:PATH``: people's own images in torchvision's ImageFolder layout, decoded once and cached.

Layouts: ``PATH/train/<class>/...`` and ``PATH/test/<class>/...`` (the splits as given), or ``PATH/<class>/...``
(one tree, split per class by a seeded fraction; ``train/`` and ``test/`` are the splits only when they hold class
folders, and classes of that tree when they hold images). Every file whose extension torchvision's ImageFolder takes
(``.jpg``, ``.png``, ``.webp``, ...) in a class folder or below it is an image of that class; class folders sort by
name into labels 0, 1, .... Class names are the folder names, or the lines of ``PATH/classnames.txt``: one name per
class folder, in that sorted order. A split lists its images with the classes interleaved in proportion
(:func:`stratified_order`), so ``--limit-train``/``--limit-test`` take a share of every class.

Images of any size and mode PIL reads become RGB at ``size`` x ``size`` (default 32): an image of another size is
scaled on its shorter side (PIL's antialiased bilinear) and centre-cropped. The decoded arrays of each tree are
cached under ``$BENCH_CACHE_DIR/imagefolder`` (default ``~/.cache/bench/imagefolder``), never in the user's folder,
keyed by the tree's file list, sizes and modification times: while the folder is unchanged, loading reads one
``.npz``; a changed folder is decoded again. Problems (no images, an unreadable image, train and test naming
different classes) are one line naming the file or folder, raised before anything is written.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic_files import atomic_file
from ..errors import BenchError

if TYPE_CHECKING:  # bench.data.datasets imports torch, and dataset names are read here before torch loads
    from .datasets import ArrayDataset

# torchvision.datasets.folder.IMG_EXTENSIONS, compared without case
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_SIZE = 32  # bench's default --image-size: the images are not resized again at load
DEFAULT_TEST_FRACTION = 0.2
CLASSNAMES_FILE = "classnames.txt"
_CACHE_FORMAT = 2  # part of every cache key: a change of what is stored invalidates old entries
PREFIX = "imagefolder:"  # the dataset name's prefix (plugins/datasets.py registers it); PATH follows it


def folder_name(path: str) -> str:
    """``path`` as a dataset name spells it: ``./``, ``.`` components, repeated and trailing ``/`` dropped, so one
    folder has one name, one configuration id and one row label however it was typed. A string operation only: not
    made absolute, links not followed, ``~`` and ``..`` kept, so the name means the same on every machine (``a/..``
    is not ``.`` where ``a`` is a link)."""
    if not path:
        return path
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return ("/" if path.startswith("/") else "") + "/".join(parts) or "."


def dataset_name(name: str) -> str:
    """A dataset name as bench keeps it: ``imagefolder:PATH`` with :func:`folder_name`'s PATH, any other as given."""
    return PREFIX + folder_name(name[len(PREFIX):]) if name.startswith(PREFIX) else name


def cache_root() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR", "~/.cache/bench")).expanduser() / "imagefolder"


@dataclass
class Tree:
    """One folder of class folders: its classes (sorted folder names) and every image file with its label."""

    folder: Path
    classes: tuple
    files: list  # (path relative to folder, "/"-separated; label), in label then path order
    stats: list  # (size in bytes, modification time in ns) of each file, read while listing


def _walk(top: str, rel: str, found: list):
    """Image files under ``top`` (``rel`` its path from the tree) with their stats; strings, not pathlib, since a
    cached load lists every file and 10,000 Path objects cost more than reading the cache."""
    with os.scandir(top) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                _walk(entry.path, f"{rel}/{entry.name}", found)
            elif entry.name.lower().endswith(IMG_EXTENSIONS) and entry.is_file():
                st = entry.stat()
                found.append((f"{rel}/{entry.name}", st.st_size, st.st_mtime_ns))


def _class_folders(folder: Path) -> set:
    return {e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")}


def scan(folder: Path) -> Tree:
    """The class folders and image files of ``folder`` (hidden entries skipped, where torchvision's ``find_classes``
    would make a class of ``.ipynb_checkpoints`` and read ``._photo.jpg`` metadata files as images; links
    followed, as its ``make_dataset`` does); a tree without class folders, or a class folder without images, is an
    error."""
    classes = tuple(sorted(_class_folders(folder)))
    if not classes:
        raise BenchError(f"image folder {folder} has no class folders; put each class's images in a folder of its own "
                         f"(PATH/<class>/*.png, or PATH/train/<class>/ and PATH/test/<class>/)")
    files, stats = [], []
    for label, name in enumerate(classes):
        found = []
        _walk(os.path.join(folder, name), name, found)
        if not found:
            raise BenchError(f"image folder {folder / name} has no images ({', '.join(IMG_EXTENSIONS)}); add some, or "
                             f"remove the folder")
        files += [(rel, label) for rel, _, _ in found]
        stats += [(size, mtime) for _, size, mtime in found]
    return Tree(folder, classes, files, stats)


def listing_key(tree: Tree, size: int) -> str:
    """What the cached arrays depend on: every file's path, size and modification time, and the decoded size."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{size}|{tree.classes}".encode())
    digest.update("".join(f"|{rel}|{label}|{nbytes}|{mtime}"
                          for (rel, label), (nbytes, mtime) in zip(tree.files, tree.stats)).encode())
    return digest.hexdigest()


def decode(path, size: int) -> np.ndarray:
    """One image file as uint8 RGB ``(size, size, 3)``: shorter side scaled to ``size``, then the centre square."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
                # 16-bit grey (older Pillow opens a 16-bit PNG as "I"): convert() would clip every value above 255
                # to white; keep the top 8 bits, the image an 8-bit export of it holds
                img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8))
            img = img.convert("RGB")
            if img.size != (size, size):
                width, height = img.size
                scale = size / min(width, height)
                w, h = max(size, round(width * scale)), max(size, round(height * scale))
                img = img.resize((w, h), Image.BILINEAR)
                left, top = (w - size) // 2, (h - size) // 2
                img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,  # PIL raises SyntaxError for some headers
            Image.DecompressionBombError) as exc:  # more pixels than PIL opens: not an OSError
        raise BenchError(f"image {path} cannot be read ({type(exc).__name__}: {str(exc)[:80]}); replace or remove "
                         f"it") from None


def decode_tree(tree: Tree, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image of ``tree``, decoded on a few threads (PIL releases the GIL while it decodes)."""
    paths = [os.path.join(tree.folder, rel) for rel, _ in tree.files]
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, image in enumerate(pool.map(lambda p: decode(p, size), paths, chunksize=64)):
            images[i] = image
    return images, np.array([label for _, label in tree.files], dtype=np.int64)


def _cache_file(folder: Path, size: int) -> Path:
    # one entry per tree and size, overwritten when the tree changes: a cache that cannot grow without bound; the
    # folder resolved (this machine's cache, not a name), so every spelling of it and every link to it share one
    name = hashlib.sha256(f"{folder.resolve()}|{size}".encode()).hexdigest()[:24]
    return cache_root() / f"{name}.npz"


def _cache_hit(path: Path, key: str) -> bool:
    """The cache entry at ``path`` holds the arrays of ``key`` (reads only its key, not its arrays)."""
    try:  # opened here, not by np.load: numpy leaves its own file open when the zip is damaged
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as cached:
            return str(cached["key"]) == key
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent, or damaged: decode again
        return False


def _write_cache(path: Path, key: str, images: np.ndarray, labels: np.ndarray):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            np.savez(f, key=np.array(key), images=images, labels=labels)
    except OSError:  # a read-only cache only costs the decoding
        pass


def load_trees(trees: dict, want: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tree ``want``'s images and labels, from the cache while its key matches. Every tree of ``trees`` (train and
    test) not cached is decoded first, and only when all decode is anything cached: a bad image in either split
    stops the run before anything is written."""
    keys = {s: listing_key(t, size) for s, t in trees.items()}
    paths = {s: _cache_file(t.folder, size) for s, t in trees.items()}
    decoded = {s: decode_tree(t, size) for s, t in trees.items() if not _cache_hit(paths[s], keys[s])}
    for s, (images, labels) in decoded.items():
        _write_cache(paths[s], keys[s], images, labels)
    if want in decoded:
        return decoded[want]
    cached = _cached_arrays(paths[want])
    if cached is None:  # its key read, its arrays damaged (a changed byte fails the zip's CRC): decoded again
        cached = decode_tree(trees[want], size)
        _write_cache(paths[want], keys[want], *cached)
    return cached


def _cached_arrays(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The images and labels of the cache entry at ``path``, or None where they cannot be read."""
    try:  # opened here, not by np.load: numpy leaves its own file open when the zip is damaged
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as cached:
            return cached["images"], cached["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def class_names(root: Path, classes: tuple) -> tuple:
    """The folder names, or ``root/classnames.txt``'s lines (one per class folder, in sorted folder order)."""
    path = root / CLASSNAMES_FILE
    if not path.is_file():
        return classes
    try:
        text = path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is no part of the first name
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} cannot be read ({type(exc).__name__}); write one class name per line as UTF-8 "
                         f"text") from None
    if len(names) != len(classes) or len(set(names)) != len(names):
        raise BenchError(f"{path} has {len(names)} names{' with repeats' if len(set(names)) != len(names) else ''} "
                         f"for {len(classes)} class folders; write one distinct name per class folder, in the "
                         f"sorted order of the folder names ({', '.join(classes[:3])}"
                         f"{', ...' if len(classes) > 3 else ''})")
    return names


def check_options(test_fraction, size):
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise BenchError(f"imagefolder option size={size!r} must be an integer of at least 8 (pixels); "
                         f"--data-opt size=32")
    if test_fraction is not None and (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
                                      or not 0 < test_fraction < 1):
        raise BenchError(f"imagefolder option test_fraction={test_fraction!r} must be a number in (0, 1); "
                         f"--data-opt test_fraction=0.2")


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Which images of one tree are test images: in each class, a seeded shuffle's first round(fraction x n) (at
    least one of a class with two or more), so every class is in both splits in proportion."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_test = max(1, round(test_fraction * len(members))) if len(members) > 1 else 0
        test[rng.permutation(members)[:n_test]] = True
    return test


def load_imagefolder(path, split: str, seed: int = 0, test_fraction: float | None = None,
                     split_seed: int | None = None, size: int = DEFAULT_SIZE, name: str | None = None) -> ArrayDataset:
    """``split`` (``"train"`` or ``"test"``) of the image folder ``path``; ``split_seed`` (default ``seed``) and
    ``test_fraction`` (default :data:`DEFAULT_TEST_FRACTION`) split a one-tree folder, and are refused for a folder
    of train/ and test/, which they would not change; ``name`` is what messages and the dataset call it."""
    root = Path(path).expanduser()
    name = name or f"imagefolder:{path}"
    check_options(test_fraction, size)
    if split not in ("train", "test"):
        raise BenchError(f"dataset {name!r} has splits train and test, not {split!r}")
    if not root.is_dir():
        raise BenchError(f"image folder {root} is not a folder; name a folder of class folders (imagefolder:PATH)")
    halves = [s for s in ("train", "test") if (root / s).is_dir()]
    if halves and not any(_class_folders(root / s) for s in halves) and \
            (len(halves) == 2 or _class_folders(root) != set(halves)):
        # one tree in which classes are named train or test (CIFAR-100 has a class "train"): those folders hold
        # images, where a split's folder holds class folders (train/ of class folders beside val/ is not a tree of
        # two classes, nor is train/ beside a test/ of images). A lone train/ of images is a split without its test/
        # still: as a tree it would be one class, no dataset to classify.
        halves = []
    if len(halves) == 1:
        missing = "test" if halves == ["train"] else "train"
        raise BenchError(f"image folder {root} has {halves[0]}/ but no {missing}/; add {missing}/ with the same class "
                         f"folders, or put the class folders directly in {root} to split them by test_fraction")
    if halves:
        given = [k for k, v in (("test_fraction", test_fraction), ("split_seed", split_seed)) if v is not None]
        if given:  # silently unused, they would still enter the run's data_opts and configuration id
            raise BenchError(f"image folder {root} has train/ and test/ folders, its splits as given; {given[0]} "
                             f"splits a one-tree folder only: drop --data-opt {given[0]}")
        trees = {s: scan(root / s) for s in ("train", "test")}
        if trees["train"].classes != trees["test"].classes:
            only = sorted(set(trees["train"].classes) ^ set(trees["test"].classes))
            raise BenchError(f"image folders {root / 'train'} and {root / 'test'} have different classes "
                             f"({', '.join(only[:5]) or 'in another order'}); give both the same class folders")
        names = class_names(root, trees[split].classes)
        images, labels = load_trees(trees, split, size)
        info = {"data_split": "train/ and test/ folders"}
    else:
        split_seed = seed if split_seed is None else split_seed
        test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
            raise BenchError(f"imagefolder option split_seed={split_seed!r} must be an integer >= 0")
        tree = scan(root)
        names = class_names(root, tree.classes)
        images, labels = load_trees({"all": tree}, "all", size)
        test = split_indices(labels, test_fraction, split_seed)
        keep = test if split == "test" else ~test
        if not keep.any():  # a split of no images would fail later, in evaluation or the loader, as a traceback
            fix = "add images: a class is in both splits from two images on" if split == "test" else \
                "lower test_fraction, or add images"
            raise BenchError(f"image folder {root} split by test_fraction={test_fraction} has no {split} images "
                             f"({len(labels)} images in {len(names)} classes); {fix}, or give train/ and test/ folders")
        images, labels = images[keep], labels[keep]
        info = {"data_split": f"test_fraction={test_fraction} split_seed={split_seed}"}
    order = stratified_order(labels)
    from .datasets import ArrayDataset  # here, not at the top: see TYPE_CHECKING there

    return ArrayDataset(images[order], labels[order], names, f"{name}/{split}", info)


def stratified_order(labels: np.ndarray) -> np.ndarray:
    """The files' class-by-class order interleaved: the k-th of a class's n images at (k + 1/2) / n, ties by label,
    so the first N images (``--limit-train``, ``--limit-test``) hold every class in proportion, as the first N
    of CIFAR-10's shuffled files do, not the first classes alone. Each class keeps its files' order."""
    rank = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank[members] = np.arange(len(members))
    return np.lexsort((labels, (rank + 0.5) / np.bincount(labels)[labels]))
