"""What ``bench list`` shows: each entry's name and summary, and for encoders family, size and source."""
from __future__ import annotations

import functools

from ..host.registry import Entry, Registry


@functools.lru_cache(maxsize=None)
def _count_on_meta(factory, embed_dim: int, image_size: int) -> int:
    import torch

    # On the meta device parameters have shapes but no storage and init is a no-op, so even ResNet-50
    # costs milliseconds; the price of `bench list encoders` is importing torch and timm, once.
    with torch.device("meta"):
        module = factory(embed_dim, image_size)
    return sum(p.numel() for p in module.parameters())


def encoder_params(entry: Entry, embed_dim: int | None = None, image_size: int | None = None) -> int | None:
    """Parameters of the vision tower (trunk, pool and projection) at the default embed width and 32 px.

    Returns None when the entry is a prefix (``timm:<name>``) or its factory fails on the meta device.
    """
    from ..clip.configs import ModelCfg

    if entry.prefix:
        return None
    defaults = ModelCfg()
    try:
        return _count_on_meta(entry.factory, embed_dim or defaults.embed_dim, image_size or defaults.image_resolution)
    except Exception:  # noqa: BLE001 - a plugin's factory may not support meta tensors; the listing goes on
        return None


def format_entries(registry: Registry, kind: str, pattern: str | None = None) -> list[str]:
    """Lines listing the ``kind`` entries that match the fnmatch ``pattern``; encoders as a table with a header."""
    entries = registry.entries(kind, pattern)
    if kind != "encoders":  # one column of names, then what each is and which plugin registered it
        width = max((len(e.display_name) for e in entries), default=0)
        return [f"{e.display_name:<{width}}  {e.summary}  ({e.plugin})" for e in entries]
    header = ("NAME", "FAMILY", "PARAMS", "SOURCE", "SUMMARY")
    rows = []
    for e in entries:
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
