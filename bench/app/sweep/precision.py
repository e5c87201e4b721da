"""``bench sweep --until METRIC:HALFWIDTH``'s rule: when a configuration's mean is precise enough, and how many
seeds the next round adds.

A configuration runs seeds 0, 1, 2, ... in rounds. The first round is ``--min-seeds`` seeds. After each round,
with the metric's values ``x`` of the n seeds so far, the 95% confidence interval of the mean has the half-width
``t_{0.975, n-1} * s / sqrt(n)``. The configuration stops when that is at most HALFWIDTH ("precise"), or when n
is ``--max-seeds`` ("max"). Otherwise the next round brings n up to the smallest m at which the same spread
``s`` would give the half-width (the t quantile taken at m), but to no more than 2n (three seeds estimate ``s``
to within a factor of about 3 either way, so a round sized on a small ``s`` may not overshoot by much) and no
more than ``--max-seeds``; at least one seed.

The schedule is a function of the values alone: :func:`stage` replays it from the seeds that are done, so a
restarted sweep, a worker on another machine and ``--status`` all find the same round, and a round cut short by
a kill is finished before the next is decided.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import numpy as np

from ...errors import BenchError

MIN_SEEDS, MAX_SEEDS = 3, 20
PRECISE, AT_MAX = "precise", "max"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Until:
    """What ``--until`` asks: the metric, the half-width of its mean's 95% interval, and the seed bounds."""

    metric: str
    halfwidth: float
    min_seeds: int = MIN_SEEDS
    max_seeds: int = MAX_SEEDS


def parse_until(spec: str | None, min_seeds: int | None = None, max_seeds: int | None = None) -> Until | None:
    """``--until METRIC:HALFWIDTH`` with ``--min-seeds``/``--max-seeds`` checked; None without ``--until``."""
    if spec is None:
        if min_seeds is not None or max_seeds is not None:
            flag = "--min-seeds" if min_seeds is not None else "--max-seeds"
            raise BenchError(f"{flag} bounds an adaptive sweep; add --until METRIC:HALFWIDTH "
                             f"(e.g. --until zeroshot_top1:0.005), or give the seeds with --seeds")
        return None
    from ...results.metric_units import check_margin, parse_metric_number

    metric, halfwidth = parse_metric_number("--until", spec, "HALFWIDTH", "zeroshot_top1:0.005")
    check_margin("--until", f"{metric}:{halfwidth:g}", metric, halfwidth, "HALFWIDTH")
    low = MIN_SEEDS if min_seeds is None else min_seeds
    high = MAX_SEEDS if max_seeds is None else max_seeds
    if low < 2:
        raise BenchError(f"--min-seeds must be at least 2 (an interval needs two seeds to measure the spread), "
                         f"got {low}")
    if high < low:
        raise BenchError(f"--max-seeds {high} is below --min-seeds {low}; raise --max-seeds")
    return Until(metric, halfwidth, low, high)


NO_TTA = "zeroshot_top1_no_tta"


def reported_metrics(cfg, towers: dict | None = None) -> list[str]:
    """The metrics a run of ``cfg`` reports in its row: the zero-shot ones, loss and timings always,
    ``zeroshot_top1_no_tta`` where its encoder averages test-time views, the rest as its ``--evals`` and
    ``--holdout-classes`` ask.

    The test-time augmentation is the run's own test (``averages_views`` of the tower as the run builds it), asked
    of the tower built on the meta device (bench.clip.model.reports_without_tta): milliseconds, after torch's
    import, which the sweep's plan pays anyway. ``towers``: a dict kept across calls, so a model configuration
    that many configurations share is built once; None leaves that metric out and builds nothing."""
    from ...clip.model import reports_without_tta
    from ...data.corruptions import CORRUPTIONS
    from ...results.columns import HOLDOUT_METRICS

    metrics = ["zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "best_zeroshot_top1", "final_train_loss",
               "train_seconds", "train_eval_seconds", "train_images_per_s"]
    if towers is not None:
        key = repr(cfg.model)  # its text: an encoder option may be a list (widths=[32,64,64]), not hashable
        if key not in towers:
            towers[key] = reports_without_tta(cfg.model)
        if towers[key]:
            metrics.insert(1, NO_TTA)
    if "retrieval" in cfg.evals:
        metrics += [f"retrieval_{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]
    if "probe" in cfg.evals:
        metrics += ["probe_top1", "probe_top5", "probe_mean_per_class_recall"]
    if "robustness" in cfg.evals:
        metrics += [f"robust_{c}" for c in CORRUPTIONS] + ["robust_mean", "robust_clean"]
    if cfg.holdout_classes:
        metrics += list(HOLDOUT_METRICS)
    return metrics


def check_metric(until: Until, cfgs):
    """Every configuration's runs report ``until.metric``."""
    from ...results.columns import HOLDOUT_METRICS

    towers = {}
    for cfg in cfgs:
        if until.metric != NO_TTA and until.metric in reported_metrics(cfg):
            continue  # known without building a tower (a plugin's may not build on the meta device: a real build)
        reported = reported_metrics(cfg, towers)
        if until.metric in reported:
            continue
        if until.metric == NO_TTA:
            opts = " ".join(f"{k}={v}" for k, v in cfg.model.encoder_opts)
            raise BenchError(f"--until {NO_TTA}: the encoder {cfg.model.encoder!r}{f' ({opts})' if opts else ''} "
                             f"has no test-time augmentation; {NO_TTA} is reported only for encoders that average "
                             f"views (airbench's flip_tta or translate_tta); use zeroshot_top1")
        if until.metric in HOLDOUT_METRICS:  # a grid over holdout_classes with "" among its values, too
            some = "some of the sweep's runs" if any(c.holdout_classes for c in cfgs) else "the sweep's runs"
            raise BenchError(f"--until {until.metric}: held-out accuracies are reported only by runs with "
                             f"--holdout-classes, and {some} hold no class out; give every run held-out classes "
                             f"(--holdout-classes, or holdout_classes in the sweep file's [base]), or name "
                             f"zeroshot_top1")
        needs = next((e for e, p in (("retrieval", "retrieval_"), ("probe", "probe_"), ("robustness", "robust_"))
                      if until.metric.startswith(p)), None)
        if needs:
            raise BenchError(f"--until {until.metric}: the runs do not report it; add --evals {needs} (or evals in "
                             f"the sweep file's [base])")
        close = difflib.get_close_matches(until.metric, reported, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise BenchError(f"--until {until.metric}: the runs do not report it; {hint}they report "
                         f"{', '.join(reported)}")


def halfwidth(values) -> float:
    from ...results.stats import mean_halfwidth

    return mean_halfwidth(values, CONFIDENCE)


def next_count(values, target: float, max_seeds: int) -> int:
    """The seed count the next round brings a configuration to (see the module's docstring)."""
    from ...results.stats import halfwidth_at

    n = len(values)
    s = float(np.std(np.asarray(values, dtype=np.float64), ddof=1))
    cap = max(n + 1, min(2 * n, max_seeds))
    for m in range(n + 1, cap):
        if halfwidth_at(s, m, CONFIDENCE) <= target:
            return m
    return cap


@dataclass(frozen=True)
class Stage:
    """Where one configuration stands: the seed count its schedule has reached (the current round's end, or
    where it stopped), the seeds of the round still to run, why it stopped, and the mean and half-width of
    its values so far (of the seeds below ``n`` that are done)."""

    n: int
    todo: tuple = ()
    stop: str | None = None  # PRECISE, AT_MAX, or None while rounds remain
    done: int = 0
    mean: float = math.nan
    halfwidth: float = math.inf
    round: int = 1  # the schedule's round that ends at ``n``: 1 for the first ``--min-seeds`` seeds


def stage(values: dict[int, float], until: Until) -> Stage:
    """Replay the schedule over ``values`` (seed -> the metric of each finished run of one configuration): the
    first round not fully done is the current one. Finished seeds the schedule has not reached (a run made by
    hand, a larger earlier --max-seeds) do not enter the decision. The replay counts the rounds too, so a restarted
    sweep numbers the round it finishes or starts as one never stopped would."""
    n, rounds = until.min_seeds, 1
    while True:
        have = [values[s] for s in range(n) if s in values]
        mean = float(np.mean(have)) if have else math.nan
        if len(have) < n:
            return Stage(n, tuple(s for s in range(n) if s not in values), None, len(have), mean, halfwidth(have),
                         rounds)
        width = halfwidth(have)
        if width <= until.halfwidth:
            return Stage(n, (), PRECISE, n, mean, width, rounds)
        if n >= until.max_seeds:
            return Stage(n, (), AT_MAX, n, mean, width, rounds)
        n, rounds = next_count(have, until.halfwidth, until.max_seeds), rounds + 1
