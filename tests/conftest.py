"""Shared fixtures: no stray installed plugins, outputs under tmp_path, a fresh plugin host per test, one torch
thread on request. Plain helpers (flags, builders, launchers) live in tests/support/."""
import os

import pytest

# Tests never load third-party plugins that happen to be installed (explicit switch, not a sys attribute).
os.environ["BENCH_LOAD_PLUGINS"] = ""
os.environ.pop("BENCH_PLUGINS_DIR", None)
os.environ.pop("BENCH_STRICT_PLUGINS", None)
# One intra-op thread (set before torch is imported): on a shared CPU, torch's one-thread-per-core default
# spins in OpenMP barriers; a conformance check measured 0.24 s with one thread and 17-32 s with two.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own results folder and a plugin host built from scratch on first use."""
    from bench.host.manager import set_host

    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "")
    # datasets and the image-folder cache never touch the user's folders (nor download into them)
    monkeypatch.setenv("BENCH_DATASETS_DIR", str(tmp_path / ".datasets"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / ".bench-cache"))
    monkeypatch.chdir(tmp_path)
    previous = set_host(None)
    yield
    set_host(previous)


@pytest.fixture
def host():
    """A freshly built plugin host with only the built-ins."""
    from bench.host.manager import build_host, set_host

    h = build_host()
    set_host(h)
    return h


@pytest.fixture
def run_cli(capsys):
    """Run ``bench ARGS...`` in-process; returns (exit_code, stdout, stderr)."""
    from bench.cli import main

    def _run(*args):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture(scope="module")
def one_thread():
    """Exactness holds for a fixed thread count; one thread also keeps 2 shared cores usable.

    A module asks for it once for all its tests: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
