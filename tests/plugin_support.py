"""Helpers for the plugin tests: tiny run flags, plugin source files, and installed-looking distributions."""
from __future__ import annotations

import textwrap
from pathlib import Path

# A tiny CLIP text tower and a one-epoch, one-step run on the synthetic set; the encoder is left as built.
TINY_RUN = ["--dataset", "synthetic", "--epochs", "1", "--limit-train", "4", "--limit-test", "4", "--batch-size", "4",
            "--embed-dim", "16", "--text-width", "32", "--text-layers", "1", "--text-heads", "2", "--no-progress",
            "--no-checkpoints"]

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "plugins" / "examples" / "bench-example"


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
