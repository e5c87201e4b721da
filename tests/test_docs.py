"""docs/plugins.md documents every hook with its exact signature, and its hook examples work."""
import inspect
import re
import types
from pathlib import Path

import pytest

import bench.host.hookspecs
import bench.testing
from tests.support.plugins import EXAMPLE_DIR

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
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
