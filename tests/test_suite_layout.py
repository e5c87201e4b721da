"""The test suite's own floor plan: a test module imports helpers only from tests/support (never from another test
module or a conftest), and the tests of a package sit in the folder named for it."""
from pathlib import Path

from tests.support import REPO
from tests.support.imports import import_statements

TESTS = REPO / "tests"
HELPERS = "tests.support"


def _name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def foreign_test_imports(name: str, source: str, is_package: bool = False) -> list[str]:
    """What module ``name`` imports from the test suite outside tests/support: every import statement,
    function-level and relative ones included; ``from pkg import x`` counts as importing ``pkg.x`` too."""
    package = name if is_package else name.rpartition(".")[0]
    targets = [f"{module}.{alias}" if names else module
               for module, names in import_statements(source, package) for alias in names or (None,)]
    return sorted(t for t in targets if t.split(".")[0] == "tests" and t != HELPERS
                  and not t.startswith(HELPERS + "."))


def test_test_modules_import_helpers_only_from_tests_support():
    """No test module imports from another test module or a conftest (pytest hands out fixtures); the helpers
    themselves import nothing else from tests/ either."""
    files = sorted(TESTS.rglob("*.py"))
    assert len([p for p in files if p.name.startswith("test_")]) >= 30  # the scan sees the suite
    found = {}
    for path in files:
        bad = foreign_test_imports(_name(path), path.read_text(), path.name == "__init__.py")
        if bad:
            found[str(path.relative_to(REPO))] = bad
    assert found == {}


def test_the_import_rule_sees_relative_absolute_and_function_level_imports():
    source = ("from .test_exactness import tiny_clip\n"
              "from tests.conftest import TINY\n"
              "def f():\n    import tests.engine.test_optim\n    from .. import conftest\n"
              "from tests.support.runs import FLAGS\nfrom tests.support import REPO\nfrom ..support import models\n")
    assert foreign_test_imports("tests.engine.test_x", source) == [
        "tests.conftest", "tests.conftest.TINY", "tests.engine.test_exactness.tiny_clip", "tests.engine.test_optim"]


def test_each_test_folder_is_a_package_named_for_what_it_tests():
    """tests/<name>/ holds the tests of bench/<name>/ (or of the project's <name>/ folder, as scripts/); each is a
    package, so two folders may hold test files of one basename."""
    folders = sorted(p for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    assert {p.name for p in folders} >= {"engine", "app", "results", "support"}
    for folder in folders:
        assert (folder / "__init__.py").is_file(), f"{folder.relative_to(REPO)} needs an __init__.py"
        if folder.name != "support":
            assert (REPO / "bench" / folder.name / "__init__.py").is_file() or (REPO / folder.name).is_dir(), folder
    assert not list((TESTS / "support").glob("test_*.py"))


def misplaced_marks(source: str) -> list[str]:
    """Names of the classes and functions that carry a ``pytest.mark`` decorator but that pytest does not collect
    (not ``Test*`` / ``test_*``): a mark there marks nothing, and the test it was meant for runs unmarked."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        collected = node.name.startswith("Test" if isinstance(node, ast.ClassDef) else "test")
        marked = any("pytest.mark" in ast.unparse(d) and "fixture" not in ast.unparse(d) for d in node.decorator_list)
        if marked and not collected:
            found.append(node.name)
    return found


def test_every_mark_is_on_something_pytest_collects():
    """A slow mark above a helper class (inserted between a mark and its test) left the test in the quick tier."""
    assert misplaced_marks("import pytest\n@pytest.mark.slow\nclass Plugin:\n    pass\n") == ["Plugin"]
    assert misplaced_marks("import pytest\n@pytest.mark.slow\ndef test_x():\n    pass\n") == []
    found = {str(p.relative_to(REPO)): misplaced_marks(p.read_text()) for p in sorted(TESTS.rglob("test_*.py"))}
    assert {path: names for path, names in found.items() if names} == {}
