"""The command line only wires: its logic lives in bench.app, parsing fills no module state, the run config
stays a base module, option names read one way, and `bench list` answers without torch."""
import copy
import re
import sys
from pathlib import Path

import click
import pytest

from tests.support.imports import heavy_modules_after, import_statements
from tests.support.runs import TINY

ROOT = Path(__file__).resolve().parents[1]
# what bench/config.py may import besides the standard library: errors, the torch-free model configs, and the
# torch-free training recipe
CONFIG_IMPORTS = {"bench.errors", "bench.clip.configs", "bench.engine.recipe"}
# what bench/cli.py may import inside its commands: the application layer, the throughput command (perf sits above
# app), the plugin host (its plugins' commands must exist before click parses) and the errors it turns into lines
CLI_IMPORTS = ("bench.app", "bench.perf.throughput", "bench.host.manager", "bench.errors")


def _imports(path: Path, package: str = "bench") -> set[str]:
    """Every module ``path`` (a module of ``package``) imports, function-level imports included, relative ones
    resolved."""
    return {module for module, _ in import_statements(path.read_text(), package, str(path))}


def test_the_run_config_imports_only_errors_model_configs_the_recipe_and_the_standard_library():
    """bench/config.py is a base module: no registry, evaluation, logger or engine code, even inside a function
    (the checks of its values live in bench.app.validation)."""
    stray = sorted(m for m in _imports(ROOT / "bench" / "config.py")
                   if m not in CONFIG_IMPORTS and m.split(".")[0] not in sys.stdlib_module_names)
    assert not stray, f"bench/config.py imports {stray}"


def test_the_import_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "config.py"
    module.write_text("import json\n\ndef f():\n    from .host.registry import x\n    import torch\n")
    assert _imports(module) == {"json", "bench.host.registry", "torch"}


def test_the_cli_calls_into_the_app_layer_only():
    imported = _imports(ROOT / "bench" / "cli.py")
    stray = sorted(m for m in imported if m.startswith("bench") and not m.startswith(CLI_IMPORTS))
    assert not stray, f"bench/cli.py imports {stray}; put the logic in bench.app and call it"
    assert imported & {"bench.app.run_command", "bench.app.sweep.command", "bench.app.tables"} == {
        "bench.app.run_command", "bench.app.sweep.command", "bench.app.tables"}


def _module_state(module) -> dict:
    return {name: copy.deepcopy(value) for name, value in vars(module).items()
            if isinstance(value, (list, dict, set)) and not name.startswith("__")}


def test_parsing_a_command_line_fills_no_module_level_state(tmp_path, run_cli):
    """The command line travels down in click's context, not through a global of bench.cli."""
    import bench.cli

    before = _module_state(bench.cli)
    code, _, err = run_cli("sweep", "--encoder", "modified_resnet", "--seeds", "0,1", "--dataset", "synthetic",
                             "--preset", "smoke", *TINY, "--out", tmp_path / "res", "--dry-run")
    assert code == 0, err
    assert _module_state(bench.cli) == before
    assert "_ARGV" not in vars(bench.cli)


def _commands() -> dict[str, click.Command]:
    from bench.cli import cli

    return {"bench": cli, **cli.commands}


def _option_names(command: click.Command) -> list[str]:
    return [name for p in command.params if isinstance(p, click.Option) for name in (*p.opts, *p.secondary_opts)
            if name.startswith("--")]


def _punctuation_clashes(options: list[str]) -> list[str]:
    """Pairs of option names of one command that are equal without ``-``, ``_`` and case."""
    seen, clashes = {}, []
    for option in options:
        key = re.sub(r"[-_]", "", option).lower()
        if key in seen and seen[key] != option:
            clashes.append(f"{seen[key]} and {option}")
        seen.setdefault(key, option)
    return clashes


def _spelling_clashes(options: list[str]) -> list[str]:
    """Words written as one word in one option name and hyphenated in another (``--warmup-steps``,
    ``--warm-up``)."""
    words, joined = {}, {}
    for option in options:
        parts = option.lstrip("-").lower().split("-")
        for part in parts:
            words.setdefault(part, option)
        for i in range(len(parts)):
            for j in range(i + 2, len(parts) + 1):
                joined.setdefault("".join(parts[i:j]), option)
    return [f"{words[w]} writes {w!r} as one word, {joined[w]} as several" for w in joined if w in words]


def test_no_two_options_of_a_command_differ_only_in_punctuation_or_case():
    clashes = [f"bench {name}: {c}" for name, command in _commands().items()
               for c in _punctuation_clashes(_option_names(command))]
    assert not clashes, clashes


def test_every_word_of_the_option_names_is_spelt_one_way_across_all_commands():
    """Across every option of every command, so `bench run` and `bench throughput` agree too."""
    clashes = _spelling_clashes([o for command in _commands().values() for o in _option_names(command)])
    assert not clashes, clashes


def test_the_name_checks_catch_the_old_option_pairs():
    assert _punctuation_clashes(["--warm-up", "--warm_up", "--seed"]) == ["--warm-up and --warm_up"]
    assert _spelling_clashes(["--warmup-steps", "--warm-up"]) == [
        "--warmup-steps writes 'warmup' as one word, --warm-up as several"]
    assert not _spelling_clashes(["--lr-warmup-steps", "--prewarm-steps", "--untimed-steps"])


def test_the_renamed_options_are_sweep_file_keys_with_the_same_meaning(tmp_path, run_cli):
    """--lr-warmup-steps and --prewarm-steps are a sweep file's lr_warmup_steps and prewarm_steps: the same runs.
    The learning-rate warm-up is part of what a run computes (its id); the prewarm is not."""
    common = ["--dataset", "synthetic", "--preset", "smoke", *TINY, "--out", str(tmp_path / "res"), "--dry-run"]
    ids = {}
    for label, extra in (("none", []), ("lr", ["--lr-warmup-steps", "7"]), ("both", ["--lr-warmup-steps", "7",
                                                                                   "--prewarm-steps", "2"])):
        code, out, err = run_cli("sweep", "--encoder", "modified_resnet", *extra, *common)
        assert code == 0, err
        ids[label] = out.split()[1]
    path = tmp_path / "s.toml"
    path.write_text("[base]\nlr_warmup_steps = 7\nprewarm_steps = 2\n[[include]]\nencoder = 'modified_resnet'\n")
    code, out, err = run_cli("sweep", path, *common)
    assert code == 0, err
    assert out.split()[1] == ids["lr"] == ids["both"] != ids["none"]


@pytest.mark.parametrize("args, message", [
    (["run", "--warm-up", "3"], "bench run: --warm-up was renamed --prewarm-steps (same meaning, same values); "
                                "write --prewarm-steps instead"),
    (["sweep", "--warm-up=3"], "bench sweep: --warm-up was renamed --prewarm-steps"),
    (["run", "--warmup-steps", "3"], "bench run: --warmup-steps was renamed --lr-warmup-steps"),
    (["sweep", "--warmup-steps", "3"], "bench sweep: --warmup-steps was renamed --lr-warmup-steps"),
    (["throughput", "--warmup", "1"], "bench throughput: --warmup was renamed --untimed-steps"),
    (["sweep", "--encoder", "modified_resnet", "--skip-existing"],
     "bench sweep: --skip-existing was removed: a sweep always skips its finished runs; drop the flag"),
    (["run", "--warmup", "1"], "No such option '--warmup'"),  # throughput's old name means nothing to run
])
def test_the_old_names_are_refused_in_one_line_naming_what_replaces_them(args, message, run_cli):
    """A script written for an earlier bench (7bd3d82 and before) gets the new name, not click's guess among
    look-alikes (--warm-up: --lr-warmup-steps too) or a traceback."""
    code, _, err = run_cli(*args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_bench_list_encoders_imports_neither_torch_nor_timm_and_shows_every_count():
    """Listing builds no encoder: each built-in declares its parameter count (checked against the built towers
    in test_encoder_params.py)."""
    code = ("from bench.cli import main\n"
            "try:\n    main(['list', 'encoders'])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n")
    heavy, printed = heavy_modules_after(code, ("torch", "timm", "open_clip"), env={"BENCH_LOAD_PLUGINS": ""})
    assert not heavy, heavy
    rows = [line.split() for line in printed.splitlines()[1:]]
    assert rows and all(row[2] != "-" for row in rows if not row[0].endswith(">")), printed


def test_an_encoder_without_a_declared_count_is_counted_on_request(run_cli, tmp_path):
    """A plugin that declares no params shows '-'; --count-params builds it on the meta device to count it."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "plain.py").write_text(
        "import bench\n\n@bench.hookimpl\ndef register_encoders(register):\n"
        "    def factory(embed_dim, image_size):\n        from torch import nn\n\n"
        "        return nn.Linear(3, embed_dim)\n"
        "    register('plain', factory, 'a linear layer')\n")
    code, out, err = run_cli("--plugins-dir", tmp_path / "dir", "list", "encoders", "--filter", "plain")
    assert code == 0, err
    assert out.splitlines()[1].split()[:3] == ["plain", "-", "-"]
    code, out, err = run_cli("--plugins-dir", tmp_path / "dir", "list", "encoders", "--filter", "plain",
                             "--count-params")
    assert code == 0, err
    assert out.splitlines()[1].split()[:3] == ["plain", "-", f"{3 * 512 + 512:,}"]
