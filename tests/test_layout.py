"""The package's floor plan holds: every import in bench/ points down the layers, nothing imports in a circle,
the configuration imports without torch, and a wheel carries every module."""
import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.imports import import_statements

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

# Lowest first. A module may import from its own layer and the layers below it, never above; the README's
# "Layout" section draws the same order. Each entry is a module or a subpackage (with everything in it).
LAYERS = [
    ("base", ["bench.errors", "bench.factory_options", "bench.atomic_files", "bench.claims", "bench.safe_load", "bench.deterministic"]),
    ("host", ["bench.host"]),
    ("distributed", ["bench.distributed"]),
    ("clip", ["bench.clip"]),
    ("data", ["bench.data"]),
    ("evaluation", ["bench.evaluation"]),
    ("results", ["bench.results"]),
    ("engine", ["bench.engine"]),
    ("config", ["bench.config"]),
    ("app", ["bench.app"]),
    ("perf", ["bench.perf"]),
    ("interface", ["bench.cli", "bench.testing", "bench.plugins", "bench.__main__"]),
]
# The package root is the public facade: its names resolve lazily, so any module may import it (for
# ``__version__``); statically it imports only the hook marker.
ROOT_IMPORTS = {"bench.host", "bench.host.hookspecs"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(BENCH.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Every import statement of every module, function-level ones included, resolved to bench's modules.

    ``from pkg import name`` counts as an import of ``pkg`` and, when ``name`` is a module, of ``pkg.name``;
    importing ``a.b.c`` also runs ``a.b``'s ``__init__``, so that edge is added too.
    """
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for target, names in import_statements(path.read_text(), package, str(path)):
            targets.add(target)
            targets.update(f"{target}.{name}" for name in names)
        edges = set()
        for target in targets:
            parts = target.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in mods)
        graph[name] = edges - {name} - {p for p in _parents(name)}
    return graph


def _parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def layer_of(name: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"module {name} is in no layer: add it to LAYERS here and to the README's Layout section")


def find_cycle(graph: dict[str, set[str]]):
    """One import cycle as a list of modules, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_among_benchs_modules_function_level_imports_included():
    graph = {name: {t for t in edges if t != "bench"} for name, edges in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_import_points_down_the_layers():
    wrong = []
    for name, edges in import_graph().items():
        if name == "bench":
            wrong += [f"bench -> {t} (the root imports only the hook marker)" for t in edges - ROOT_IMPORTS]
            continue
        here = layer_of(name)
        for target in sorted(edges - {"bench"}):
            if layer_of(target) > here:
                wrong.append(f"{name} ({LAYERS[here][0]}) -> {target} ({LAYERS[layer_of(target)][0]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_checker_sees_function_level_and_relative_imports():
    """A cycle made only by an import inside a function is still found."""
    graph = {"bench.a": {"bench.b"}, "bench.b": {"bench.a"}}
    assert find_cycle(graph) == ["bench.a", "bench.b", "bench.a"]
    assert "bench.engine.train_step" in import_graph()["bench.engine.cuda_graph"]  # a relative import, resolved
    assert "bench.app.validation" in import_graph()["bench.perf.throughput"]  # imported inside a function only


def test_top_level_shows_the_architecture():
    top = sorted(p.name for p in BENCH.glob("*.py"))
    packages = sorted(p.name for p in BENCH.iterdir() if (p / "__init__.py").is_file())
    assert len(top) <= 12, top
    for package in packages:
        doc = ast.get_docstring(ast.parse((BENCH / package / "__init__.py").read_text()))
        assert doc, f"bench/{package}/__init__.py needs a docstring saying what lives there and what it may import"
        assert "import" in doc.lower(), f"bench/{package}'s docstring does not say what it may import"


def test_the_configuration_and_the_plugin_listing_import_without_torch():
    code = ("import sys\n"
            "from bench.config import make_config\n"
            "cfg = make_config('reference', evals=('retrieval',), robust_severities=(1, 3))\n"
            "import bench.plugins, bench.data, bench.evaluation, bench.host.registry\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('bench'))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # pip builds a wheel
def test_a_wheel_holds_every_module_and_the_builtin_plugins(tmp_path):
    """``pip wheel --no-deps .`` packs every module of bench/ (subpackages found, not listed by hand) and
    plugins/ as ``bench_plugins``, and leaves the example plugin out."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "No matching distribution" in result.stderr:
        pytest.skip("building a wheel needs setuptools from the package index")
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in BENCH.rglob("*.py")}
    expected |= {f"bench_plugins/{p.name}" for p in (ROOT / "plugins").glob("*.py")}
    assert expected - names == set()
    assert not [n for n in names if "examples" in n or n.startswith("tests/")]
