"""Collects what plugins register into one name -> entry table per kind."""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BenchError, ContractError, PluginError, UnknownNameError, one_line_cause

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
    prefix: bool = False  # True: ``name`` is a prefix and ``factory(rest)`` returns the factory of ``name + rest``

    @property
    def display_name(self) -> str:
        return f"{self.name}<{self.meta.get('placeholder', 'name')}>" if self.prefix else self.name

    def create(self, *args, **kwargs):
        """Call the factory; an exception it raises becomes one :class:`PluginFactoryError` line naming this entry,
        its plugin, the options it was given and the cause (a :class:`BenchError` already names its fix)."""
        try:
            made = self.factory(*args, **kwargs)
        except ContractError as exc:  # what it made breaks the contract (an ArrayDataset's checks): say whose it is
            raise PluginFactoryError(f"{_SINGULAR[self.kind]} {self.name!r} (plugin {self.plugin!r}): {exc}; fix the "
                                     f"plugin (its contract is in docs/plugins.md, bench.testing checks it)") from None
        except BenchError:
            raise
        except Exception as exc:
            options = ", ".join([_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()])
            raise PluginFactoryError(
                f"{_SINGULAR[self.kind]} {self.name!r} (plugin {self.plugin!r}) could not be built from "
                f"({options}): {one_line_cause(exc)}{_FIXES.get(self.kind, '')}") from exc
        if self.prefix:  # a resolver: the factory of the name it was given
            expected = None if callable(made) else "a factory"
        else:
            expected = _wrong_product(self.kind, made)
        if expected:  # a forgotten `return` or a wrong type: said here, not as a traceback deep in a run
            what = "resolver" if self.prefix else "factory"
            raise PluginFactoryError(f"{_SINGULAR[self.kind]} {self.name!r} (plugin {self.plugin!r}): its {what} "
                                     f"returned {type(made).__name__}, not {expected}; fix the plugin (its contract "
                                     f"is in docs/plugins.md, bench.testing checks it)")
        return made


def _wrong_product(kind: str, made) -> str | None:
    """What a ``kind`` factory must return, where ``made`` is not that; None where it is."""
    if kind == "encoders":
        from torch import nn

        return None if isinstance(made, nn.Module) else "an nn.Module"
    if kind == "tokenizers":
        return None if callable(made) else "a callable tokenizer"
    if kind == "templates":
        return None if isinstance(made, (list, tuple)) else "a list of template strings"
    if kind == "datasets":  # looked up statically: a lazy dataset's images are not made for the check
        return None if all(inspect.getattr_static(made, a, None) is not None
                           for a in ("images", "labels", "classes", "subset")) else "a bench.data.ArrayDataset"
    return None


# what to change when a factory rejects what it was given
_FIXES = {"encoders": "; check the --encoder-opt values and --embed-dim/--image-size (bench list encoders)",
          "tokenizers": "; check --tokenizer and the text context length",
          "datasets": "; check --dataset and --data-dir", "templates": "; check --templates"}


def _short(value) -> str:
    """An option as the message shows it: long values (prompt lists) cut to a few dozen characters."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


class PluginFactoryError(PluginError):
    """A plugin's factory failed on the options the user gave it."""


class DuplicateNameError(PluginError):
    """Two plugins registered one name; ``plugins`` names them, the first registration's first."""

    def __init__(self, message: str, plugins: tuple[str, str]):
        super().__init__(message)
        self.plugins = plugins


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class Registry:
    """Entries of every kind; a name registered twice is an error that names both plugins."""

    def __init__(self):
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self._prefixes: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}  # ``timm:`` -> its resolver entry
        # (kind, name, is_prefix) -> every plugin that registered it: such a name resolves to nothing
        self.conflicts: dict[tuple[str, str, bool], list[str]] = {}

    def add(self, kind: str, name: str, factory: Callable, summary: str, plugin: str, prefix: bool = False,
            **meta) -> Entry:
        """Add an entry; with ``prefix=True`` every name ``name + rest`` resolves on demand (``timm:resnet34``)."""
        if kind not in self._entries:
            raise PluginError(f"plugin {plugin!r} registered unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
        if not isinstance(name, str) or not name or any(c.isspace() or c in ",@" for c in name):
            raise PluginError(f"plugin {plugin!r} registered an invalid {_SINGULAR[kind]} name {name!r}: a name is "
                              f"not empty and holds no whitespace, ',' or '@' (lists and DATASET@TEMPLATES split there)")
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r} registered {_SINGULAR[kind]} {name!r} with a factory that is not callable")
        table = self._prefixes[kind] if prefix else self._entries[kind]
        old = table.get(name)
        if old is not None:
            what = f"{_SINGULAR[kind]} prefix" if prefix else _SINGULAR[kind]
            self.conflicts.setdefault((kind, name, prefix), [old.plugin]).append(plugin)
            raise DuplicateNameError(f"{what} {name!r} is registered twice: by plugin {old.plugin!r} and by plugin "
                                     f"{plugin!r}", (old.plugin, plugin))
        entry = Entry(name=name, factory=factory, summary=(summary or "").strip().splitlines()[0] if summary else "",
                      plugin=plugin, kind=kind, meta=dict(meta), prefix=prefix)
        table[name] = entry
        return entry

    def names(self, kind: str, include: str | None = None) -> list[str]:
        names = self._entries[kind].keys()
        if include:
            names = [n for n in names if fnmatch.fnmatch(n, include)]
        return sorted(names, key=_natural_key)

    def entries(self, kind: str, include: str | None = None) -> list[Entry]:
        """Named entries (naturally sorted), then prefix entries; ``include`` filters both by fnmatch."""
        prefixes = sorted(self._prefixes[kind].values(), key=lambda e: _natural_key(e.name))
        return ([self._entries[kind][n] for n in self.names(kind, include)]
                + [e for e in prefixes if not include or fnmatch.fnmatch(e.name, include)])

    def get(self, kind: str, name: str) -> Entry:
        """The entry called ``name``, or one made by the longest registered prefix of ``name``."""
        entry = self._entries[kind].get(name)
        if entry is not None:
            return entry
        matches = [e for p, e in self._prefixes[kind].items() if name.startswith(p) and len(name) > len(p)]
        if matches:
            base = max(matches, key=lambda e: len(e.name))
            # The resolver raises a BenchError for names it does not know (with its own suggestions); anything else
            # it raises is the plugin's failure, one line as a factory's
            rest = name[len(base.name):]
            factory = base.create(rest)
            return Entry(name=name, factory=factory, summary=base.summary, plugin=base.plugin, kind=kind,
                         meta={**base.meta, "prefix": base.name})
        available = self.names(kind) + [e.display_name for e in self._prefixes[kind].values()]
        raise UnknownNameError(unknown_name_message(_SINGULAR[kind], name, available))

    def conflicted(self, entry: Entry) -> list[str]:
        """The plugins that all registered ``entry``'s name (empty when only one did)."""
        return self.conflicts.get((entry.kind, entry.name, entry.prefix), [])

    def __contains__(self, item):
        kind, name = item
        return name in self._entries[kind] or name in self._prefixes[kind]


def unknown_name_message(what: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}{hint} (available: {', '.join(available) or 'none'})"
