"""`bench list`: encoders with family, parameter count at the default embed width, and source."""
import pytest
import torch

from bench.app.catalog import encoder_params
from bench.clip.configs import ModelCfg


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "FAMILY", "PARAMS", "SOURCE", "SUMMARY"]
    return {line.split()[0]: line.split() for line in lines[1:]}


@pytest.mark.slow  # builds every registered encoder's tower on the meta device
def test_list_encoders_shows_family_params_and_source_for_every_encoder(run_cli, host):
    """Every registered encoder has a row; counts are the real size of the tower at embed width 512."""
    code, out, _ = run_cli("list", "encoders")
    rows = _rows(out)
    assert code == 0 and set(rows) == {e.display_name for e in host.registry.entries("encoders")}
    assert rows["timm/resnet18"][1:4] == ["resnet", "11,430,976", "timm"]
    assert rows["modified_resnet"][1:4] == ["resnet", "7,174,960", "bench"]
    assert rows["timm:<model_name>"][1:3] == ["any", "-"]
    assert all(row[2] != "-" for name, row in rows.items() if not name.endswith(">"))


def test_meta_device_count_equals_the_built_tower(host):
    """The cheap count (meta device, no memory) equals the parameters of the tower actually built."""
    entry = host.registry.get("encoders", "timm/vit_tiny_patch4_32")
    built = entry.create(ModelCfg().embed_dim, ModelCfg().image_resolution)
    assert encoder_params(entry) == sum(p.numel() for p in built.parameters())
    assert all(p.device.type == "cpu" for p in built.parameters())  # the meta context did not leak


def test_list_filter_and_other_kinds(run_cli):
    code, out, _ = run_cli("list", "encoders", "--filter", "timm/vit*")
    assert code == 0 and sorted(_rows(out)) == ["timm/vit_small_patch4_32", "timm/vit_tiny_patch4_32"]
    code, out, _ = run_cli("list", "templates")
    assert code == 0 and out.splitlines()[0].startswith("openai  ") and "(bench_plugins.templates)" in out


def test_a_factory_that_fails_on_the_meta_device_still_lists(run_cli, tmp_path):
    """A plugin factory that cannot build on the meta device shows '-' instead of breaking the listing."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "picky.py").write_text(
        "import bench\n\n@bench.hookimpl\ndef register_encoders(register):\n"
        "    def factory(embed_dim, image_size):\n        raise RuntimeError('needs a GPU')\n"
        "    register('picky', factory, 'fails to build')\n")
    code, out, _ = run_cli("--plugins-dir", tmp_path / "dir", "list", "encoders", "--filter", "picky")
    assert code == 0 and _rows(out)["picky"][1:4] == ["-", "-", "picky"]
    assert torch.empty(1).device.type == "cpu"
