"""What ``bench list`` shows: each entry's name and summary, and for encoders family, size and source.

Listing builds nothing and imports neither torch nor timm: an encoder's size is the ``params`` its registration
declares (its parameter count at the listing's embed width and image size, :data:`LISTING_SIZE`). Encoders that
declare none show ``-``, unless ``count=True`` builds them on PyTorch's meta device to count.
"""
from __future__ import annotations

import functools
from dataclasses import replace

from ..clip.configs import ModelCfg
from ..host.registry import Entry, Registry

# (embed_dim, image_size) of the counts `bench list encoders` shows: the default model's
LISTING_SIZE = (ModelCfg().embed_dim, ModelCfg().image_resolution)


def declared_params(entry: Entry) -> int | None:
    """The parameter count ``entry``'s registration declares (``params=``), or None."""
    value = entry.meta.get("params")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@functools.lru_cache(maxsize=None)
def _count_on_meta(factory, embed_dim: int, image_size: int) -> int:
    import torch

    # On the meta device parameters have shapes but no storage and init is a no-op, so even ResNet-50
    # costs milliseconds; the price is importing torch (and timm for its encoders), seconds.
    with torch.device("meta"):
        module = factory(embed_dim, image_size)
    return sum(p.numel() for p in module.parameters())


def encoder_params(entry: Entry, embed_dim: int | None = None, image_size: int | None = None) -> int | None:
    """Parameters of the vision tower (trunk, pool and projection), counted by building it on the meta device, at
    the listing's embed width and image size unless given.

    Returns None when the entry is a prefix (``timm:<name>``) or its factory fails on the meta device.
    """
    if entry.prefix:
        return None
    try:
        return _count_on_meta(entry.factory, embed_dim or LISTING_SIZE[0], image_size or LISTING_SIZE[1])
    except Exception:  # noqa: BLE001 - a plugin's factory may not support meta tensors; the listing goes on
        return None


def format_entries(registry: Registry, kind: str, pattern: str | None = None, count: bool = False) -> list[str]:
    """Lines listing the ``kind`` entries that match the fnmatch ``pattern``; encoders as a table with a header.

    ``count``: build the encoders that declare no parameter count to count them (imports torch).
    """
    entries = [_marked_unusable(e, registry.conflicted(e)) for e in registry.entries(kind, pattern)]
    if kind != "encoders":  # one column of names, then what each is and which plugin registered it
        width = max((len(e.display_name) for e in entries), default=0)
        # a dataset's own template set: what its runs use without --templates
        own = {e.name: f"  [templates: {e.meta['templates']}]" for e in entries if e.meta.get("templates")}
        return [f"{e.display_name:<{width}}  {e.summary}{own.get(e.name, '')}  ({e.plugin})" for e in entries]
    header = ("NAME", "FAMILY", "PARAMS", "SOURCE", "SUMMARY")
    rows = []
    for e in entries:
        params = declared_params(e)
        if params is None and count:
            params = encoder_params(e)
        rows.append((e.display_name, e.meta.get("family", "-"), f"{params:,}" if params is not None else "-",
                     e.meta.get("source") or e.plugin, e.summary))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    right = {"PARAMS"}  # numbers align right
    lines = []
    for row in [header, *rows]:
        cells = [f"{c:>{w}}" if h in right else f"{c:<{w}}" for c, w, h in zip(row, widths, header)]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return lines


def _marked_unusable(entry: Entry, plugins: list[str]) -> Entry:
    """An entry two plugins registered, as the listing shows it: resolving its name is an error (it names both)."""
    if not plugins:
        return entry
    owners = " and ".join(repr(p) for p in dict.fromkeys(plugins))
    return replace(entry, summary=f"UNUSABLE: registered by plugins {owners}; see bench plugins", meta={},
                   plugin=", ".join(dict.fromkeys(plugins)))


def listing(kind: str, pattern: str | None = None, count: bool = False) -> list[str]:
    """What ``bench list KIND`` prints, from the plugins this process loaded (see :func:`format_entries`)."""
    from ..host.manager import get_registry

    return format_entries(get_registry(), kind, pattern, count)


def plugin_lines(as_json: bool = False) -> list[str]:
    """What ``bench plugins`` prints: each plugin with its origin, load error and registrations, or as JSON."""
    from ..host.manager import get_host

    infos = get_host().plugins()
    if as_json:
        import json

        return [json.dumps([i.as_dict() for i in infos], indent=2)]
    lines = []
    for info in infos:
        origin = "built-in" if info.builtin else f"version {info.version or '?'}"
        lines.append(f"{info.name} ({origin})" + (f"  ERROR: {info.error}" if info.error else ""))
        lines += [f"  {kind}: {', '.join(names)}" for kind, names in info.registered.items() if names]
    return lines
