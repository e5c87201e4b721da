"""The registered datasets as the app reads them by name: a split (``dataset_split``), the options to decode one
at a model's input size (``decode_options``), the template set it names as its own and the ones zero-shot and a
pretrained CLIP use on it (``dataset_templates``, ``zero_shot_templates``, ``published_templates``), and its test
split loaded with a template set for evaluation (``Target``, ``load_target``). Used by a run, ``bench eval``,
pretrained models and zero-shot transfer alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BenchError, UnknownNameError
from ..host.manager import get_entry

if TYPE_CHECKING:  # bench.data.datasets imports torch; options are checked with these lookups before torch loads
    from ..data.datasets import ArrayDataset


def dataset_templates(dataset: str, check: bool = True) -> str | None:
    """The template set ``dataset``'s registration names as its own (``templates=``), or None; ``check``: that
    set must be registered, for a caller about to use it (a run that names another set never needs it)."""
    entry = get_entry("datasets", dataset)
    name = entry.meta.get("templates")
    if name is not None and check:
        try:
            get_entry("templates", name)
        except UnknownNameError:
            raise BenchError(f"dataset {dataset!r} (plugin {entry.plugin!r}) names template set {name!r} as its own, "
                             f"and no plugin registers it; register it, or pass --templates") from None
    return name


def zero_shot_templates(dataset: str, fallback: str) -> str:
    """The template set for zero-shot on ``dataset``: the one its registration names, else ``fallback``."""
    return dataset_templates(dataset) or fallback


def published_templates(dataset: str) -> str:
    """The template set a pretrained CLIP is measured with on ``dataset``: CLIP's published prompts. That is the set
    the dataset names, except where it names bench's own training set ``seed`` (cifar10, synthetic): there CLIP's
    CIFAR-10 prompts, ``openai``, as CLIP_benchmark does."""
    name = zero_shot_templates(dataset, "openai")
    return "openai" if name == "seed" else name


@dataclass
class Target:
    """One evaluation dataset, loaded: its test split (at the model's input size), template set and prompts."""

    dataset: str
    templates_name: str
    templates: list
    test: object  # bench.data.datasets.ArrayDataset
    native_size: int  # the side of its images before resizing


def decode_options(dataset: str, size: int | None) -> dict:
    """The options to read a dataset other than a run's own with: ``size`` for a dataset whose factory decodes
    images at a ``size`` it takes (``imagefolder:PATH``), so they are decoded at the model's input rather than
    at the factory's default 32 px and enlarged again; none for the rest, or where ``size`` is None."""
    import inspect

    if size is None or "size" not in inspect.signature(get_entry("datasets", dataset).factory).parameters:
        return {}
    return {"size": size}


def dataset_split(dataset: str, split: str, data_dir, seed: int, opts: dict | None = None,
                  limit: int | None = None) -> ArrayDataset:
    """``split`` of the registered ``dataset`` (its first ``limit`` images) from its factory with ``opts``, refused
    in one line where it holds no image (:func:`bench.data.datasets.with_images`)."""
    made = get_entry("datasets", dataset).create(split, data_dir, seed, **(opts or {}))
    from ..data.datasets import with_images

    return with_images(made.subset(limit), dataset, split)


def load_target(dataset: str, templates_name: str, data_dir, seed: int, limit_test, image_size: int | None,
                opts: dict | None = None) -> Target:
    """The test split of ``dataset`` (its first ``limit_test`` images), resized to ``image_size`` unless None (a
    model that preprocesses images itself), and its validated template set. ``opts``: the dataset factory's
    options (``--data-opt`` for the run's own dataset, else :func:`decode_options`)."""
    from ..clip.templates import load_templates
    from ..data.resize import fit_to_size

    test = dataset_split(dataset, "test", data_dir, seed, opts, limit_test)
    native = int(test.images.shape[1])
    if image_size is not None:
        test = fit_to_size(test, image_size, dataset)
    templates = load_templates(templates_name)
    return Target(dataset, templates_name, templates, test, native)
