"""Which metrics are accuracies (fractions in [0, 1], higher is better), and the options that give a number in a
metric's own unit as ``METRIC:NUMBER`` (``bench compare --fail-on``/``--equivalence``, ``bench sweep --until``).

Without pandas (numpy and the held-out metric names only), so that ``bench sweep`` refuses a bad ``--until``
before torch and pandas load (:func:`bench.app.validation.check_before_heavy_imports`); the comparison and the
results tables read the same rules from here.
"""
from __future__ import annotations

import math
import re

from ..errors import BenchError
from ..evaluation.target import HOLDOUT_TARGET_METRICS

# zeroshot_top1_no_tta: the top-1 of an encoder with test-time augmentation with it off (bench.app.run), an accuracy
# like the top-1 beside it.
_ACCURACY = re.compile(r"^(zeroshot_top\d+(_no_tta)?|mean_per_class_recall|best_zeroshot_top1|retrieval_(i2t|t2i)_r\d+|"
                       r"probe_top\d+|probe_mean_per_class_recall|robust_(?!images$|severities$|protocol$)\w+)$")


def is_accuracy(metric: str) -> bool:
    return bool(_ACCURACY.match(metric)) or metric in HOLDOUT_TARGET_METRICS


def parse_metric_number(flag: str, spec: str, name: str, example: str) -> tuple[str, float]:
    """``METRIC:NUMBER`` of an option (``--fail-on``, ``--equivalence``, ``--until``) as ``(metric, number)``, the
    number finite; else one line naming the option, what it takes (``name``) and an ``example``."""
    metric, sep, value = spec.rpartition(":")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not metric or not math.isfinite(number):
        raise BenchError(f"{flag} {spec!r} is not METRIC:{name}; write it like {flag} {example}")
    return metric, number


def check_margin(flag: str, shown: str, metric: str, value: float, name: str):
    """A margin or half-width in the metric's own unit: > 0, and for an accuracy (a fraction) below 0.5, which
    would be 50 points. ``shown``: the option's value as the message repeats it."""
    if not value > 0:
        raise BenchError(f"{flag} {shown}: {name} must be > 0")
    if is_accuracy(metric) and value >= 0.5:
        raise BenchError(f"{flag} {shown}: accuracies are fractions, so {name} is too (0.005 is half a point); "
                         f"{value:g} would be {100 * value:g} points")
