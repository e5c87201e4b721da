"""pytest-benchmark suite of bench's hot paths: ``tox -e bench`` (timed) or, in CI, once each at tiny size:

    python -m pytest benchmarks --benchmark-disable --hot-size tiny -q

``--hot-size reference`` (the default) uses the spec's model (51.7M parameters) and batch 32.
"""
import os

import pytest

os.environ["BENCH_LOAD_PLUGINS"] = ""  # only the built-in plugins, as in tests/


def pytest_addoption(parser):
    parser.addoption("--hot-size", choices=["tiny", "reference"], default="reference",
                     help="model and data size of the hot-path benchmarks")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the numbers depend on beyond the CPU: torch and its threads. Every benchmark here runs on the
    CPU, so ``device`` is "cpu" on a machine with a GPU too (naming the GPU said the numbers were its)."""
    import torch

    machine_info["torch_version"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda_version"] = torch.version.cuda or ""
    machine_info["device"] = "cpu"
    machine_info["hot_size"] = config.getoption("--hot-size")


@pytest.fixture(scope="session")
def size(pytestconfig):
    return pytestconfig.getoption("--hot-size")


@pytest.fixture(scope="session")
def benchmarking(pytestconfig):
    """False under --benchmark-disable: each function then runs once, and ratios are not asserted."""
    return not pytestconfig.getoption("benchmark_disable")
