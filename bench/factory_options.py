"""Checks a plugin factory runs on the options a user passed it (``--encoder-opt KEY=VALUE``), before it builds.

Each check returns the value (converted where that is lossless, e.g. a JSON list to a tuple) or raises a
:class:`~bench.errors.BenchError` whose one line names the owner, the option, what it must be, and the
fix. Light on purpose (no torch), so a plugin can import it at module level::

    from bench.factory_options import positive_int

    def factory(embed_dim, image_size, width=32):
        width = positive_int("encoder 'my_net'", "width", width)
"""
from __future__ import annotations

import math

from .errors import BenchError


def _fail(owner: str, key: str, value, must: str, fix: str = "") -> BenchError:
    return BenchError(f"{owner}: --encoder-opt {key}={value!r} must be {must}" + (f"; {fix}" if fix else ""))


def positive_int(owner: str, key: str, value, fix: str = "", multiple_of: int = 1, minimum: int = 1) -> int:
    """An int (not a bool or float) of at least ``minimum``, divisible by ``multiple_of``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value % multiple_of:
        what = f"an integer of at least {minimum}" + (f" and a multiple of {multiple_of}" if multiple_of > 1 else "")
        raise _fail(owner, key, value, what, fix)
    return value


def int_tuple(owner: str, key: str, value, length: int, fix: str = "", minimum: int = 1) -> tuple:
    """A list of ``length`` ints, each at least ``minimum`` (``[2,2,2,2]`` on the command line)."""
    ok = isinstance(value, (list, tuple)) and len(value) == length and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    if not ok:
        raise _fail(owner, key, value, f"a list of {length} integers of at least {minimum}", fix)
    return tuple(value)


def number(owner: str, key: str, value, low: float, high: float, fix: str = "", high_open: bool = False,
           low_open: bool = False) -> float:
    """A finite int or float (not a bool) in ``[low, high]`` (ends excluded where ``*_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise _fail(owner, key, value, f"a number in {interval}", fix)
    return float(value)


def boolean(owner: str, key: str, value, fix: str = "") -> bool:
    """true or false (JSON), not a string or a number."""
    if not isinstance(value, bool):
        raise _fail(owner, key, value, "true or false", fix)
    return value
