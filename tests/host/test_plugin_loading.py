"""Loading plugins (issue 3): the three ways in, BENCH_LOAD_PLUGINS / BENCH_STRICT_PLUGINS, local failures."""
import json

import pandas as pd
import pytest

from bench.errors import PluginError
from bench.host.manager import build_host
from tests.support.plugins import EXAMPLE_DIR, GOOD_ENCODER, fake_distribution, write_plugin
from tests.support.runs import TINY_RUN

EXAMPLE_RUN = ["run", "--encoder", "example/convnet", "--tokenizer", "example/bytes", "--templates", "example/short",
               *TINY_RUN, "--out", "out"]


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("bench: warning:")]


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path that stands in for site-packages."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


# -- the three ways in ---------------------------------------------------------------------------------------
def test_example_plugin_trains_from_plugins_dir_as_a_loose_file(run_cli):
    """`--plugins-dir` on the example package's folder loads bench_example.py and its encoder trains."""
    code, out, err = run_cli("--plugins-dir", EXAMPLE_DIR, *EXAMPLE_RUN)
    assert code == 0, err
    row = pd.read_csv("out/runs.csv").iloc[-1]
    assert (row["encoder"], row["tokenizer"], row["templates"]) == ("example/convnet", "example/bytes", "example/short")


def test_example_plugin_trains_through_an_installed_entry_point(run_cli, site, monkeypatch):
    """Installed as a distribution with a `bench` entry point (what pip install -e writes), it trains."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    fake_distribution(site, "bench-example", "0.1.0", "example", "bench_example")
    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "bench-example")  # by distribution name
    code, out, err = run_cli(*EXAMPLE_RUN)
    assert code == 0, err
    code, out, _ = run_cli("plugins", "--json")
    info = next(i for i in json.loads(out) if i["name"] == "example")
    assert info["version"] == "0.1.0" and info["registered"]["encoders"] == ["example/convnet"]


def test_dash_p_imports_a_module_from_the_path(run_cli, site):
    """`-p module` registers a module importable from sys.path."""
    write_plugin(site, "linear_plugin", GOOD_ENCODER.format(name="linear"))
    code, out, err = run_cli("-p", "linear_plugin", "list", "encoders", "--filter", "linear", "--count-params")
    # the plugin declares no count, so --count-params builds it: at the default embed width, 3*32*32*512 weights
    # + 512 biases
    assert code == 0 and out.splitlines()[1].split()[:4] == ["linear", "linear", "1,573,376", "tests"], err


def test_bench_plugins_dir_env_var(run_cli, tmp_path, monkeypatch):
    """BENCH_PLUGINS_DIR works like --plugins-dir."""
    write_plugin(tmp_path / "dir", "linear_plugin", GOOD_ENCODER.format(name="linear"))
    monkeypatch.setenv("BENCH_PLUGINS_DIR", str(tmp_path / "dir"))
    code, out, _ = run_cli("list", "encoders", "--filter", "linear")
    assert code == 0 and "linear" in out


# -- selection and strictness ---------------------------------------------------------------------------------
@pytest.mark.parametrize("selection,expected", [(None, {"alpha", "beta"}), ("", set()), ("alpha", {"alpha"}),
                                                ("beta-dist, alpha", {"alpha", "beta"})])
def test_bench_load_plugins_selects_installed_plugins(site, monkeypatch, selection, expected):
    """BENCH_LOAD_PLUGINS: unset loads all, empty none, else the named entry points or distributions."""
    for name in ("alpha", "beta"):
        write_plugin(site, f"{name}_mod", GOOD_ENCODER.format(name=name))
        fake_distribution(site, f"{name}-dist", "1.0", name, f"{name}_mod")
    if selection is None:
        monkeypatch.delenv("BENCH_LOAD_PLUGINS")
    else:
        monkeypatch.setenv("BENCH_LOAD_PLUGINS", selection)
    host = build_host()
    assert {i.name for i in host.plugins() if not i.builtin} & {"alpha", "beta"} == expected
    assert set(host.registry.names("encoders")) & {"alpha", "beta"} == expected


def test_an_installed_plugin_that_fails_to_import_is_skipped(run_cli, site, monkeypatch):
    """An entry point whose module raises: one warning naming it; the other installed plugin still loads."""
    write_plugin(site, "crashing_mod", "raise ImportError('needs torchaudio')\n")
    fake_distribution(site, "crashing-dist", "0.3", "crashing", "crashing_mod")
    write_plugin(site, "fine_mod", GOOD_ENCODER.format(name="fine"))
    fake_distribution(site, "fine-dist", "1.0", "fine", "fine_mod")
    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "crashing,fine")
    code, out, err = run_cli("list", "encoders", "--filter", "fine")
    warnings = _warnings(err)
    assert code == 0 and "fine" in out and len(warnings) == 1, err
    assert "plugin 'crashing' failed to import: ImportError: needs torchaudio" in warnings[0]


def test_strict_plugins_turns_a_load_failure_into_a_one_line_error(run_cli, tmp_path, monkeypatch):
    """BENCH_STRICT_PLUGINS=1: a broken plugin stops bench with exit 2 and one line naming it."""
    write_plugin(tmp_path / "dir", "broken", "raise RuntimeError('boom')\n")
    monkeypatch.setenv("BENCH_STRICT_PLUGINS", "1")
    code, _, err = run_cli("--plugins-dir", tmp_path / "dir", "list", "encoders")
    assert code == 2 and err.count("\n") == 1 and "'broken'" in err and "BENCH_STRICT_PLUGINS" in err


# -- failures stay local --------------------------------------------------------------------------------------
BROKEN = {
    "raises_on_import": ("raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
    # a valid hook next to the bad one: neither may register anything
    "bad_args": ('import bench\n\n@bench.hookimpl\ndef register_datasets(register):\n    register("half", print)\n\n'
                 '@bench.hookimpl\ndef register_encoders(register, cfg):\n    pass\n', "{'cfg'} are declared in the hookimpl"),
    "misspelt": ('import bench\n\n@bench.hookimpl\ndef register_encoder(register):\n    pass\n',
                 "register_encoder, which bench has no hook for"),
    "raises_in_hook": ('import bench\n\n@bench.hookimpl\ndef register_encoders(register):\n    1 / 0\n',
                       "failed in register_encoders: ZeroDivisionError"),
}


@pytest.mark.parametrize("module", sorted(BROKEN))
def test_a_broken_plugin_gives_one_line_naming_it_and_others_still_work(run_cli, tmp_path, module):
    """Import error, hookimpl arguments not in the spec, unknown hook, error in a hook: one warning line."""
    source, words = BROKEN[module]
    write_plugin(tmp_path / "dir", module, source)
    write_plugin(tmp_path / "dir", "zz_good", GOOD_ENCODER.format(name="linear"))
    code, out, err = run_cli("--plugins-dir", tmp_path / "dir", "list", "encoders")
    warnings = _warnings(err)
    assert code == 0 and len(warnings) == 1 and f"'{module}'" in warnings[0] and words in warnings[0], err
    assert "linear" in out and "timm/resnet18" in out  # the good plugin and the built-ins still load
    assert "half" not in run_cli("--plugins-dir", tmp_path / "dir", "list", "datasets")[1]
    code, out, _ = run_cli("--plugins-dir", tmp_path / "dir", "plugins", "--json")
    errors = {i["name"]: i["error"] for i in json.loads(out)}
    assert words in errors[module] and errors["zz_good"] is None


def test_two_plugins_registering_one_name(run_cli, tmp_path):
    """Both plugins are named in one line; the name is refused (exit 2) while other names still work."""
    for module in ("first", "second"):
        write_plugin(tmp_path / "dir", module, GOOD_ENCODER.format(name="linear"))
    write_plugin(tmp_path / "dir", "third", GOOD_ENCODER.format(name="other"))
    code, out, err = run_cli("--plugins-dir", tmp_path / "dir", "run", "--encoder", "linear", *TINY_RUN)
    assert code == 2 and "'first'" in err and "'second'" in err and "registered twice" in err
    assert len(_warnings(err)) == 1 and len([line for line in err.splitlines() if "error:" in line]) == 1
    code, _, err = run_cli("--plugins-dir", tmp_path / "dir", "run", "--encoder", "other", *TINY_RUN, "--out", "out")
    assert code == 0, err


def test_duplicate_prefix_is_refused_like_a_duplicate_name(tmp_path, run_cli):
    """A second plugin claiming the `timm:` prefix makes `timm:<model>` an error naming both plugins."""
    write_plugin(tmp_path / "dir", "imposter", '''
        import bench

        @bench.hookimpl
        def register_encoders(register):
            register("timm:", lambda rest: None, "another timm", prefix=True)
    ''')
    code, _, err = run_cli("--plugins-dir", tmp_path / "dir", "run", "--encoder", "timm:resnet18", *TINY_RUN)
    assert code == 2 and "prefix 'timm:'" in err and "'imposter'" in err and "bench_plugins.timm_encoders" in err


# -- inspection -------------------------------------------------------------------------------------------------
def test_plugins_json_lists_name_version_hooks_and_error(run_cli, tmp_path):
    """`bench plugins --json`: every plugin with its version, hooks, error and registrations."""
    write_plugin(tmp_path / "dir", "broken", "raise ImportError('missing dependency')\n")
    (tmp_path / "dir" / "versioned.py").write_text("__version__ = '2.5'\n" + GOOD_ENCODER.format(name="linear")
                                                   .replace("\n    ", "\n"))
    code, out, _ = run_cli("--plugins-dir", tmp_path / "dir", "plugins", "--json")
    infos = {i["name"]: i for i in json.loads(out)}
    assert code == 0 and all(set(i) >= {"name", "version", "hooks", "error"} for i in infos.values())
    assert infos["versioned"]["version"] == "2.5" and infos["versioned"]["hooks"] == ["register_encoders"]
    assert infos["broken"]["error"].endswith("ImportError: missing dependency")
    timm = infos["bench_plugins.timm_encoders"]
    assert timm["builtin"] and timm["error"] is None and "timm/resnet18" in timm["registered"]["encoders"]


def test_plugin_commands_are_added_to_the_cli(run_cli, tmp_path):
    """register_commands(cli) adds a command that `bench` then runs."""
    write_plugin(tmp_path / "dir", "hello", '''
        import click
        import bench

        @bench.hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin")
    ''')
    code, out, _ = run_cli("--plugins-dir", tmp_path / "dir", "hello")
    assert code == 0 and out.strip() == "hello from a plugin"


def test_plugin_registered_helper_raises_for_a_broken_plugin():
    """bench.testing.plugin_registered refuses a plugin pluggy rejects, instead of only warning."""
    import bench
    import bench.testing

    class Bad:
        @bench.hookimpl
        def register_encoders(self, register, extra):
            pass

    with pytest.raises(PluginError, match="'Bad'"):
        with bench.testing.plugin_registered(Bad()):
            pass


# -- plugins that misbehave in their commands, names and resolvers ----------------------------------------------
COMMAND = '''
    import click
    import bench

    @bench.hookimpl
    def register_commands(cli):
        @cli.command(name="{name}")
        @click.option("-p", "--port")
        def command(port):
            click.echo(f"{name} on {{port}}")
'''


def test_a_plugin_command_cannot_replace_a_command_and_one_that_raises_adds_none(run_cli, tmp_path):
    """A command named like a built-in (list) is refused with a warning and bench's kept; a plugin whose
    register_commands raises is one warning, and every other command, a plugin's included, still works."""
    write_plugin(tmp_path / "dir", "imposter", COMMAND.format(name="list"))
    write_plugin(tmp_path / "dir", "raiser", '''
        import bench

        @bench.hookimpl
        def register_commands(cli):
            raise RuntimeError("boom")
    ''')
    write_plugin(tmp_path / "dir", "serving", COMMAND.format(name="serve"))
    code, out, err = run_cli("--plugins-dir", tmp_path / "dir", "list", "templates")
    warnings = _warnings(err)
    assert code == 0 and "seed" in out and len(warnings) == 2, err
    assert any("'imposter' adds command 'list', which bench has" in w for w in warnings)
    assert any("'raiser' failed in register_commands: RuntimeError: boom" in w for w in warnings)
    # the plugin command's own -p is its option, not a plugin to load
    code, out, err = run_cli("--plugins-dir", tmp_path / "dir", "serve", "-p", "8080")
    assert code == 0 and out.strip() == "serve on 8080" and "8080" not in err, err


def test_a_plugin_failing_in_one_hook_registers_nothing_from_the_others(run_cli, tmp_path):
    write_plugin(tmp_path / "dir", "half", '''
        import bench

        @bench.hookimpl
        def register_encoders(register):
            register("half/enc", lambda embed_dim, image_size: None, "never usable")

        @bench.hookimpl
        def register_datasets(register):
            raise RuntimeError("no data")
    ''')
    code, out, err = run_cli("--plugins-dir", tmp_path / "dir", "list", "encoders")
    assert code == 0 and "half/enc" not in out and "failed in register_datasets: RuntimeError: no data" in err
    assert len(_warnings(err)) == 1


def test_a_plugin_of_a_loaded_plugins_name_is_reported_apart_and_dash_p_takes_its_value_attached(run_cli, tmp_path,
                                                                                                  site):
    """Two folders with foo.py: the first loads (no error on it), the second is reported under its own entry; -p of
    a built-in already loaded is no error; -pMODULE loads MODULE as click reads it."""
    write_plugin(tmp_path / "one", "foo", GOOD_ENCODER.format(name="foo/one"))
    write_plugin(tmp_path / "two", "foo", GOOD_ENCODER.format(name="foo/two"))
    code, out, err = run_cli("--plugins-dir", tmp_path / "one", "--plugins-dir", tmp_path / "two",
                             "-p", "bench_plugins.datasets", "plugins", "--json")
    infos = {i["name"]: i for i in json.loads(out)}
    assert infos["foo"]["error"] is None and infos["foo"]["registered"]["encoders"] == ["foo/one"]
    assert "a plugin of that name already is" in infos["foo (2)"]["error"]
    assert infos["bench_plugins.datasets"]["error"] is None and len(_warnings(err)) == 1
    write_plugin(site, "attached_plugin", GOOD_ENCODER.format(name="attached"))
    code, out, err = run_cli("-pattached_plugin", "list", "encoders", "--filter", "attached")
    assert code == 0 and "attached" in out, err


def test_a_resolver_that_raises_is_one_line_naming_its_plugin(run_cli, tmp_path):
    write_plugin(tmp_path / "dir", "hub", '''
        import bench

        @bench.hookimpl
        def register_encoders(register):
            def resolve(rest):
                raise RuntimeError("hub offline")
            register("hub:", resolve, "models from a hub", prefix=True)
    ''')
    code, _, err = run_cli("--plugins-dir", tmp_path / "dir", "run", "--encoder", "hub:foo", *TINY_RUN)
    assert code == 2 and "plugin 'hub'" in err and "RuntimeError: hub offline" in err and "Traceback" not in err


def test_a_plugin_failing_in_a_hook_adds_no_command_and_one_failing_in_register_commands_registers_nothing(
        run_cli, tmp_path):
    """"A plugin that fails this way registers nothing, not even from its other, valid hooks": commands included,
    both ways round."""
    write_plugin(tmp_path / "dir", "no_data", '''
        import click
        import bench

        @bench.hookimpl
        def register_datasets(register):
            raise ValueError("nope")

        @bench.hookimpl
        def register_commands(cli):
            @cli.command()
            def mixed():
                click.echo("mixed ran")
    ''')
    write_plugin(tmp_path / "dir", "no_commands", '''
        import bench

        @bench.hookimpl
        def register_templates(register):
            register("cmdr/t", lambda: ["a {}"], "x")

        @bench.hookimpl
        def register_commands(cli):
            raise RuntimeError("cmd boom")
    ''')
    code, _, err = run_cli("--plugins-dir", tmp_path / "dir", "mixed")
    assert code == 2 and "No such command 'mixed'" in err
    code, out, err = run_cli("--plugins-dir", tmp_path / "dir", "list", "templates")
    assert code == 0 and "cmdr/t" not in out and "seed" in out
    warnings = _warnings(err)
    assert len(warnings) == 2 and "'no_commands' failed in register_commands" in warnings[1], err


def test_a_name_two_plugins_register_is_shown_unusable_on_both_with_a_fix_that_can_be_made(run_cli, tmp_path, site):
    """bench list shows the name as unusable, bench plugins gives the conflict to both plugins (every one of a
    plugin's conflicts, not the last), and the fix offered fits the plugins: a built-in's name stays, so the other
    plugin renames it; BENCH_LOAD_PLUGINS is offered only where an installed plugin could be left out."""
    clash = write_plugin(tmp_path / "dir", "clash", '''
        import bench

        @bench.hookimpl
        def register_templates(register):
            register("seed", lambda: ["a {}"], "my seed")
            register("clash/t", lambda: ["a {}"], "mine")

        @bench.hookimpl
        def register_encoders(register):
            register("airbench", lambda embed_dim, image_size: None, "mine")
    ''')
    code, out, err = run_cli("--plugins-dir", tmp_path / "dir", "list", "templates")
    seed = next(line for line in out.splitlines() if line.startswith("seed "))
    assert code == 0 and "UNUSABLE: registered by plugins 'bench_plugins.templates' and 'clash'" in seed
    assert "rename it in plugin 'clash' (a built-in's names stay)" in err and "BENCH_LOAD_PLUGINS" not in err
    code, out, _ = run_cli("--plugins-dir", tmp_path / "dir", "plugins", "--json")
    infos = {i["name"]: i for i in json.loads(out)}
    assert "template set 'seed'" in infos["bench_plugins.templates"]["error"]
    assert "encoder 'airbench'" in infos["clash"]["error"] and "template set 'seed'" in infos["clash"]["error"]
    assert infos["clash"]["source"] == "--plugins-dir" and infos["bench_plugins.templates"]["source"] == "built-in"
    import importlib

    import bench.testing

    (site / "clash_module.py").write_text(clash.read_text())
    with pytest.raises(PluginError, match="template set 'seed' is registered twice"):
        with bench.testing.plugin_registered(importlib.import_module("clash_module")):
            pass


def test_one_plugins_folder_named_twice_loads_once(run_cli, tmp_path, monkeypatch):
    """BENCH_PLUGINS_DIR and --plugins-dir naming one folder load its plugins once, not as a clash with themselves."""
    write_plugin(tmp_path / "dir", "once", GOOD_ENCODER.format(name="once/enc"))
    monkeypatch.setenv("BENCH_PLUGINS_DIR", str(tmp_path / "dir"))
    code, out, err = run_cli("--plugins-dir", f"{tmp_path / 'dir'}/", "list", "encoders", "--filter", "once*")
    assert code == 0 and "once/enc" in out and _warnings(err) == [], err
