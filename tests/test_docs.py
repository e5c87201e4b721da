"""docs/plugins.md documents every hook with its exact signature, and its hook examples work; every bench command
the README and docs show names real subcommands and options, and every project file and ``bench.*`` name they
give exists."""
import inspect
import re
import shlex
import types
from pathlib import Path

import click
import pytest

import bench.host.hookspecs
import bench.testing
from tests.support.plugins import EXAMPLE_DIR

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "plugins.md"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HOOKSPECS = {name: fn for name, fn in vars(bench.host.hookspecs).items() if hasattr(fn, "bench_spec")}
HEADING = re.compile(r"^### `(register_\w+)\((.*)\)`$", re.M)


def _sections() -> dict[str, str]:
    """Hook name -> the text of its section in docs/plugins.md."""
    text = DOC.read_text()
    starts = list(HEADING.finditer(text))
    after_last = text.find("\n## ", starts[-1].end())  # the next top-level section ends the last hook's
    ends = [m.start() for m in starts[1:]] + [after_last if after_last != -1 else len(text)]
    return {m[1]: text[m.start():end] for m, end in zip(starts, ends)}


@pytest.mark.parametrize("name", sorted(HOOKSPECS))
def test_every_hookspec_is_documented_with_its_exact_signature(name):
    """Each hookspec has a `### `name(args)`` heading whose signature matches the code exactly."""
    heading = f"### `{name}{inspect.signature(HOOKSPECS[name])}`"
    assert heading in DOC.read_text().splitlines(), f"docs/plugins.md lacks the heading {heading!r}"


def test_the_docs_document_no_hook_that_does_not_exist():
    """A hook heading in the docs names a real hookspec (renamed or removed hooks leave no stale section)."""
    assert set(_sections()) <= set(HOOKSPECS)


def test_the_built_in_table_names_every_built_in_plugin_and_what_it_registers():
    """docs/plugins.md's table of built-in plugins has a row for each one bench loads, naming each name it registers
    (a prefix by its name before the placeholder)."""
    from bench.host.manager import BUILTIN_PLUGINS

    rows = {m[1]: m[2] for m in re.finditer(r"^\| `(bench_plugins\.\w+)` *\|(.*)\|$", DOC.read_text(), re.M)}
    assert set(rows) == set(BUILTIN_PLUGINS)
    with bench.testing.plugin_registered(types.ModuleType("nothing")) as host:
        for plugin in BUILTIN_PLUGINS:
            for names in host.infos[plugin].registered.values():
                shown = [n for n in names if n.split("<")[0] not in rows[plugin]]
                assert not shown or plugin == "bench_plugins.timm_encoders", (plugin, shown)  # timm/<curated>


@pytest.mark.parametrize("hook", ["register_encoders", "register_tokenizers", "register_templates",
                                  "register_datasets"])
def test_each_hook_example_registers_something_that_meets_the_contract(hook, monkeypatch):
    """The code block under each register_<kind> heading runs, and what it registers passes bench.testing."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    code = re.search(r"```python\n(.*?)```", _sections()[hook], re.S)[1]
    module = types.ModuleType(f"doc_example_{hook}")
    exec(compile(code, f"docs/plugins.md ({hook})", "exec"), module.__dict__)
    kind = hook.removeprefix("register_")
    with bench.testing.plugin_registered(module) as host:
        names = host.infos[module.__name__].registered[kind]
        assert names
        for name in names:
            kwargs = {"data_dir": None} if kind == "datasets" else {}
            bench.testing.check_entry(kind, name, **kwargs).assert_ok()


def _shown_commands(text: str) -> list[str]:
    """The ``bench ...`` commands of a page: lines of its fenced or indented code blocks (continuations joined)
    and inline code."""
    commands = re.findall(r"^(?: {4,}|\t)(?:\$ )?(bench .*)$", text.replace("\\\n", " "), re.M)
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        commands += [line.strip().removeprefix("$ ") for line in block.replace("\\\n", " ").splitlines()]
    commands += re.findall(r"`(bench [^`]+)`", text)
    # what follows a comment, pipe, redirection or second command is not the command's own
    commands = [" ".join(re.split(r"\s(?:#|\||>|&&)", c)[0].split()) for c in commands if c.startswith("bench ")]
    return list(dict.fromkeys(commands))


def _unknown_words(command: str) -> list[str]:
    """The subcommand or long options of ``command`` that bench's CLI does not have."""
    from bench.cli import cli

    words, group = shlex.split(command)[1:], cli
    while words and isinstance(group, click.Group) and words[0] in group.commands:
        group = group.commands[words.pop(0)]
    if isinstance(group, click.Group):
        return [words[0]] if words and not words[0].startswith("-") else []
    options = {name for param in group.params for name in (*param.opts, *param.secondary_opts)}
    return [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in options]


def test_the_command_check_finds_an_unknown_option_and_subcommand():
    text = ("```bash\nbench run --encoder modified_resnet \\\n  --epochs 2 --warmup-epochs 1  # comment --x\n```\n"
            "`bench rnu`, and indented:\n\n    bench compare A B --fail-on-worse x  # what it does\n")
    assert _shown_commands(text) == ["bench compare A B --fail-on-worse x",
                                     "bench run --encoder modified_resnet --epochs 2 --warmup-epochs 1", "bench rnu"]
    assert [_unknown_words(c) for c in _shown_commands(text)] == [["--fail-on-worse"], ["--warmup-epochs"], ["rnu"]]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_a_page_shows_names_real_subcommands_and_options(page):
    """A renamed option leaves no stale ``bench`` command in the README or docs for users to copy."""
    commands = _shown_commands(page.read_text())
    unknown = {c: words for c in commands if (words := _unknown_words(c))}
    assert unknown == {}, f"{page.name}: commands with options or subcommands bench does not have"
    assert commands, "the scan found no command on the page"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_project_file_a_page_names_exists(page):
    """Paths into the project's code, tests, scripts, benchmarks and docs (``tests/engine/test_engine_build.py``)
    point at files that exist, so a moved test or script leaves no stale reference; paths under ``results/`` and
    ``plugins/`` may name what a user's run or plugin writes."""
    named = set(re.findall(r"(?<![\w./-])((?:bench|benchmarks|docs|scripts|tests)/[\w./-]*\w\.(?:py|sh|md|toml))",
                           page.read_text()))
    assert [p for p in sorted(named) if not (REPO / p).is_file()] == []


def test_the_sweep_file_docs_sweeps_md_shows_plans_its_runs(tmp_path, run_cli):
    """The example sweep file as users copy it (on the synthetic set: no CIFAR-10 here) plans its 10 runs, the
    include's list-valued encoder option among them."""
    text = (REPO / "docs" / "sweeps.md").read_text()
    (tmp_path / "sweep.toml").write_text(re.search(r"```toml\n(.*?)```", text, re.S)[1])
    code, out, err = run_cli("sweep", tmp_path / "sweep.toml", "--dry-run", "--dataset", "synthetic")
    assert code == 0 and out.strip().splitlines()[-1].startswith("10 runs: 10 to do"), err
    assert "encoder_opt={'widths': [32, 64, 64]}" in out


def test_the_plugin_pyproject_docs_plugins_md_shows_is_the_example_packages_own():
    """The ``pyproject.toml`` a third party copies from docs/plugins.md declares what the example package's real one
    does, table for table, its ``[build-system]`` included: without one pip falls back to setuptools' legacy build,
    which fails where the environment's setuptools cannot build a wheel."""
    from bench.app.sweep.toml_file import tomllib  # tomli below Python 3.11, as sweep files read

    shown = tomllib.loads(re.search(r"```toml\n(.*?)```", DOC.read_text(), re.S)[1])
    real = tomllib.loads((EXAMPLE_DIR / "pyproject.toml").read_text())
    assert "build-system" in shown
    assert {key: {k: real[key][k] for k in table} for key, table in shown.items()} == shown


def _resolves(dotted: str) -> bool:
    """Whether ``bench.a.b.c`` names an importable module or an attribute of one."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_dotted_bench_name_a_page_gives_exists(page):
    """A module, function or constant a page names in code (``bench.engine.train_step.unwrap_model``, with or
    without a call's arguments) exists, so a renamed helper leaves no stale name."""
    names = set(re.findall(r"`(bench(?:\.\w+)+)(?:\([^`]*\))?`", page.read_text()))
    assert sorted(n for n in names if not _resolves(n)) == []


def test_the_resume_table_names_every_entry_of_last_pt_that_training_changes(tmp_path_factory):
    """docs/robustness.md's table of what ``last.pt`` holds names real entries, and every entry a finished run's
    ``last.pt`` holds besides the record of the run (its id, versions, classes, latest metrics, world size)."""
    import torch

    from tests.support.runs import finished_run, run_dir_of

    text = (REPO / "docs" / "robustness.md").read_text()
    table = text[text.index("| entry | what |"):]
    table = table[:table.index("\n\n")]
    named = {name for first in re.findall(r"^\| ([^|]+)\|", table, re.M)[1:] for name in re.findall(r"`(\w+)`", first)}
    ckpt = torch.load(run_dir_of(finished_run(tmp_path_factory.getbasetemp())) / "last.pt", weights_only=True)
    record = {"run_id", "bench_version", "classes", "metrics", "world_size", "format"}
    assert named <= set(ckpt), sorted(named - set(ckpt))
    assert set(ckpt) - record <= named, sorted(set(ckpt) - record - named)
