"""Builds the plugin manager: hookspecs, built-ins from ``plugins/``, entry points, plugin folders, modules.

Order follows pluggy's eggsample host: specs first, then built-ins through the very ``pm.register`` a
third-party plugin goes through, then entry points of group ``bench``, each loaded in its own try/except
so one broken plugin cannot stop the rest. Collected entries go into a :class:`~bench.host.registry.Registry`.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from ..errors import PluginError
from ..host import hookspecs
from .registry import KINDS, DuplicateNameError, Registry

BUILTIN_PLUGINS = (
    "bench_plugins.modified_resnet",
    "bench_plugins.timm_encoders",
    "bench_plugins.clip_bpe",
    "bench_plugins.templates",
    "bench_plugins.datasets",
    "bench_plugins.airbench",
)
ENTRY_POINT_GROUP = "bench"
# (plugin object, name) pairs every new host registers last; bench.testing.plugin_registered manages it, so
# that in-process CLI calls in a plugin's tests see the plugin.
EXTRA_PLUGINS: list[tuple[object, str]] = []


@dataclass
class PluginInfo:
    name: str
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    builtin: bool = False
    source: str = ""  # how it came in: built-in, entry point, --plugins-dir, -p, bench.testing
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    failures: list[str] = field(default_factory=list)  # loading or registering failed
    conflicts: list[str] = field(default_factory=list)  # names it shares with another plugin (each collection's own)

    @property
    def error(self) -> str | None:
        """Every problem of the plugin on one line, or None."""
        return " | ".join(self.failures + self.conflicts) or None

    def as_dict(self):
        return {"name": self.name, "version": self.version, "hooks": self.hooks, "error": self.error,
                "builtin": self.builtin, "source": self.source, "registered": self.registered}


class Host:
    """The plugin manager, what each plugin registered, and the warnings loading produced."""

    def __init__(self, strict: bool | None = None):
        self.pm = pluggy.PluginManager("bench")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.infos: dict[str, PluginInfo] = {}
        self.strict = os.environ.get("BENCH_STRICT_PLUGINS", "") not in ("", "0") if strict is None else strict
        self.conflicts: dict[tuple[str, str, bool], str] = {}  # (kind, name, is_prefix) -> message
        self.failed: dict[str, str] = {}  # plugins left out of every registry and command -> why
        self._commands_failed: set[str] = set()  # plugins whose register_commands raised: left out of the rest too
        self._warned: set[str] = set()  # a host collects again when plugins change; each warning is said once
        self._collected = False

    # -- loading -----------------------------------------------------------------------------------------
    def _fail(self, name: str, message: str, **info):
        info_obj = self.infos.setdefault(name, PluginInfo(name=name, **info))
        if message not in info_obj.failures:
            info_obj.failures.append(message)
        self._warn(message)

    def _warn(self, message: str):
        if self.strict:
            raise PluginError(f"{message} (BENCH_STRICT_PLUGINS=1 makes this an error)")
        if message not in self._warned:
            self._warned.add(message)
            print(f"bench: warning: {message}; other plugins still work", file=sys.stderr)

    def add(self, plugin, name: str, version: str | None = None, builtin: bool = False, source: str = "") -> bool:
        """Register a plugin object (module or instance); a bad hookimpl is reported, not raised. ``source``: how
        it came in, for ``bench plugins`` and for the fix a name conflict suggests."""
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            # pluggy keeps the plugin and its hookimpls verified before the bad one; drop them all, so a
            # plugin reported invalid registers nothing.
            self.pm.unregister(name=name)
            self._fail(name, f"plugin {name!r} is invalid: {_one_line(exc)}", version=version, builtin=builtin,
                       source=source)
            return False
        except ValueError:  # the name or the object is already registered
            if self.pm.is_registered(plugin):  # the same plugin named twice (-p of a built-in): loaded already
                return False
            # another plugin of a loaded plugin's name: reported under a key of its own, not on the loaded one
            key = next(f"{name} ({n})" for n in range(2, 1000) if f"{name} ({n})" not in self.infos)
            self._fail(key, f"plugin {name!r} is not loaded: a plugin of that name already is; rename one",
                       version=version, builtin=builtin, source=source)
            return False
        unknown = _unknown_hooks(self.pm, plugin)
        if unknown:
            # pluggy accepts a hookimpl without a spec silently (check_pending would raise for all plugins
            # at once); a misspelled hook would then do nothing, so refuse this plugin alone.
            self.pm.unregister(plugin)
            self._fail(name, f"plugin {name!r} implements {', '.join(unknown)}, which bench has no hook for; "
                             f"hooks are {', '.join(_hook_names())}", version=version, builtin=builtin, source=source)
            return False
        version = version or getattr(plugin, "__version__", None)
        self.infos[name] = PluginInfo(name=name, version=None if version is None else str(version),
                                      builtin=builtin, source="built-in" if builtin else source,
                                      hooks=sorted(h.name for h in self.pm.get_hookcallers(plugin) or []))
        self._collected = False
        return True

    def add_module(self, module_name: str, builtin: bool = False, version: str | None = None) -> bool:
        source = "built-in" if builtin else "-p"
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, not ours
            self._fail(module_name, f"plugin {module_name!r} failed to import: {_one_line(exc)}", builtin=builtin,
                       source=source)
            return False
        return self.add(module, module_name, version=version, builtin=builtin, source=source)

    def load_builtins(self):
        from .. import __version__

        _ensure_builtin_package()
        for name in BUILTIN_PLUGINS:
            self.add_module(name, builtin=True, version=__version__)

    def load_entry_points(self, selected: set[str] | None = None):
        """Load group ``bench`` entry points; ``selected`` limits them by entry-point or distribution name."""
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            if selected is not None and ep.name not in selected and dist_name not in selected:
                continue
            version = dist.version if dist is not None else None
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001
                self._fail(ep.name, f"plugin {ep.name!r} failed to import: {_one_line(exc)}", version=version,
                           source="entry point")
                continue
            self.add(plugin, ep.name, version=version, source="entry point")

    def load_directory(self, directory: str | os.PathLike):
        """Load each ``*.py`` file and each package folder in ``directory`` as a plugin."""
        directory = Path(directory)
        if not directory.is_dir():
            what = "is not a folder" if directory.exists() else "does not exist"
            raise PluginError(f"plugins folder {str(directory)!r} {what}; pass an existing folder to --plugins-dir")
        for path in sorted(directory.iterdir()):
            if path.name.startswith(("_", ".")):
                continue
            if path.suffix == ".py":
                location, search = path, None
            elif (path / "__init__.py").is_file():
                location, search = path / "__init__.py", [str(path)]
            else:
                continue
            name = f"bench_dir_plugin_{path.stem}"
            try:
                spec = importlib.util.spec_from_file_location(name, location, submodule_search_locations=search)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            except Exception as exc:  # noqa: BLE001
                sys.modules.pop(name, None)
                self._fail(path.stem, f"plugin {path.stem!r} ({path}) failed to import: {_one_line(exc)}",
                           source="--plugins-dir")
                continue
            self.add(module, path.stem, source="--plugins-dir")

    # -- collecting ----------------------------------------------------------------------------------------
    def collect(self):
        """Call every ``register_<kind>`` hook once per plugin, recording which plugin registered what. A plugin
        whose hook raises registers nothing, not even from its other hooks: the hooks are called again without
        it (until no other fails), so what is left never depends on a half-registered plugin."""
        if self._collected:
            return self.registry
        failed: dict[str, str] = {}
        while True:
            failures = self._collect_once(set(failed) | self._commands_failed)
            if not failures:
                break
            failed.update(failures)
        self.failed = failed
        for name, message in failed.items():
            self._fail(name, message)
        for info in self.infos.values():
            info.conflicts = []
        for key, plugins in self.registry.conflicts.items():  # in the order they arose
            for name in dict.fromkeys(plugins):
                self.infos[name].conflicts.append(self.conflicts[key])
            self._warn(self.conflicts[key])
        self._collected = True
        return self.registry

    def _collect_once(self, skipped: set[str]) -> dict[str, str]:
        """One pass of every hook but those of ``skipped`` plugins; returns the plugins that failed in it."""
        self.registry = Registry()
        self.conflicts = {}
        failures: dict[str, str] = {}
        for info in self.infos.values():
            info.registered = {k: [] for k in KINDS}
        for kind in KINDS:
            caller = getattr(self.pm.hook, f"register_{kind}")
            for impl in caller.get_hookimpls():  # registration order (pluggy calls them in reverse)
                name = impl.plugin_name
                if name in skipped or name in failures:
                    continue

                def register(entry_name, factory, summary="", _kind=kind, _plugin=name, prefix=False, **meta):
                    try:
                        entry = self.registry.add(_kind, entry_name, factory, summary, _plugin, prefix=prefix, **meta)
                    except DuplicateNameError as exc:
                        # Neither registration wins: using the name reports both plugins.
                        message = f"{exc}; {self._rename_fix(exc.plugins)}"
                        self.conflicts[(_kind, entry_name, bool(prefix))] = message
                        if self.strict:
                            raise PluginError(f"{message} (BENCH_STRICT_PLUGINS=1 makes this an error)") from None
                        return
                    self.infos[_plugin].registered[_kind].append(entry.display_name)

                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except PluginError as exc:
                    if self.strict:
                        raise
                    failures[name] = str(exc)
                except Exception as exc:  # noqa: BLE001
                    failures[name] = f"plugin {name!r} failed in register_{kind}: {_one_line(exc)}"
        return failures

    def _rename_fix(self, plugins) -> str:
        """What to do about a name two plugins registered: only a plugin that is not built in can be renamed, and
        only an installed one can be left out (BENCH_LOAD_PLUGINS); a folder's or -p's loads whenever it is named."""
        infos = [self.infos.get(p) or PluginInfo(name=p) for p in plugins]
        renamable = [i.name for i in infos if not i.builtin]
        if len(renamable) < len(infos):
            fix = f"rename it in plugin {renamable[-1]!r} (a built-in's names stay)" if renamable else "rename one"
        else:
            fix = "rename it in one of them"
        if any(i.source == "entry point" for i in infos if not i.builtin):
            fix += ", or leave an installed one out with BENCH_LOAD_PLUGINS"
        return fix

    def add_commands(self, group):
        """Each plugin's ``register_commands`` on ``group``, on its own: one that raises is reported and the others
        still add theirs; a command whose name is taken (a built-in's, or another plugin's) is refused, the
        command there kept. As with the other hooks, a plugin that fails in one registers nothing: one whose
        other hooks failed adds no command, one whose ``register_commands`` fails is taken out of the registries."""
        import click

        owners = {name: "bench" for name in group.commands}
        self.collect()
        for impl in self.pm.hook.register_commands.get_hookimpls():
            name, before = impl.plugin_name, dict(group.commands)
            if name in self.failed:
                continue
            try:
                impl.function(**{arg: group for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001
                group.commands.clear()
                group.commands.update(before)  # what it added before failing goes too
                self._commands_failed.add(name)
                self._collected = False  # collected again, without it
                self._fail(name, f"plugin {name!r} failed in register_commands: {_one_line(exc)}")
                continue
            for command, obj in list(group.commands.items()):
                if command in before and obj is not before[command]:
                    group.commands[command] = before[command]
                    owner = "bench has" if owners[command] == "bench" else f"plugin {owners[command]!r} adds"
                    self._fail(name, f"plugin {name!r} adds command {command!r}, which {owner}; rename it")
                elif command not in before and isinstance(obj, click.Command):
                    owners[command] = name

    def plugins(self) -> list[PluginInfo]:
        self.collect()
        return sorted(self.infos.values(), key=lambda i: (not i.builtin, i.name))


def _hook_names() -> list[str]:
    return sorted(n for n in vars(hookspecs) if n.startswith("register_"))


def _unknown_hooks(pm: pluggy.PluginManager, plugin) -> list[str]:
    """Hooks ``plugin`` implements that have no spec and are not marked ``optionalhook``."""
    unknown = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.spec is None and any(not impl.optionalhook for impl in caller.get_hookimpls()
                                       if impl.plugin is plugin):
            unknown.append(caller.name)
    return sorted(unknown)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())


def _ensure_builtin_package():
    """Import ``bench_plugins`` from the ``plugins/`` folder beside this ``bench`` package when there is one.

    In a source checkout (or a git worktree, or a copy on a GPU machine) the built-ins must come from the
    same tree as ``bench`` itself, whatever an editable install elsewhere maps ``bench_plugins`` to.
    """
    folder = Path(__file__).resolve().parent.parent / "plugins"
    init = folder / "__init__.py"
    loaded = sys.modules.get("bench_plugins")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == init.resolve():
        return
    if init.is_file():
        for name in [m for m in sys.modules if m == "bench_plugins" or m.startswith("bench_plugins.")]:
            del sys.modules[name]
        spec = importlib.util.spec_from_file_location("bench_plugins", init, submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_plugins"] = module
        spec.loader.exec_module(module)


def _selected_from_env() -> set[str] | None:
    value = os.environ.get("BENCH_LOAD_PLUGINS")
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


_HOST: Host | None = None


def build_host(plugins_dirs=(), modules=(), entry_points: bool = True, strict: bool | None = None) -> Host:
    """Build a fresh host: built-ins, entry points (filtered by BENCH_LOAD_PLUGINS), folders, modules."""
    host = Host(strict=strict)
    host.load_builtins()
    if entry_points:
        host.load_entry_points(_selected_from_env())
    env_dir = os.environ.get("BENCH_PLUGINS_DIR")
    # one folder named twice (BENCH_PLUGINS_DIR and --plugins-dir) loads once, not as a clash with itself
    loaded = set()
    for directory in ([env_dir] if env_dir else []) + list(plugins_dirs):
        if Path(directory).expanduser().resolve() not in loaded:
            loaded.add(Path(directory).expanduser().resolve())
            host.load_directory(directory)
    for module in modules:
        host.add_module(module)
    for plugin, name in EXTRA_PLUGINS:
        if not host.pm.is_registered(plugin):  # already in through its entry point or a folder
            host.add(plugin, name, source="bench.testing")
    host.collect()
    return host


def plugin_options(argv) -> tuple[list[str], list[str]]:
    """The ``--plugins-dir`` and ``-p/--plugin`` values of a ``bench`` command line: read before click parses it,
    so that plugins' commands exist, and handed to sweep workers elsewhere, which load the same plugins."""
    dirs, modules = [], []
    options = {"--plugins-dir": dirs, "--plugin": modules, "-p": modules}
    args = list(argv)
    i = 0
    while i < len(args):  # the root group's options only: they end where the subcommand's name is
        arg = args[i]
        if arg in options and i + 1 < len(args):
            options[arg].append(args[i + 1])
            i += 2
            continue
        flag, eq, value = arg.partition("=")
        if eq and flag in options:
            options[flag].append(value)
        elif arg.startswith("-p") and not arg.startswith("--") and len(arg) > 2:  # -pMODULE, as click reads it
            modules.append(arg[2:])
        elif not arg.startswith("-"):
            break
        i += 1
    return dirs, modules


def host_for(argv) -> Host:
    """Build the process-wide host with the plugins a ``bench`` command line names, and install it."""
    dirs, modules = plugin_options(argv)
    host = build_host(plugins_dirs=dirs, modules=modules)
    set_host(host)
    return host


def get_host() -> Host:
    """The process-wide host, built on first use."""
    global _HOST
    if _HOST is None:
        _HOST = build_host()
    return _HOST


def set_host(host: Host | None) -> Host | None:
    """Replace the process-wide host (``None`` rebuilds on next use); returns the previous one."""
    global _HOST
    previous, _HOST = _HOST, host
    return previous


def get_registry() -> Registry:
    host = get_host()
    return host.collect()


def get_entry(kind: str, name: str):
    host = get_host()
    registry = host.collect()
    for (conflict_kind, conflict_name, is_prefix), message in host.conflicts.items():
        if conflict_kind == kind and (name == conflict_name or is_prefix and name.startswith(conflict_name)):
            raise PluginError(message)
    return registry.get(kind, name)
