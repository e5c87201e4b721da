"""Sweep files for the tests: the tests' tiny synthetic run as a sweep file's ``[base]``, written as TOML."""
from __future__ import annotations

# The smoke recipe shrunk to seconds on one CPU thread: 64 synthetic training images, a tiny CLIP
TINY_BASE = {"preset": "smoke", "dataset": "synthetic", "epochs": 2, "limit_train": 64, "limit_test": 32,
             "batch_size": 16, "embed_dim": 16, "text_width": 32, "text_layers": 1, "text_heads": 2,
             "encoder_opt": {"width": 8}, "progress": False}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def sweep_text(grid: dict | None = None, **changes) -> str:
    """A sweep file: ``[base]``, :data:`TINY_BASE` with ``changes`` (a value of None leaves the key out), then a
    ``[grid]`` of ``grid`` (key -> values) when given. Text appended to it continues its last section."""
    base = {k: v for k, v in {**TINY_BASE, **changes}.items() if v is not None}
    lines = ["[base]", *(f"{k} = {toml_value(v)}" for k, v in base.items())]
    if grid:
        lines += ["[grid]", *(f"{k} = {toml_value(list(v))}" for k, v in grid.items())]
    return "\n".join(lines) + "\n"
