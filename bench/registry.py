"""Collects what plugins register into one name -> entry table per kind."""
from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import PluginError, UnknownNameError

KINDS = ("encoders", "tokenizers", "templates", "datasets")
_SINGULAR = {"encoders": "encoder", "tokenizers": "tokenizer", "templates": "template set", "datasets": "dataset"}


@dataclass(frozen=True)
class Entry:
    name: str  # the name users type (``--encoder NAME``)
    factory: Callable[..., Any]  # called lazily, only when the thing is used
    summary: str  # one line for ``bench list``
    plugin: str  # name of the plugin that registered it
    kind: str  # one of KINDS
    meta: dict = field(default_factory=dict, compare=False)  # free-form extras (family, source, ...)

    def create(self, *args, **kwargs):
        return self.factory(*args, **kwargs)


class DuplicateNameError(PluginError):
    """Two plugins registered one name."""


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class Registry:
    """Entries of every kind; a name registered twice is an error that names both plugins."""

    def __init__(self):
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self._resolvers: dict[str, list[tuple[str, Callable[[str], Entry | None]]]] = {k: [] for k in KINDS}

    def add(self, kind: str, name: str, factory: Callable, summary: str, plugin: str, **meta) -> Entry:
        if kind not in self._entries:
            raise PluginError(f"plugin {plugin!r} registered unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise PluginError(f"plugin {plugin!r} registered an invalid {_SINGULAR[kind]} name {name!r}")
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r} registered {_SINGULAR[kind]} {name!r} with a factory that is not callable")
        old = self._entries[kind].get(name)
        if old is not None:
            raise DuplicateNameError(
                f"{_SINGULAR[kind]} {name!r} is registered twice: by plugin {old.plugin!r} and by plugin {plugin!r}; "
                f"rename one or disable one plugin with BENCH_LOAD_PLUGINS"
            )
        entry = Entry(name=name, factory=factory, summary=(summary or "").strip().splitlines()[0] if summary else "",
                      plugin=plugin, kind=kind, meta=dict(meta))
        self._entries[kind][name] = entry
        return entry

    def add_resolver(self, kind: str, prefix: str, resolve: Callable[[str], Entry | None]):
        """Let names of the form ``prefix<anything>`` resolve to entries made on demand (``timm:resnet34``)."""
        self._resolvers[kind].append((prefix, resolve))

    def names(self, kind: str, include: str | None = None) -> list[str]:
        names = self._entries[kind].keys()
        if include:
            names = [n for n in names if fnmatch.fnmatch(n, include)]
        return sorted(names, key=_natural_key)

    def entries(self, kind: str) -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind)]

    def get(self, kind: str, name: str) -> Entry:
        entry = self._entries[kind].get(name)
        if entry is not None:
            return entry
        for prefix, resolve in self._resolvers[kind]:
            if name.startswith(prefix):
                entry = resolve(name)
                if entry is not None:
                    return entry
        raise UnknownNameError(unknown_name_message(_SINGULAR[kind], name, self.names(kind)))

    def __contains__(self, item):
        kind, name = item
        return name in self._entries[kind]


def unknown_name_message(what: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}{hint} (available: {', '.join(available) or 'none'})"
