"""The example plugin meets bench's contract, and once installed trains through its entry point."""
import importlib.metadata

import pytest

import bench.testing
import bench_example

TINY_RUN = ["--dataset", "synthetic", "--epochs", "1", "--limit-train", "16", "--limit-test", "16",
            "--batch-size", "8", "--embed-dim", "16", "--text-width", "32", "--text-layers", "1",
            "--text-heads", "2", "--no-progress", "--no-checkpoints"]


@pytest.fixture(autouse=True)
def _only_this_plugin(monkeypatch, tmp_path):
    # Load no other installed plugin, and write results under tmp_path.
    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "example")
    monkeypatch.delenv("BENCH_PLUGINS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("kind,name", [("encoders", "example/convnet"), ("tokenizers", "example/bytes"),
                                       ("templates", "example/short")])
def test_registrations_meet_the_contract(kind, name):
    """Shapes, dtypes, determinism and state-dict round trip, as bench.testing checks them."""
    with bench.testing.plugin_registered(bench_example):
        bench.testing.check_entry(kind, name).assert_ok()


def test_installed_entry_point_trains_through_bench_run(capsys):
    """After `pip install -e`, bench finds the plugin by its entry point and trains its encoder."""
    from bench.cli import main
    from bench.plugins import set_host

    eps = [ep for ep in importlib.metadata.entry_points(group="bench") if ep.value == "bench_example"]
    assert eps, "bench-example is not installed: pip install -e plugins/examples/bench-example first"
    set_host(None)
    code = 0
    try:
        main(["run", "--encoder", "example/convnet", "--tokenizer", "example/bytes", "--templates", "example/short",
              *TINY_RUN, "--out", "out"])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 0 and "zero-shot top-1" in out, err
