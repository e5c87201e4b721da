"""The package's floor plan holds: every import in bench/ points down the layers (a name a facade resolves lazily
counts as an import of its module), a package imports no more than its docstring says, nothing imports in a
circle, the configuration imports without torch, and a wheel carries every module."""
import ast
import importlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.imports import heavy_modules_after, import_statements

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
# Packages whose docstring allows less than every layer below them (what each ``__init__.py`` says it imports):
# the layers it may import besides its own, and single modules beyond those.
NARROWER = {
    "bench.distributed": ({"base"}, set()),
    "bench.data": ({"base", "clip"}, set()),
    "bench.evaluation": ({"base", "clip", "data", "distributed"}, set()),
    "bench.results": ({"base"}, {"bench.evaluation", "bench.evaluation.target"}),  # pandas, no model or engine
    "bench.engine": ({"base", "distributed", "clip", "data", "results"}, set()),
    "bench.perf": ({"base", "host", "distributed", "clip", "data", "evaluation", "results", "engine", "config"},
                   {"bench.app", "bench.app.validation"}),  # of the app layer, its input checks only
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(BENCH.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def lazy_names(mods: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Per package that resolves names lazily (``__getattr__ = lazy_attributes(...)``, as ``bench`` and
    ``bench.data`` do), each name -> the module it is imported from on first use."""
    tables = {}
    for name, path in mods.items():
        if path.name == "__init__.py" and "lazy_attributes(__name__" in path.read_text():
            table = importlib.import_module(name)._LAZY
            tables[name] = {attr: f"{name}.{module}" for attr, module in table.items()}
    return tables


def import_graph() -> dict[str, set[str]]:
    """Every import statement of every module, function-level ones included, resolved to bench's modules.

    ``from pkg import name`` counts as an import of ``pkg`` and, when ``name`` is a module, of ``pkg.name``; when
    ``pkg`` resolves ``name`` lazily (the facade ``from bench import train_epoch``), of the module it comes from.
    Importing ``a.b.c`` also runs ``a.b``'s ``__init__``, so that edge is added too.
    """
    mods = modules()
    lazy = lazy_names(mods)
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = module_edges(path.read_text(), package, mods, lazy, str(path)) - {name} - _parents(name)
    return graph


def module_edges(source: str, package: str, mods, lazy: dict, filename: str = "<source>") -> set[str]:
    """The modules of ``mods`` that ``source``, a module of ``package``, imports (see :func:`import_graph`)."""
    targets = set()
    for target, names in import_statements(source, package, filename):
        targets.add(target)
        targets.update(f"{target}.{name}" for name in names)
        targets.update(lazy[target][name] for name in names if name in lazy.get(target, {}))
    edges = set()
    for target in targets:
        parts = target.split(".")
        edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in mods)
    return edges


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


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """:func:`import_graph` once for the tests below, which only read it: reading and parsing every module of
    bench/ is about 0.5 s of the quick tier each time."""
    return import_graph()


def test_no_import_cycle_among_benchs_modules_function_level_imports_included(graph):
    cycle = find_cycle({name: {t for t in edges if t != "bench"} for name, edges in graph.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_import_points_down_the_layers(graph):
    wrong = []
    for name, edges in graph.items():
        if name == "bench":
            wrong += [f"bench -> {t} (the root imports only the hook marker)" for t in edges - ROOT_IMPORTS]
            continue
        here = layer_of(name)
        for target in sorted(edges - {"bench"}):
            if layer_of(target) > here:
                wrong.append(f"{name} ({LAYERS[here][0]}) -> {target} ({LAYERS[layer_of(target)][0]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_each_package_imports_no_more_than_its_docstring_says(graph):
    """A package imports only what its ``__init__`` docstring names (NARROWER), though the layers allow more:
    results reads tables with pandas (no model, data or plugin host), the engine and evaluation load no plugins,
    data imports only clip and the base modules, distributed only the base modules (the loss imports it), and perf
    only the app layer's input checks."""
    wrong = []
    for name, edges in graph.items():
        package = next((p for p in NARROWER if name == p or name.startswith(p + ".")), None)
        if package is None:
            continue
        layers, extra = NARROWER[package]
        for target in sorted(edges - {"bench"}):
            inside = target == package or target.startswith(package + ".")
            if not inside and target not in extra and LAYERS[layer_of(target)][0] not in layers:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports a package's docstring does not allow:\n" + "\n".join(wrong)


def test_the_checker_resolves_a_facade_name_to_its_module():
    """``from bench import train_epoch`` in a module of bench/data imports bench.engine at its first use: an edge
    up the layers that the facade's lazy table hides from the import statement."""
    mods = modules()
    lazy = lazy_names(mods)
    assert lazy["bench"]["train_epoch"] == "bench.engine.reference_loop"
    assert lazy["bench.data"]["DeviceLoader"] == "bench.data.loader"
    source = "def f():\n    from bench import train_epoch\n    from .. import BenchError\n"
    edges = module_edges(source, "bench.data", mods, lazy)
    assert edges == {"bench", "bench.engine", "bench.engine.reference_loop", "bench.errors"}
    assert layer_of("bench.engine.reference_loop") > layer_of("bench.data.resize")  # the layering test refuses it


def test_the_checker_sees_function_level_and_relative_imports(graph):
    """A cycle made only by an import inside a function is still found."""
    assert find_cycle({"bench.a": {"bench.b"}, "bench.b": {"bench.a"}}) == ["bench.a", "bench.b", "bench.a"]
    assert "bench.engine.train_step" in graph["bench.engine.cuda_graph"]  # a relative import, resolved
    assert "bench.app.validation" in graph["bench.perf.throughput"]  # imported inside a function only


def test_top_level_shows_the_architecture():
    top = sorted(p.name for p in BENCH.glob("*.py"))
    packages = sorted(p.name for p in BENCH.iterdir() if (p / "__init__.py").is_file())
    assert len(top) <= 12, top
    for package in packages:
        doc = ast.get_docstring(ast.parse((BENCH / package / "__init__.py").read_text()))
        assert doc, f"bench/{package}/__init__.py needs a docstring saying what lives there and what it may import"
        assert "import" in doc.lower(), f"bench/{package}'s docstring does not say what it may import"


def test_the_configuration_and_the_plugin_listing_import_without_torch():
    code = ("from bench.config import make_config\n"
            "cfg = make_config('reference', evals=('retrieval',), robust_severities=(1, 3))\n"
            "import bench.plugins, bench.data, bench.evaluation, bench.host.registry\n")
    assert heavy_modules_after(code, ("torch",)) == ([], "")


def test_bench_runs_options_are_checked_before_torch_or_pandas_load():
    """``bench run`` checks its options before the heavy imports, which then load with the GC held off
    (bench.app.own_process): options that name transfer datasets, held-out classes and a target included (a
    lookup module importing bench.data.datasets brought torch in early, its import then ran with the GC on)."""
    code = ("from bench.app.options import config_from_flags\n"
            "cfg = config_from_flags(dataset='imagefolder:./', preset='smoke', transfer=('stl10', 'cifar100@openai'),\n"
            "                        holdout_classes=('2',), target='zeroshot_top1=0.5', evals=('retrieval',))\n"
            "assert cfg.transfer == ('stl10', 'cifar100@openai'), cfg.transfer\n")
    assert heavy_modules_after(code, ("torch", "pandas"), env={"BENCH_LOAD_PLUGINS": ""}) == ([], "")


@pytest.mark.parametrize("seeds", [(), ("--seeds", "0,1")])
def test_bench_run_refuses_a_bad_option_before_torch_or_pandas_load(seeds):
    """The command itself, not only config_from_flags: ``bench run`` (with or without ``--seeds``) refuses an option
    that its last check finds bad with exit 2, every earlier check (transfer datasets, held-out classes, a target)
    passed, and neither torch nor pandas loaded (run_command imported parse_seeds from the sweep's plan, whose
    pandas then loaded before the checks and outside the GC-off window)."""
    argv = ["run", "--preset", "smoke", "--transfer", "stl10,cifar100@openai", "--holdout-classes", "2", "--target",
            "zeroshot_top1=0.5", "--evals", "retrieval", *seeds, "--device", "tpu"]
    code = ("from bench.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit as exc:\n"
            "    print(exc.code)\n")
    assert heavy_modules_after(code, ("torch", "pandas"), env={"BENCH_LOAD_PLUGINS": ""}) == ([], "2")


# A mistyped name of each kind a run looks up, as bench run and bench sweep take it, with its line. The dataset with
# --templates given: without it the dataset's own set is looked up while the options are read, which refused it early
MISTYPED = [
    (["--encoder", "nope"], "unknown encoder 'nope'"),
    (["--dataset", "nope", "--templates", "seed"], "unknown dataset 'nope'"),
    (["--transfer", "stl10,nope"], "unknown dataset 'nope'"),
    (["--transfer", "stl10@nope"], "unknown template set 'nope'"),
]


def refusals_before_heavy_imports(argvs) -> list:
    """``bench.cli.main`` on each of ``argvs`` in one fresh interpreter: per command line, its exit code, what it
    wrote on stderr, and which of torch and pandas had loaded by then."""
    code = ("import contextlib, io, json, sys\n"
            "from bench.cli import main\n"
            f"for argv in {argvs!r}:\n"
            "    err, code = io.StringIO(), None\n"
            "    with contextlib.redirect_stderr(err):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit as exc:\n"
            "            code = exc.code\n"
            "    heavy = [m for m in ('torch', 'pandas') if m in sys.modules]\n"
            "    print(json.dumps([code, err.getvalue().strip(), heavy]))\n")
    _, printed = heavy_modules_after(code, ("torch", "pandas"), env={"BENCH_LOAD_PLUGINS": ""})
    return [json.loads(line) for line in printed.splitlines()]


def test_bench_run_refuses_a_mistyped_name_before_torch_or_pandas_load():
    """``bench run`` (with and without ``--seeds``) refuses a mistyped encoder, dataset or ``--transfer`` entry with
    its one line and exit 2 before torch or pandas load: the names were looked up only once the run was built, after
    the engine's imports, so a typo cost torch's import (2.7 s) before its line."""
    argvs = [["run", "--preset", "smoke", *seeds, *args] for args, _ in MISTYPED for seeds in ([], ["--seeds", "0,1"])]
    expected = [[2, f"bench: error: {line}", []] for _, line in MISTYPED for _ in range(2)]
    got = [[code, err.split(" (available")[0].split(";")[0], heavy] for code, err, heavy in
           refusals_before_heavy_imports(argvs)]
    assert got == expected


def test_bench_sweep_refuses_a_mistyped_name_or_a_bad_option_before_torch_or_pandas_load(tmp_path):
    """``bench sweep``, in its flags form and with a sweep file, refuses a mistyped encoder, dataset or ``--transfer``
    entry, and an option its checks refuse (``--device tpu``), with the line ``bench run`` gives and exit 2 before
    torch or pandas load: the command's module imported the plan (pandas) and the transfer evaluations (torch)."""
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text('[base]\npreset = "smoke"\n[grid]\nencoder = ["modified_resnet", "nope"]\n')
    argvs = [["sweep", "--preset", "smoke", "--seeds", "0,1", "--out", str(tmp_path / "out"),
              *(args if args[0] == "--encoder" else ["--encoder", "modified_resnet", *args])] for args, _ in MISTYPED]
    argvs += [["sweep", "--encoder", "modified_resnet", "--device", "tpu", "--seeds", "0,1", "--preset", "smoke"],
              ["sweep", str(sweep_file), "--out", str(tmp_path / "out")]]
    lines = [line for _, line in MISTYPED] + ["--device must be auto, cpu, cuda or cuda:N, got 'tpu'",
                                              "unknown encoder 'nope'"]
    got = [[code, err.split(" (available")[0].split(";")[0], heavy] for code, err, heavy in
           refusals_before_heavy_imports(argvs)]
    assert got == [[2, f"bench: error: {line}", []] for line in lines]
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_bench_sweep_refuses_a_bad_until_or_a_mistyped_name_with_it_before_torch_or_pandas_load(tmp_path):
    """``bench sweep --until`` refuses a value that is not METRIC:HALFWIDTH, a half-width of an accuracy in points,
    seed bounds an interval cannot use, and (flags form and sweep file) a mistyped name, each with its one line and
    exit 2 before torch or pandas load: --until's parser came from bench.results.compare, which loaded pandas
    first."""
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text('[base]\npreset = "smoke"\n[grid]\nencoder = ["modified_resnet", "nope"]\n')
    out = ["--out", str(tmp_path / "out")]
    cases = [
        (["--until", "zeroshot_top1"], "--until 'zeroshot_top1' is not METRIC:HALFWIDTH"),
        (["--until", "zeroshot_top1:0.7"], "--until zeroshot_top1:0.7: accuracies are fractions, so HALFWIDTH is too "
                                           "(0.005 is half a point)"),
        (["--until", "zeroshot_top1:0.005", "--min-seeds", "1"],
         "--min-seeds must be at least 2 (an interval needs two seeds to measure the spread), got 1"),
        (["--until", "zeroshot_top1:0.005", "--encoder", "nope"], "unknown encoder 'nope'"),
    ]
    argvs = [["sweep", "--preset", "smoke", *args, *out] for args, _ in cases]
    argvs.append(["sweep", str(sweep_file), "--until", "zeroshot_top1:0.005", *out])
    lines = [line for _, line in cases] + ["unknown encoder 'nope'"]
    got = [[code, err.split(" (available")[0].split(";")[0], heavy] for code, err, heavy in
           refusals_before_heavy_imports(argvs)]
    assert got == [[2, f"bench: error: {line}", []] for line in lines]
    assert not (tmp_path / "out").exists()  # refused before anything was written


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
