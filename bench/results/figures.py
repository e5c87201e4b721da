"""The figures of ``bench report``, each drawn from the tables and frames it is given and written as one PNG file:
training curves overlaid, confusion-matrix heat maps, per-class accuracy bars, accuracy against a column (training
time, parameters), robustness per corruption, each candidate's differences to the baseline with their intervals,
and time to accuracy. Each configuration (the ``configuration`` column, :data:`bench.results.columns.LABEL`) keeps
one colour, from :func:`config_colors`. Reading run folders and naming configurations is ``bench.results.report``'s.
Each ``plot_*`` returns whether it drew anything (False: nothing to draw, and no file).
"""
from __future__ import annotations

import io
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic_files import atomic_write_bytes
from .columns import LABEL, is_accuracy
from .compare import display_diff


def config_colors(labels) -> dict:
    """A colour per configuration label, in the order given, each figure drawing a configuration in the same one."""
    import matplotlib

    labels = list(labels)
    if len(labels) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {label: cmap(i) for i, label in enumerate(labels)}
    # more configurations than tab10 has colours: one of each, spread over a continuous map, so none repeats
    cmap = matplotlib.colormaps["turbo"]
    return {label: cmap(i / (len(labels) - 1)) for i, label in enumerate(labels)}


def _save(fig, path: Path):
    """Write ``fig`` as a PNG. Should constrained layout still find no room for the axes (decorations larger than
    the figure: a title as long as a configuration name), it is turned off and the figure saved again, its
    bounding box taken tight around everything drawn: matplotlib's warning is no message for a user."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    collapsed = [w for w in caught if "constrained_layout not applied" in str(w.message)]
    for w in caught:
        if w not in collapsed:  # any other warning is not this function's to hide
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if collapsed:
        fig.set_layout_engine("none")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _legend_beside(fig, ax, **kwargs):
    """A legend to the right of ``ax``, the figure widened by its width (and made taller where it is taller): at
    a fixed size, many configurations or long names leave constrained layout no room for the axes."""
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), **kwargs)
    box = legend.get_window_extent(fig.canvas.get_renderer())
    width, height = fig.get_size_inches()
    # 1.2 inches: the title above the axes and the (rotated) tick labels below, which the legend does not span
    fig.set_size_inches(width + box.width / fig.dpi, max(height, box.height / fig.dpi + 1.2))
    return legend


PANELS_PER_ROW = 4  # a report over many configurations wraps its panels into rows rather than one figure yards wide


def _panel_grid(n: int, width: float, height: float):
    """A figure of ``n`` panels of ``width`` x ``height`` inches, at most PANELS_PER_ROW to a row; returns it and
    the ``n`` axes in order (a last row's unused places are hidden)."""
    import matplotlib.pyplot as plt

    cols = min(n, PANELS_PER_ROW)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             constrained_layout=True)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_overlaid_curves(runs: list, colors, path) -> bool:
    """Training loss (every ``log_every`` steps from ``train_log.csv``, else per epoch) and zero-shot top-1 per
    epoch, one line per run, coloured by configuration. ``runs``: (configuration, ``history.csv``, ``train_log.csv``
    or None) per run."""
    import matplotlib.pyplot as plt

    if not runs:
        return False
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    seen = set()
    order = list(colors)
    for label, history, steps in runs:
        kw = dict(color=colors[label], alpha=0.75, lw=1.5, label=label if label not in seen else None)
        # configurations side by side at each epoch, so equal accuracies do not hide each other
        # (at most 0.3 epoch either way, whatever their number, so a point stays nearer its own epoch)
        shift = 0.6 * (order.index(label) - (len(order) - 1) / 2) / max(len(order) - 1, 10)
        seen.add(label)
        if steps is not None:
            ax_loss.plot(steps["step"], steps["train_loss"], **kw)
        else:
            ax_loss.plot(history["step"], history["train_loss"], marker="o", **kw)
        acc = history.dropna(subset=["zeroshot_top1"])
        ax_acc.plot(acc["epoch"] + shift, 100 * acc["zeroshot_top1"], marker="o", markersize=6, **kw)
    ax_loss.set(xlabel="optimizer step", ylabel="training loss (window mean)", title="training loss, one line per run")
    ax_acc.set(xlabel="epoch", ylabel="zero-shot top-1 (%)", title="zero-shot top-1 on the test split")
    last_epoch = max(int(h["epoch"].max()) for _, h, _ in runs)
    ax_acc.set_xlim(0.5, last_epoch + 0.5)
    ax_acc.set_xticks(range(1, last_epoch + 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_loss.legend(loc="best", fontsize=9)
    _save(fig, path)
    return True


def plot_confusions(confusions: dict, path) -> bool:
    """Row-normalised confusion matrices (percent of each true class), one heat map per configuration."""
    import matplotlib.pyplot as plt

    if not confusions:
        return False
    n = len(confusions)
    fig, axes = _panel_grid(n, 5.4, 5.2)
    for ax, (label, (cm, classes)) in zip(axes, confusions.items()):
        pct = 100 * cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
        for i in range(len(classes)):
            for j in range(len(classes)):
                if pct[i, j] >= 0.5:
                    ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if pct[i, j] > 55 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set(xlabel="predicted class", ylabel="true class",
               title=f"{textwrap.fill(str(label), 60)}\n(% of each true class, runs pooled)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="% of the true class")
    _save(fig, path)
    return True


def plot_per_class(pc: pd.DataFrame, colors, path) -> bool:
    import matplotlib.pyplot as plt

    if pc is None or not len(pc):
        return False
    labels = list(dict.fromkeys(pc[LABEL]))
    classes = list(dict.fromkeys(pc["class"]))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(classes) * max(1, len(labels) / 2)), 4.2))
    x = np.arange(len(classes))
    for i, label in enumerate(labels):
        part = pc[pc[LABEL] == label].set_index("class").reindex(classes)
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, 100 * part["mean"], width, yerr=100 * part["std"].fillna(0),
               capsize=2, color=colors[label], label=label, error_kw=dict(lw=0.8))
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set(ylabel="zero-shot accuracy (%)", title="per-class zero-shot accuracy (mean ± std over seeds)",
           ylim=(0, min(100, max(10, float(100 * (pc["mean"] + pc["std"].fillna(0)).max()) * 1.15))))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True


def plot_scatter(table, x: str, xlabel: str, colors, path, scale: float = 1.0) -> bool:
    """zero-shot top-1 against ``x`` (divided by ``scale``): each run a dot, each configuration's mean ± std a
    cross, named in a legend beside the axes (names written beside close crosses would run into each other)."""
    import matplotlib.pyplot as plt

    if x not in table.columns or "zeroshot_top1" not in table.columns or table[x].isna().all():
        return False
    fig, ax = plt.subplots(figsize=(6.2, 4.3), constrained_layout=True)  # widened by the legend
    for label, part in table.groupby(LABEL, sort=False):
        xs, ys = part[x] / scale, 100 * part["zeroshot_top1"]
        ax.scatter(xs, ys, color=colors[label], alpha=0.45, s=28)
        spread = len(part) > 1
        ax.errorbar(xs.mean(), ys.mean(), xerr=xs.std(ddof=1) if spread else None, yerr=ys.std(ddof=1) if spread else None,
                    fmt="X", ms=10, color=colors[label], capsize=3, label=f"{label} (n={len(part)})")
    ax.margins(x=0.15, y=0.12)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set(xlabel=xlabel, ylabel="zero-shot top-1 (%)", title=f"zero-shot top-1 vs {xlabel.split(' (')[0]}")
    ax.grid(alpha=0.3)
    _legend_beside(fig, ax, fontsize=8)
    _save(fig, path)
    return True


def plot_differences(rows: pd.DataFrame, path) -> bool:
    """Candidate − baseline of each accuracy metric in points, one panel per candidate, with the 95% interval of
    the deciding test (Welch over seeds, else the paired test over test images) as error bars."""
    import matplotlib.pyplot as plt

    if not len(rows):
        return False
    rows = rows[[is_accuracy(m) and d == d for m, d in zip(rows["metric"], rows["diff"])]]  # NaN: one side lacks it
    rows = rows.assign(low=rows["seeds_ci_low"].fillna(rows["images_ci_low"]),
                       high=rows["seeds_ci_high"].fillna(rows["images_ci_high"]))
    group_cols = [c for c in rows.columns if c.startswith("on_") and rows[c].nunique() > 1]
    panels = list(rows.groupby(["side"] + group_cols, sort=False))
    if not panels:
        return False
    height = 0.28 * max(len(part) for _, part in panels) + 1.2
    fig, axes = _panel_grid(len(panels), 5.2, height)
    for ax, (key, part) in zip(axes, panels):
        y = np.arange(len(part))[::-1]
        diff = np.array([display_diff(m, d) for m, d in zip(part["metric"], part["diff"])])
        low = np.array([display_diff(m, v) for m, v in zip(part["metric"], part["low"])])
        high = np.array([display_diff(m, v) for m, v in zip(part["metric"], part["high"])])
        known = ~np.isnan(low)
        colors = ["tab:green" if s is True else "tab:gray" for s in part["significant"]]
        ax.errorbar(diff[known], y[known], xerr=[diff[known] - low[known], high[known] - diff[known]], fmt="none",
                    ecolor="0.4", capsize=3)
        ax.scatter(diff, y, c=colors, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, part["metric"], fontsize=8)
        side = key[0] if isinstance(key, tuple) else key
        title = f"{side}\nvs {part['baseline'].iloc[0]}" + (f"\n({', '.join(map(str, key[1:]))})" if group_cols else "")
        # a panel is 5.2 inches wide: longer configuration names wrap instead of running into the next title
        ax.set_title("\n".join(textwrap.fill(line, 60) for line in title.split("\n")), fontsize=9)
        ax.set(xlabel="difference to the baseline (points)")
        ax.grid(alpha=0.3, axis="x")
    _save(fig, path)
    return True


def plot_robustness(agg: pd.DataFrame, colors, path) -> bool:
    import matplotlib.pyplot as plt

    names = [c[len("robust_"):-len("_mean")] for c in agg.columns
             if c.startswith("robust_") and c.endswith("_mean") and c not in ("robust_mean_mean", "robust_clean_mean")]
    if not names:
        return False
    names = ["clean"] + names + ["mean"]
    width = 0.8 / len(agg)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names)), 4.2), constrained_layout=True)  # widened by the legend
    x = np.arange(len(names))
    for i, (_, r) in enumerate(agg.iterrows()):
        means = [100 * r.get(f"robust_{n}_mean", np.nan) for n in names]
        stds = [100 * np.nan_to_num(r.get(f"robust_{n}_std", np.nan)) for n in names]
        ax.bar(x + (i - (len(agg) - 1) / 2) * width, means, width, yerr=stds, capsize=2, color=colors[r[LABEL]],
               label=r[LABEL], error_kw=dict(lw=0.8))
    ax.set_xticks(x, [n.replace("_", " ") for n in names], rotation=30, ha="right")
    ax.axvline(len(names) - 1.5, color="gray", lw=0.8, ls="--")
    ax.set(ylabel="zero-shot top-1 (%)", title="zero-shot top-1 under corruptions (mean over severities; ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    _legend_beside(fig, ax, fontsize=9)
    _save(fig, path)
    return True


METRIC_NAMES = {"zeroshot_top1": "zero-shot top-1", "zeroshot_top5": "zero-shot top-5",
                "mean_per_class_recall": "mean per-class recall", "seen_top1": "seen-class top-1",
                "unseen_top1": "unseen-class top-1", "harmonic_top1": "harmonic top-1"}


def plot_accuracy_against_time(runs: list, targets, metric: str, colors, path) -> bool:
    """Time to accuracy: ``metric`` (a percentage) at each evaluated epoch against the training seconds up to that
    epoch's end, one line per run coloured by configuration, each of ``targets`` (parsed ``--target`` values,
    :func:`bench.evaluation.target.parse_target`) on ``metric`` a dashed line. ``runs``: (configuration, seconds,
    metric in percent) per run."""
    import matplotlib.pyplot as plt

    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(7.2, 4.4), constrained_layout=True)
    seen = set()
    for label, xs, ys in runs:
        ax.plot(xs, ys, marker="o", markersize=3, lw=1.3, alpha=0.8, color=colors[label],
                label=label if label not in seen else None)
        seen.add(label)
    for target in sorted((t for t in targets if t.metric == metric), key=lambda t: t.value):
        ax.axhline(100 * target.value, color="black", ls="--", lw=1, label=f"target {target.text}")
    ax.set(xlabel="training time (s; evaluations and warm-up off the clock)",
           ylabel=f"{METRIC_NAMES[metric]} (%)", title="time to accuracy, one line per run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)
    return True
