"""The pytest-benchmark suite's machine info says what its numbers were measured on."""
import importlib.util
from types import SimpleNamespace

import torch

from tests.support import REPO


def test_machine_info_names_the_cpu_the_benchmarks_run_on_even_beside_a_gpu(monkeypatch):
    """Every hot-path benchmark builds its model, data and step on the CPU; a GPU in the machine must not be
    recorded as the device the numbers came from."""
    spec = importlib.util.spec_from_file_location("benchmarks_conftest", REPO / "benchmarks" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    info = {}
    conftest.pytest_benchmark_update_machine_info(SimpleNamespace(getoption=lambda name: "tiny"), info)
    assert info["device"] == "cpu" and info["torch_threads"] == torch.get_num_threads()
    source = (REPO / "benchmarks" / "test_hot_paths.py").read_text()
    assert "cuda" not in source.replace("to_device_uint8", "")  # nothing in the suite moves to a GPU
