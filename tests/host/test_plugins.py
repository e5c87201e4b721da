"""The plugin host: built-ins through the public hooks, failures isolated, unknown names explained."""
import types

import pytest

from bench import hookimpl
from bench.errors import PluginError, UnknownNameError
from bench.host.manager import build_host, get_entry, set_host


def test_builtins_register_every_kind_through_the_hooks(host):
    registry = host.collect()
    assert {"modified_resnet", "modified_resnet_cifar"} <= set(registry.names("encoders"))
    assert registry.names("tokenizers") == ["clip_bpe"]
    assert {"seed", "openai"} <= set(registry.names("templates"))
    assert {"cifar10", "synthetic"} <= set(registry.names("datasets"))
    entry = registry.get("encoders", "modified_resnet")
    assert entry.plugin == "bench_plugins.modified_resnet" and entry.summary


def test_listing_plugins_imports_no_heavy_module():
    from tests.support.imports import heavy_modules_after

    code = "from bench.plugins import build_host; h = build_host(); h.collect()"
    assert heavy_modules_after(code, ("torch", "timm", "pandas", "matplotlib")) == ([], "")


def test_unknown_name_suggests_the_closest_and_lists_the_rest(host):
    with pytest.raises(UnknownNameError) as info:
        get_entry("encoders", "modfied_resnet")
    assert str(info.value).startswith("unknown encoder 'modfied_resnet'; did you mean 'modified_resnet'? (available: ")


def test_unknown_encoder_on_the_cli_is_one_line_and_exit_2(run_cli):
    code, out, err = run_cli("run", "--encoder", "modfied_resnet", "--dataset", "synthetic")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "unknown encoder 'modfied_resnet'; did you mean 'modified_resnet'?" in err


def _plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


def test_plugin_that_fails_to_import_warns_once_and_the_others_still_work(capsys):
    host = build_host(modules=["bench_no_such_plugin_module"])
    err = capsys.readouterr().err
    assert "plugin 'bench_no_such_plugin_module' failed to import: ModuleNotFoundError" in err
    assert err.strip().count("\n") == 0
    assert "modified_resnet" in host.collect().names("encoders")


def test_hookimpl_with_arguments_not_in_the_spec_is_reported_by_name(capsys):
    host = build_host()
    bad = _plugin("bad_args", register_encoders=lambda register, extra: None)
    assert host.add(bad, "bad_args") is False
    assert "plugin 'bad_args' is invalid" in capsys.readouterr().err
    assert "modified_resnet" in host.collect().names("encoders")


def test_two_plugins_registering_one_name_is_an_error_naming_both(capsys):
    host = build_host()
    for name in ("alpha", "beta"):
        host.add(_plugin(name, register_templates=lambda register: register("dup", lambda: ["a {}"], "x")), name)
    host.collect()
    err = capsys.readouterr().err
    assert "template set 'dup' is registered twice: by plugin 'alpha' and by plugin 'beta'" in err
    set_host(host)
    with pytest.raises(PluginError, match="'alpha' and by plugin 'beta'"):
        get_entry("templates", "dup")
    assert get_entry("templates", "seed").plugin == "bench_plugins.templates"


def test_strict_mode_turns_load_failures_into_errors(monkeypatch):
    monkeypatch.setenv("BENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="BENCH_STRICT_PLUGINS=1"):
        build_host(modules=["bench_no_such_plugin_module"])


def test_bench_plugins_and_list_commands(run_cli):
    code, out, _ = run_cli("plugins")
    assert code == 0 and "bench_plugins.modified_resnet (built-in)" in out and "encoders: modified_resnet" in out
    code, out, _ = run_cli("list", "templates")
    assert code == 0 and out.splitlines()[0].startswith("openai") and "seed" in out



class _DataSetUpEncoder:
    """A third-party encoder whose set-up needs the training images: it keeps their mean pixel in a buffer."""

    calls = []

    @hookimpl
    def register_encoders(self, register):
        def factory(embed_dim, image_size):
            import torch
            from torch import nn

            class MeanAware(nn.Sequential):
                def __init__(self):
                    super().__init__(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, embed_dim))
                    self.register_buffer("pixel_mean", torch.zeros(3))

                def setup_from_data(self, images):
                    _DataSetUpEncoder.calls.append(tuple(images.shape))
                    self.pixel_mean.copy_(images.float().mean(dim=(0, 2, 3)))

            return MeanAware()

        register("third/mean_aware", factory, "an encoder set up from the training images")


def test_setup_from_data_runs_once_before_a_fresh_run_and_its_result_is_checkpointed(tmp_path, run_cli, monkeypatch):
    """bench calls an encoder's optional setup_from_data once, with the whole training split as uint8 NCHW, before
    training; what it sets is in the checkpoint; a stopped run resumed does not call it again."""
    import numpy as np
    import torch

    import bench.testing

    from tests.support.runs import TINY_RUN, stop_at_ask

    _DataSetUpEncoder.calls.clear()
    out = tmp_path / "results"
    flags = [f for f in TINY_RUN if f != "--no-checkpoints"] + ["--limit-train", "32", "--batch-size", "8",
                                                               "--epochs", "2", "--device", "cpu"]
    with bench.testing.plugin_registered(_DataSetUpEncoder(), "mean_aware"):
        stop_at_ask(monkeypatch, 3)  # stop after the third step
        code, _, err = run_cli("run", "--encoder", "third/mean_aware", *flags, "--out", out)
        assert code == 130, err
        monkeypatch.undo()
        assert _DataSetUpEncoder.calls == [(32, 3, 32, 32)]
        (run_dir,) = (out / "runs").iterdir()
        code, _, err = run_cli("run", "--resume", run_dir, "--no-progress")
        assert code == 0, err
        assert len(_DataSetUpEncoder.calls) == 1
    saved = torch.load(run_dir / "last.pt", weights_only=True)["model"]["visual.pixel_mean"]
    train = get_entry("datasets", "synthetic").create("train", None, 0).subset(32)  # what the run trained on
    expected = train.images.reshape(-1, 3).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(saved.numpy(), expected, rtol=1e-5)
