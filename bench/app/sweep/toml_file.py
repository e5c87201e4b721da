"""Sweep files: a TOML file that names the runs of a sweep (``bench sweep FILE.toml``).

::

    [base]              # any `bench run` option, long name with underscores
    preset = "reference"
    [grid]              # the cross product of these lists, in the file's order
    encoder = ["modified_resnet", "timm/resnet18"]
    seed = [0, 1, 2]
    [[exclude]]         # drop the grid's points that match every key (a list matches any of its values)
    encoder = "timm/resnet18"
    seed = 2
    [[include]]         # one more run each (over [base]); a file without [grid] is an explicit run list
    encoder = "airbench_wide"
    lr = 2e-3
    [sweep]             # how to run it: concurrent, workers, gpus, launcher, gpus_per_run, ray_address
    concurrent = 4
    [slurm]             # --launcher slurm: partition, time_min, gpus_per_job, runs_per_job, ...

This module only reads the file into plain option dicts; it knows no option's meaning. :mod:`.points` checks
every name and value against ``bench run``'s options and builds the configurations from them; :mod:`.placement`
checks [sweep] and [slurm].
"""
from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BenchError
from .placement import SLURM_KEYS, SWEEP_KEYS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TABLES = ("base", "grid", "exclude", "include", "sweep", "slurm")
# far beyond any sweep that can run, and refused before the cross product is built: a grid of a few long lists
# multiplies out to more points than memory holds
MAX_GRID_POINTS = 100_000


@dataclass
class SweepFile:
    """A sweep file read: each run's options (base, then its grid point or include), and how to run them."""

    path: Path
    points: list[dict] = field(default_factory=list)
    sweep: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)


def read_sweep_file(path: str | Path) -> SweepFile:
    path = Path(path)
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is a folder" if path.is_dir() else "is not a file"
        raise BenchError(f"sweep file {str(path)!r} {what}; pass a .toml file (docs/sweeps.md)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"{path} is not valid TOML ({' '.join(str(exc).split())}); fix the file") from None
    unknown = [k for k in data if k not in TABLES]
    if unknown:
        raise BenchError(f"{path}: unknown table [{unknown[0]}]; a sweep file has {', '.join(f'[{t}]' for t in TABLES)}")
    base = _table(data, "base", path)
    grid = _table(data, "grid", path)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise BenchError(f"{path}: grid.{key} must be a non-empty list of values, e.g. {key} = [{values!r}]"
                             if not isinstance(values, list) else f"{path}: grid.{key} is an empty list; give it values")
        if key in base:
            raise BenchError(f"{path}: {key} is in both [base] and [grid]; keep it in one of them")
    excludes, includes = _tables(data, "exclude", path), _tables(data, "include", path)
    for i, rule in enumerate(excludes, 1):
        stray = [k for k in rule if k not in grid]
        if stray:
            raise BenchError(f"{path}: exclude #{i} names {stray[0]}, which is not a [grid] key; exclude by grid keys")
        for key, value in rule.items():  # a value the grid never takes is a typo that would drop nothing
            absent = [v for v in (value if isinstance(value, list) else [value]) if v not in grid[key]]
            if absent:
                raise BenchError(f"{path}: exclude #{i} has {key} = {absent[0]!r}, which grid.{key} does not list "
                                 f"({', '.join(map(repr, grid[key]))}); exclude values of the grid")
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_GRID_POINTS:
        raise BenchError(f"{path}: [grid] has {size:,} points ({' x '.join(str(len(v)) for v in grid.values())}); a "
                         f"sweep plans at most {MAX_GRID_POINTS:,}: shorten its lists or split it into several files")
    points = []
    if grid:
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            if not any(_matches(point, rule) for rule in excludes):
                points.append({**base, **point})
    points += [{**base, **extra} for extra in includes]
    if not points:
        why = "its exclude rules drop every grid point" if grid else "it has neither [grid] nor [[include]]"
        raise BenchError(f"{path} plans no run ({why}); add a [grid] of values or [[include]] runs")
    sweep, slurm = _table(data, "sweep", path), _table(data, "slurm", path)
    _known_keys(sweep, SWEEP_KEYS, "sweep", path)
    _known_keys(slurm, SLURM_KEYS, "slurm", path)
    return SweepFile(path, points, sweep, slurm)


def varying_keys(points: list[dict]) -> list[str]:
    """The option names whose values differ between runs, in first-seen order."""
    keys = list(dict.fromkeys(k for p in points for k in p))
    missing = object()
    return [k for k in keys if len({repr(p.get(k, missing)) for p in points}) > 1]


def _matches(point: dict, rule: dict) -> bool:
    return all(point[k] in v if isinstance(v, list) else point[k] == v for k, v in rule.items())


def _table(data: dict, name: str, path: Path) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise BenchError(f"{path}: {name} must be a table ([{name}]), got {type(value).__name__}")
    return value


def _tables(data: dict, name: str, path: Path) -> list[dict]:
    value = data.get(name, [])
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BenchError(f"{path}: {name} must be an array of tables ([[{name}]])")
    return value


def _known_keys(table: dict, known: tuple, name: str, path: Path):
    for key in table:
        if key not in known:
            raise BenchError(f"{path}: unknown key {name}.{key}; [{name}] takes {', '.join(known)}")
