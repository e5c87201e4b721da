"""Every third-party import of the package and its tests is a declared dependency, and every module imports.

The real guard is CI's fresh virtual environment (.ci/run); these make a missing declaration fail on any
machine, even one where the package happens to be installed (scipy was used by bench.data.corruptions for a
while without being declared, and CI passed because the CI machine had it).
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
# the project's own top-level names: its packages, the scripts folder's helpers, and plugins tests write
LOCAL = {"bench", "bench_plugins", "tests", "_results", "gpu_check", "my_plugin", "bench_example"}


@functools.cache
def _distributions() -> dict[str, list[str]]:
    """importlib.metadata.packages_distributions() once: it reads every installed distribution's metadata
    (~0.35 s), and three tests ask it."""
    return importlib.metadata.packages_distributions()


def _imports(folder: Path) -> dict[str, str]:
    """Top-level names imported anywhere under ``folder`` -> one file that imports it."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        if "examples" in path.relative_to(REPO).parts:  # the example plugin is its own package with its own deps
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


# Optional extras: imported only by the module that turns their absence into a one-line "pip install" error.
OPTIONAL_EXTRAS = {"ray": "bench/app/sweep/launchers.py", "slurm": "bench/app/sweep/launchers.py",
                   "tensorboard": "bench/results/loggers.py", "wandb": "bench/results/loggers.py"}


def _declared(extra: str | None) -> set[str]:
    """Distributions bench's installed metadata requires, without extras or with ``extra``; a requirement for
    some Python versions only (tomli before 3.11) counts as declared."""
    out = set()
    for spec in importlib.metadata.requires("bench") or []:
        req = Requirement(spec)
        marker = str(req.marker) if req.marker is not None else ""
        if not marker or ("extra" not in marker) or (extra is not None and req.marker.evaluate({"extra": extra})):
            out.add(canonicalize_name(req.name))
    return out


def _undeclared_optional(imports: dict[str, str]) -> list[str]:
    """Imports declared only by an optional extra, from a module other than the one that guards them."""
    plain = _declared(None)
    out = []
    for extra, guard in OPTIONAL_EXTRAS.items():
        for name in _declared(extra) - plain:
            module = name.replace("-", "_")
            if module in imports and imports[module] != guard:
                out.append(f"{module} (extra {extra}) imported by {imports[module]}, not only {guard}")
    return out


def _third_party(imports: dict[str, str]) -> dict[str, str]:
    return {name: where for name, where in imports.items() if name not in sys.stdlib_module_names and name not in LOCAL}


def _undeclared(imports: dict[str, str], declared: set[str]) -> list[str]:
    distributions = _distributions()
    missing = []
    for name, where in sorted(_third_party(imports).items()):
        # not installed here (tomli on Python 3.11+): the import's name is the distribution's
        owners = {canonicalize_name(d) for d in distributions.get(name, [])} or {canonicalize_name(name)}
        if not owners & declared:
            missing.append(f"{name} (imported by {where}; installed from {sorted(owners) or 'nothing'})")
    return missing


def test_the_package_imports_only_what_it_declares():
    imports = {**_imports(REPO / "bench"), **_imports(REPO / "plugins")}
    assert {"torch", "scipy", "pandas", "pluggy"} <= set(_third_party(imports))  # the scan sees real imports
    optional = set().union(*(_declared(extra) for extra in OPTIONAL_EXTRAS))
    assert _undeclared(imports, _declared(None) | optional) == []
    assert _undeclared_optional(imports) == []


def _import_fallbacks(source: str, filename: str = "<source>") -> list[str]:
    """Top-level names imported inside a ``try`` whose handler catches ImportError or ModuleNotFoundError."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Try):
            continue
        caught = {n.id for h in node.handlers if h.type is not None for n in ast.walk(h.type) if isinstance(n, ast.Name)}
        if not caught & {"ImportError", "ModuleNotFoundError"}:
            continue
        for inner in (n for stmt in node.body for n in ast.walk(stmt)):
            if isinstance(inner, ast.Import):
                found += [alias.name.split(".")[0] for alias in inner.names]
            elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                found.append(inner.module.split(".")[0])
    return found


def test_a_required_dependency_has_no_import_error_fallback():
    """A dependency every install has (not an optional extra's) is imported plainly: a fallback for its absence is
    dead code that hides a broken install."""
    required = _declared(None)
    distributions = _distributions()
    fallbacks = []
    for folder in ("bench", "plugins"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for name in _import_fallbacks(path.read_text(), str(path)):
                owners = {canonicalize_name(d) for d in distributions.get(name, [])} or {canonicalize_name(name)}
                if owners & required:
                    fallbacks.append(f"{name} in {path.relative_to(REPO)}")
    assert fallbacks == []


def test_the_fallback_scan_sees_nested_and_from_imports():
    source = ("def f():\n    try:\n        from scipy.io import x\n    except (ValueError, ImportError):\n        pass\n"
              "try:\n    import ray\nexcept ModuleNotFoundError:\n    ray = None\n"
              "try:\n    import numpy\nexcept ValueError:\n    pass\n")
    assert sorted(_import_fallbacks(source)) == ["ray", "scipy"]


def test_tests_benchmarks_and_scripts_import_only_what_the_test_extra_declares():
    imports = {**_imports(REPO / "tests"), **_imports(REPO / "benchmarks"), **_imports(REPO / "scripts")}
    optional = set().union(*(_declared(extra) for extra in OPTIONAL_EXTRAS))
    assert _undeclared(imports, _declared(None) | _declared("test") | optional) == []


def _modules(package: str, folder: Path) -> list[str]:
    """Every module and package under ``folder`` (subpackages included) by its import name under ``package``;
    not ``__main__`` (it runs the CLI) nor plugins/examples (its own distribution, with its own tests in CI)."""
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__main__" or parts[0] == "examples":
            continue
        names.append(".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)]))
    return names


def test_every_module_imports_in_a_fresh_interpreter():
    """Each module of bench and of bench_plugins in a process of its own with no module of the project imported
    before it (see tests/support/import_each.py), so one that imports only after another has run fails too. One
    checker for both packages: its own start (torch, pandas, scipy) is 3 s of the quick tier."""
    plugins = _modules("bench_plugins", REPO / "plugins")
    modules = _modules("bench", REPO / "bench") + plugins
    assert len(plugins) >= 3
    result = subprocess.run([sys.executable, "-m", "tests.support.import_each", *modules], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.stdout.strip() == "", result.stdout
    assert result.returncode == 0, result.stderr
    assert len(modules) >= 6


@pytest.mark.slow  # a check of the checker: a fresh interpreter importing torch
def test_the_import_check_fails_on_a_planted_module_that_raises_at_import(tmp_path):
    """The checker itself: a module deep in a subpackage that raises at import, or that imports only after a
    sibling has run, is named and fails the check; its healthy siblings pass."""
    package = tmp_path / "planted" / "inner"
    package.mkdir(parents=True)
    (tmp_path / "planted" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "fine.py").write_text("import torch\nSIDE = 1\n")
    (package / "broken.py").write_text("raise RuntimeError('planted')\n")
    (package / "leans.py").write_text("import sys\nassert 'planted.inner.fine' in sys.modules, 'needs fine first'\n")
    modules = _modules("planted", tmp_path / "planted")
    assert set(modules) >= {"planted.inner.fine", "planted.inner.broken", "planted.inner.leans"}
    result = subprocess.run([sys.executable, "-m", "tests.support.import_each", *modules], capture_output=True,
                            text=True, timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "planted.inner.broken: RuntimeError: planted", "planted.inner.leans: AssertionError: needs fine first"]


def test_the_import_check_sees_every_module_of_every_subpackage():
    modules = _modules("bench", REPO / "bench")
    assert {"bench", "bench.app", "bench.app.sweep", "bench.app.sweep.plan", "bench.engine.build",
            "bench.results.runs_csv"} <= set(modules)
    assert "bench.__main__" not in modules
    assert len(modules) == len(list((REPO / "bench").rglob("*.py"))) - 1
    plugins = _modules("bench_plugins", REPO / "plugins")
    assert "bench_plugins.timm_encoders" in plugins and not [m for m in plugins if "example" in m]
