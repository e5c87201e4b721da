"""A sweep's runs as configurations: a sweep file's points, or the flags form's encoders x template sets x seeds.

A sweep file names ``bench run``'s options by their long names with underscores (``lr_warmup_steps``), and
each value is read by that option's own type, as if typed on the command line. The options come in as the
command line declares them (click parameters), so the two cannot drift apart.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import replace

from ...config import RunConfig
from ...errors import BenchError
from ..options import config_from_flags
from ..validation import parse_seeds
from .toml_file import SweepFile, varying_keys

# the options a sweep file sets by their parameter names: their long flags are lists in the flags form
BY_NAME = ("encoder", "templates", "seed")
# options a run's config keeps in one spelling of its own (bench.app.options): "zeroshot_top1 = .90" is
# zeroshot_top1=0.9. The labels show that spelling, so one value written two ways looks the same in every line
CANONICAL = ("target",)


def option_key(param) -> str:
    """The sweep-file key of a ``bench run`` option: its long name with underscores (``--lr-warmup-steps`` ->
    ``lr_warmup_steps``)."""
    if param.name in BY_NAME:
        return param.name
    return max(param.opts, key=len).lstrip("-").replace("-", "_")


def configs_from_file(spec: SweepFile, flags: dict, given: set, params) -> tuple[list[RunConfig], list[dict]]:
    """Each point's config (``bench run``'s defaults < the point < flags typed on the command line) and what
    varies between the points (the key and, where a point leaves it out or the config respells it, the value
    the run gets).

    ``params``: ``bench run``'s click parameters a sweep takes per run; ``given``: the parameter names typed.
    """
    by_key = {option_key(p): p for p in params}
    keys = varying_keys(spec.points)
    cfgs = [_config_from_point(spec.path, point, flags, given, keys, by_key) for point in spec.points]
    varying = [{k: p[k] if k in p and k not in CANONICAL else _effective(c, by_key.get(k), k) for k in keys}
               for p, c in zip(spec.points, cfgs)]
    return cfgs, varying


def configs_from_lists(encoders, templates, seeds, flags: dict) -> tuple[list[RunConfig], list[dict]]:
    """The flags form: encoders x template sets x seeds, and the parts of that product that vary."""
    if not encoders:
        raise BenchError("--encoder is empty; name one or more encoders, comma-separated (bench list encoders), "
                         "or pass a sweep file")
    # without --templates each run takes its dataset's own set (bench.app.options.build_config)
    base = config_from_flags(encoder=encoders[0], templates=templates[0] if templates else None, seed=0, **flags)
    cfgs = cross_product(base, encoders, templates, parse_seeds(seeds) if seeds else [0])
    varying = [{"encoder": c.model.encoder, "templates": c.templates, "seed": c.seed} for c in cfgs]
    shown = [k for k in ("encoder", "templates", "seed") if len({v[k] for v in varying}) > 1] or ["encoder", "seed"]
    return cfgs, [{k: v[k] for k in shown} for v in varying]


def cross_product(base: RunConfig, encoders, templates, seeds) -> list[RunConfig]:
    """``bench sweep``'s flags form: encoders x template sets x seeds, encoder-major."""
    return [replace(base, model=replace(base.model, encoder=e), templates=t, seed=s)
            for e in encoders or [base.model.encoder] for t in templates or [base.templates]
            for s in seeds or [base.seed]]


def _config_from_point(path, point: dict, flags: dict, given: set, varying: list, by_key: dict) -> RunConfig:
    values = dict(flags)
    values.update(encoder=None, templates=None, seed=0)
    for key, value in point.items():
        param = by_key.get(key)
        if param is None:
            close = difflib.get_close_matches(key, list(by_key), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise BenchError(f"{path}: unknown option {key!r}; {hint}a sweep file takes `bench run` options by their "
                             f"long names with underscores (bench run --help)")
        if param.name in given:
            if key in varying:
                raise BenchError(f"{path} sweeps {key}, and --{key.replace('_', '-')} was given too; drop one")
            continue
        values[param.name] = _convert(path, key, param, value)
    return config_from_flags(**values)


def _effective(cfg: RunConfig, param, key: str):
    """The value a run got for an option its sweep-file point left out (the preset's or the default)."""
    name = param.name if param is not None else key
    name = {"text_width": "width", "text_layers": "layers", "text_heads": "heads", "image_size": "image_resolution",
            "compile_": "compile", "checkpoints": "save_checkpoints"}.get(name, name)
    for obj in (cfg, cfg.model, cfg.model.text):
        if hasattr(obj, name):
            return getattr(obj, name)
    return "default"


def _convert(path, key: str, param, value):
    """A sweep file's TOML value as the flag's own type would read it from the command line."""
    import click

    if param.name in ("encoder_opts", "data_opts"):
        if isinstance(value, dict):
            return [f"{k}={json.dumps(v)}" for k, v in value.items()]
        return [value] if isinstance(value, str) else [str(v) for v in value]
    if param.multiple:  # a list, a comma-separated string, or one value (holdout_classes = 2)
        if isinstance(value, str):
            return [v for v in value.split(",") if v]
        items = value if isinstance(value, list) else [value]
        # str() would make true a class named 'True' and a table one named "{'a': 1}", refused only mid-sweep
        odd = next((v for v in items if isinstance(v, bool) or not isinstance(v, (str, int, float))), None)
        if odd is not None:
            kind = ("true or false" if isinstance(odd, bool) else "a list" if isinstance(odd, list)
                    else "a table" if isinstance(odd, dict) else type(odd).__name__)
            raise BenchError(f"{path}: {key} = {value!r} holds {kind}; --{key.replace('_', '-')} takes names or "
                             f"numbers: give a string (\"a,b\"), a number, or a list of them")
        return [str(v) for v in items]
    if getattr(param, "is_flag", False) and not isinstance(value, bool):
        raise BenchError(f"{path}: {key} = {value!r} must be true or false")
    if not isinstance(value, (str, int, float, bool)):  # a list, table or date where the option takes one value
        kind = "a list" if isinstance(value, list) else "a table" if isinstance(value, dict) else type(value).__name__
        raise BenchError(f"{path}: {key} = {value!r} is {kind}, and --{key.replace('_', '-')} takes one value; "
                         f"give one (the values to sweep over go in [grid] as a list of single values)")
    # click's INT reads 1.5 and true as 1: a typo in a sweep file would silently run another seed or size
    whole = isinstance(param.type, click.types.IntParamType) and isinstance(value, float) and not value.is_integer()
    if whole or (isinstance(value, bool) and not getattr(param, "is_flag", False)):
        raise BenchError(f"{path}: {key} = {value!r} is not a valid {param.type.name}; give "
                         f"{'a whole number' if isinstance(param.type, click.types.IntParamType) else 'a value'}")
    try:
        return param.type.convert(value, param, None)
    except click.BadParameter as exc:
        raise BenchError(f"{path}: {key} = {value!r}: {exc.format_message()}") from None
