"""The parameter counts `bench list encoders` shows without building anything are the built towers' counts."""
import pytest

from bench.app.catalog import LISTING_SIZE, declared_params

BUILTIN_PLUGINS = {"bench_plugins.modified_resnet", "bench_plugins.timm_encoders", "bench_plugins.airbench"}


def _builtin_encoders():
    from bench.host.manager import build_host

    return [e.name for e in build_host(entry_points=False).registry.entries("encoders")
            if not e.prefix and e.plugin in BUILTIN_PLUGINS]


@pytest.mark.parametrize("name", _builtin_encoders())
def test_every_builtin_encoder_declares_the_parameter_count_of_its_built_tower(name, host):
    """Built for real, on the CPU, at the listing's embed width and image size: the declared number cannot rot
    when a tower or timm changes."""
    entry = host.registry.get("encoders", name)
    tower = entry.create(*LISTING_SIZE)
    assert declared_params(entry) == sum(p.numel() for p in tower.parameters())


def test_a_wrong_declared_count_fails_the_plugin_contract_check():
    """bench.testing.check_encoder holds a plugin's declared count to its tower's, as bench's own tests do."""
    import bench
    import bench.testing

    class Plugin:
        @bench.hookimpl
        def register_encoders(self, register):
            def factory(embed_dim, image_size):
                from torch import nn

                return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, embed_dim))

            right = 3 * 32 * 32 * 512 + 512
            register("test/right", factory, "declares its count", params=right)
            register("test/wrong", factory, "declares another count", params=right + 1)
            register("test/word", factory, "declares no number", params="many")

    with bench.testing.plugin_registered(Plugin()):
        bench.testing.check_encoder("test/right").assert_ok()
        wrong = bench.testing.check_encoder("test/wrong")
        expected = (f"declared params: registered params={3 * 32 * 32 * 512 + 513:,}, but the tower at embed width "
                    f"512 and 32 px has {3 * 32 * 32 * 512 + 512:,}")
        assert [p for p in wrong.problems if p.startswith("declared params")] == [expected]
        word = bench.testing.check_encoder("test/word")
        assert any("params='many' is not a whole number" in p for p in word.problems)
