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
    import subprocess
    import sys

    code = ("import sys; from bench.plugins import build_host; h = build_host(); h.collect(); "
            "print(sorted(m for m in ('torch', 'timm', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


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
