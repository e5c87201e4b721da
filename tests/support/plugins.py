"""Plugins for the tests: plugin source files, installed-looking distributions, the example plugin's folder, a
transfer dataset with a template set of its own."""
from __future__ import annotations

import textwrap
from pathlib import Path

import bench

from . import REPO

EXAMPLE_DIR = REPO / "plugins" / "examples" / "bench-example"


def write_plugin(folder: Path, module: str, body: str) -> Path:
    """Write ``folder/module.py`` with ``body`` (dedented) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(textwrap.dedent(body))
    return path


def fake_distribution(site: Path, dist: str, version: str, entry_point: str, module: str):
    """Make ``site`` look like site-packages holding distribution ``dist`` with a ``bench`` entry point.

    importlib.metadata finds ``*.dist-info`` folders on sys.path, so with ``site`` on sys.path bench loads
    the entry point exactly as it would after ``pip install`` (the module itself must be importable).
    """
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[bench]\n{entry_point} = {module}\n")


GOOD_ENCODER = '''
    import bench

    @bench.hookimpl
    def register_encoders(register):
        def factory(embed_dim, image_size):
            from torch import nn
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, embed_dim))
        register("{name}", factory, "a linear map of the pixels", family="linear", source="tests")
'''


def swatches(split, data_dir=None, seed=0):
    """4 of the synthetic colours at 48 px under other names: another dataset, size, class list and template set."""
    from bench.data.datasets import ArrayDataset, make_synthetic

    data = make_synthetic(split, seed + 11, n=100, size=48)
    keep = data.labels < 4
    return ArrayDataset(data.images[keep], data.labels[keep], ("scarlet", "amber", "lemon", "grass"),
                        f"swatches48/{split}")


class TransferSets:
    """A test-only dataset that names its own template set, as a dataset plugin does (register it with
    :func:`bench.testing.plugin_registered`)."""

    @bench.hookimpl
    def register_datasets(self, register):
        register("swatches48", swatches, "4 colours at 48 px", templates="swatch_words")

    @bench.hookimpl
    def register_templates(self, register):
        register("swatch_words", lambda: ["a swatch of {}", "{} paint"], "two prompts for colour swatches")
