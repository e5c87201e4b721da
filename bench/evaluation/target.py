"""Quality targets (``--target METRIC=VALUE``): which metrics a target may name, parsing, and when a run's history
first reaches one. Torch-free, so options are checked and tables read without torch.

A target is checked at the epochs whose evaluation ran (``--eval-every``), on the metrics evaluated there. The
time to it is the training time of the epochs up to and including the first one that reaches it: the sum of their
``epoch_seconds``, which is how ``train_seconds`` adds them up, so a run stopped there has
``time_to_target_seconds == train_seconds`` (docs/evaluation.md, "Time to target").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BenchError

# The metrics every evaluated epoch records in history.csv; the final-weights suite (retrieval, probe,
# robustness) runs once at the end, so it cannot say when a target was first reached.
TARGET_METRICS = ("zeroshot_top1", "zeroshot_top5", "mean_per_class_recall")
# With --holdout-classes every evaluated epoch also records these (bench.evaluation.holdout), so they are targets too.
HOLDOUT_TARGET_METRICS = ("seen_top1", "unseen_top1", "harmonic_top1")


@dataclass(frozen=True)
class Target:
    metric: str
    value: float  # a fraction in (0, 1]

    @property
    def text(self) -> str:
        """The one spelling of this target (``zeroshot_top1=0.94``): rows, config ids and tables use it."""
        return f"{self.metric}={self.value!r}"

    def reached_by(self, measured) -> bool:
        """Whether ``measured`` (a metric value, NaN where the epoch was not evaluated) reaches the target.

        Compared in float32, the precision the evaluation computes accuracies in: 9400 hits of 10000 images are
        float32(0.94), a hair below the float64 0.94, and must reach ``zeroshot_top1=0.94``.
        """
        if measured is None or not math.isfinite(float(measured)):
            return False
        return bool(np.float32(measured) >= np.float32(self.value))


def parse_target(text: str) -> Target:
    """``"zeroshot_top1=0.94"`` -> :class:`Target`; anything else is a one-line error naming the fix."""
    metric, sep, value = str(text).partition("=")
    metric, value = metric.strip(), value.strip()
    example = "write it like --target zeroshot_top1=0.94"
    if not sep or not metric or not value:
        raise BenchError(f"--target {text!r} is not METRIC=VALUE; {example}")
    if metric not in TARGET_METRICS + HOLDOUT_TARGET_METRICS:
        raise BenchError(f"--target metric {metric!r} is not evaluated every epoch; a target names one of "
                         f"{', '.join(TARGET_METRICS)}, or with --holdout-classes {', '.join(HOLDOUT_TARGET_METRICS)}")
    try:
        number = float(value)
    except ValueError:
        raise BenchError(f"--target {text!r}: {value!r} is not a number; {example}") from None
    if not math.isfinite(number) or number <= 0:
        raise BenchError(f"--target {text!r}: the value must be a fraction in (0, 1]; {example}")
    if number > 1:
        hint = f"; write {number / 100:g} for {number:g}%" if number <= 100 else ""
        raise BenchError(f"--target {text!r}: metrics are fractions in (0, 1], not percent{hint}")
    return Target(metric, number)


def check_target_measured(metric: str, test_labels, unseen_labels):
    """A held-out accuracy is read on the test images of its group (``unseen_labels``: the held-out classes'
    labels). A test split without an image of that group leaves the metric blank at every epoch, so the target is
    never reached and ``--stop-at-target`` never stops: refused when the run loads its data."""
    if metric not in HOLDOUT_TARGET_METRICS:
        return
    unseen = np.isin(np.asarray(test_labels), np.asarray(list(unseen_labels), dtype=np.int64))
    lacking = ("held-out" if metric != "seen_top1" and not unseen.any()
               else "trained" if metric != "unseen_top1" and unseen.all() else None)
    if lacking:
        raise BenchError(f"--target {metric}: none of the {len(unseen)} test images is of a {lacking} class, so "
                         f"{metric} is blank at every epoch and never reached; raise --limit-test (or name zeroshot_top1)")


def first_reached(history, target: Target) -> tuple[int, float] | None:
    """``(epoch, training seconds)`` at the end of the first epoch of ``history`` (rows as dicts, in epoch order)
    whose evaluation reaches ``target``; None if none does. The seconds add ``epoch_seconds`` in epoch order from
    0.0, exactly as the run adds up ``train_seconds``."""
    seconds = 0.0
    for row in history:
        seconds += row["epoch_seconds"]
        if target.reached_by(row.get(target.metric)):
            return int(row["epoch"]), seconds
    return None


def target_columns(target_text: str | None, stop: bool, history) -> dict:
    """A run's ``runs.csv`` columns for its target (none without one): ``target``, ``stop_at_target``,
    ``reached_target``, ``epochs_to_target`` and ``time_to_target_seconds`` (blank when not reached)."""
    if not target_text:
        return {}
    reached = first_reached(history, parse_target(target_text))
    return {"target": target_text, "stop_at_target": bool(stop), "reached_target": reached is not None,
            "epochs_to_target": reached[0] if reached else None,
            "time_to_target_seconds": round(reached[1], 3) if reached else None}
