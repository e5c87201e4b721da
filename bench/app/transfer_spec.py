"""``--transfer``'s entries read for form (``DATASET`` or ``DATASET@TEMPLATES``) and checked against the registries:
what options are checked with, before torch, pandas or any data load (:mod:`bench.app.transfer` runs them)."""
from __future__ import annotations

from dataclasses import dataclass

from ..data.imagefolder import dataset_name
from ..errors import BenchError
from ..host.manager import get_entry

SEPARATOR = "@"  # DATASET@TEMPLATES in --transfer, and <run id>@<dataset> in a transfer row's run id


@dataclass(frozen=True)
class TransferSpec:
    dataset: str
    templates: str | None = None  # None: the dataset's own default set, else the run's


def parse_transfer(specs, home: str | None = None) -> list[TransferSpec]:
    """``--transfer`` entries (``DATASET`` or ``DATASET@TEMPLATES``), checked for form only (names resolve later);
    each dataset as bench keeps its name (:func:`bench.data.imagefolder.dataset_name`), so its rows join another
    run's rows of the same folder however each typed it."""
    out, seen = [], set()
    for spec in specs or ():
        spec = str(spec).strip()
        dataset, sep, templates = _split(spec)
        if not dataset or (sep and not templates):
            raise BenchError(f"--transfer {spec!r} is not DATASET or DATASET@TEMPLATES; write it like "
                             f"--transfer stl10,cifar100@openai")
        dataset = dataset_name(dataset)
        if home is not None and dataset == dataset_name(home):  # a saved run's home may be spelled as typed then
            raise BenchError(f"--transfer {dataset!r} is the dataset the run trains on, whose zero-shot evaluation is "
                             f"the run's own row; list other datasets (bench eval --templates for other template sets)")
        if dataset in seen:
            raise BenchError(f"--transfer names dataset {dataset!r} twice; list each dataset once")
        seen.add(dataset)
        out.append(TransferSpec(dataset, templates or None))
    return out


def _split(spec: str) -> tuple[str, str, str]:
    """``DATASET@TEMPLATES`` at its last ``@``, unless what follows is no template set and the whole text names a
    dataset: an ``@`` in a folder's path (``imagefolder:/data/me@home``)."""
    if SEPARATOR not in spec:
        return spec, "", ""
    dataset, sep, templates = spec.rpartition(SEPARATOR)
    if templates and not _resolves("templates", templates) and _resolves("datasets", spec):
        return spec, "", ""
    return dataset, sep, templates


def _resolves(kind: str, name: str) -> bool:
    try:
        get_entry(kind, name)
    except BenchError:  # an unknown name, or a resolver refusing it (imagefolder: a path that is no folder)
        return False
    return True


def check_transfer_names(specs: list[TransferSpec]):
    """Every dataset and template set named resolves, so a typo fails before any data is read."""
    for spec in specs:
        get_entry("datasets", spec.dataset)
        if spec.templates:
            get_entry("templates", spec.templates)
