"""Classes held out of training (``--holdout-classes``): which ones, and the training split without them.

The option is given as class names (``cat,truck``: a fixed split) or as a count (``2``: that many classes drawn
with the run's seed, so each seed holds out its own classes and a mean over seeds mixes splits). One number alone
is a count; several entries are names, numbers too, so the digit classes of mnist and svhn are held out by name
(``3,7``). Training sees neither the held-out classes' images nor their prompts; evaluation still classifies among
every class. Torch-free, so the configuration's checks can use it.
"""
from __future__ import annotations

import numpy as np

from ..errors import BenchError


def holdout_count(spec) -> int | None:
    """The count of the count form (``("2",)`` -> 2), or None for the names form and for no hold-out."""
    spec = tuple(spec or ())
    if len(spec) == 1 and str(spec[0]).strip().isdigit():
        return int(str(spec[0]).strip())
    return None


def canonical_holdout(spec) -> tuple:
    """The option as a configuration keeps it: names stripped and sorted (one split, given in any order or spacing,
    ``cat, truck``, is one configuration), a count as it is."""
    spec = tuple(str(s).strip() for s in spec or ())
    return spec if holdout_count(spec) is not None else tuple(sorted(spec))


def check_holdout_spec(spec):
    """The option's own form, before any dataset is read: one count >= 1, or distinct class names (several
    entries are names, even numbers: a dataset's classes may be digits)."""
    spec = tuple(str(s).strip() for s in spec or ())
    if not spec:
        return
    count = holdout_count(spec)
    if count is not None:
        if count < 1:
            raise BenchError("--holdout-classes 0 holds out nothing; give a count >= 1 or leave the option out")
        return
    if "" in spec:
        raise BenchError("--holdout-classes has an empty class name; write it like --holdout-classes cat,truck")
    repeated = sorted({s for s in spec if spec.count(s) > 1})
    if repeated:
        raise BenchError(f"--holdout-classes names {repeated[0]!r} twice; name each class once")


def resolve_holdout(spec, classes, seed: int, dataset: str = "") -> tuple[str, ...]:
    """The held-out class names, in the dataset's class order: the names given (each must be a class of the
    dataset), or ``count`` classes drawn without replacement by ``numpy.random.default_rng(seed)``."""
    check_holdout_spec(spec)
    spec, classes = tuple(str(s).strip() for s in spec or ()), tuple(classes)
    if not spec:
        return ()
    where = f"dataset {dataset!r}" if dataset else "the dataset"
    count = holdout_count(spec)
    if count is not None:
        if count >= len(classes):
            raise BenchError(f"--holdout-classes {count} leaves no class to train on: {where} has {len(classes)} "
                             f"classes; hold out at most {len(classes) - 1}")
        picked = np.random.default_rng(seed).choice(len(classes), size=count, replace=False)
        return tuple(classes[i] for i in sorted(picked))
    unknown = [s for s in spec if s not in classes]
    if unknown and unknown[0].isdigit():
        raise BenchError(f"--holdout-classes takes class names or one count, not both ({','.join(spec)}): {where} "
                         f"has no class {unknown[0]!r}; write --holdout-classes cat,truck or --holdout-classes 2")
    if unknown:
        # names are matched exactly (the row and the configuration keep them as typed): point at a case slip
        same = [c for c in classes if c.casefold() == unknown[0].casefold()]
        hint = f" (class names match exactly: {same[0]!r})" if same else ""
        raise BenchError(f"--holdout-classes: {unknown[0]!r} is not a class of {where}{hint}; its classes are "
                         f"{', '.join(classes)}")
    if len(spec) >= len(classes):
        raise BenchError(f"--holdout-classes names every class of {where}; leave at least one to train on")
    return tuple(c for c in classes if c in spec)


def class_indices(classes, names) -> np.ndarray:
    """Label indices of ``names`` among ``classes``."""
    classes = list(classes)
    return np.asarray([classes.index(n) for n in names], dtype=np.int64)


def without_classes(data, names):
    """The split ``data`` (an :class:`~bench.data.datasets.ArrayDataset`) without the images of classes ``names``:
    its classes are the remaining ones, in their order, and labels are renumbered to index them, so the prompt
    table built from its classes holds no prompt of a held-out class."""
    from .datasets import ArrayDataset

    if not names:
        return data
    dropped = class_indices(data.classes, names)
    kept = [i for i in range(len(data.classes)) if i not in set(dropped.tolist())]
    renumber = np.full(len(data.classes), -1, dtype=np.int64)
    renumber[kept] = np.arange(len(kept))
    keep = ~np.isin(data.labels, dropped)
    return ArrayDataset(data.images[keep], renumber[data.labels[keep]], tuple(data.classes[i] for i in kept),
                        data.name)
