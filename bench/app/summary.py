"""What commands print about finished runs: one line per run, and the mean ± std over seeds of each
configuration's headline metrics."""
from __future__ import annotations


def run_line(row: dict, out) -> str:
    """One line for a finished run, with where its row went."""
    ranks = f" on {row['world_size']} ranks" if row.get("world_size", 1) > 1 else ""
    return (f"run {row['run_id']}: zero-shot top-1 {row['zeroshot_top1']:.4f}, top-5 {row['zeroshot_top5']:.4f}, "
            f"mean per-class recall {row['mean_per_class_recall']:.4f}, {row['train_images_per_s']:.0f} images/s "
            f"over {row['train_seconds']:.1f} s{ranks}{holdout_part(row)}{target_part(row)} -> {out}/runs.csv")


def holdout_part(row: dict) -> str:
    """``--holdout-classes``' metrics for the run line (top-1 above is over every class, seen and unseen alike)."""
    if not row.get("unseen_classes"):
        return ""
    return (f"; held out {row['unseen_classes']}: seen top-1 {row['seen_top1']:.4f}, unseen top-1 "
            f"{row['unseen_top1']:.4f}, harmonic {row['harmonic_top1']:.4f}")


def target_part(row: dict) -> str:
    """``--target``'s outcome for the run line: when it was first reached, or that it was not."""
    if not row.get("target"):
        return ""
    if not row.get("reached_target"):
        return f"; target {row['target']} not reached"
    return (f"; target {row['target']} reached at epoch {row['epochs_to_target']} after "
            f"{row['time_to_target_seconds']:.2f} s of training")


def summary_lines(rows: list[dict]) -> list[str]:
    """Mean ± std over seeds of the headline metrics, one line per configuration."""
    import pandas as pd

    from ..results.columns import CONFIG_COLUMNS, SUMMARY_METRICS, is_accuracy
    from ..results.views import aggregate, fmt_value

    table = aggregate(pd.DataFrame(rows))
    metrics = [m for m in SUMMARY_METRICS if m in table.columns.str.removesuffix("_mean")]
    # the settings that tell the configurations apart (a sweep's lr grid), else two lines would read alike
    varying = [c for c in CONFIG_COLUMNS if c in table.columns and c not in ("encoder", "templates", "seed")
               and table[c].astype(str).nunique() > 1]
    labels = [f"{r.get('encoder', '')} / {r.get('templates', '')}" + "".join(f", {c}={r[c]}" for c in varying)
              for _, r in table.iterrows()]
    if len(set(labels)) < len(labels) and "config_id" in table.columns:  # they differ where runs.csv has no column
        labels = [f"{label} [{r['config_id']}]" for label, (_, r) in zip(labels, table.iterrows())]
    lines = []
    for label, (_, r) in zip(labels, table.iterrows()):
        shown = {m: fmt_value(r[f"{m}_mean"], m, r[f"{m}_std"]) for m in metrics}
        parts = [f"{m} {text}{'%' if is_accuracy(m) else ''}" for m, text in shown.items() if text]  # none: left out
        lines.append(f"{label} over {int(r['n'])} seeds: " + ", ".join(parts))
    return lines


def sweep_summary_lines(out, keys: set) -> list[str]:
    """:func:`summary_lines` of the runs in ``out``'s ``runs.csv`` that a sweep planned: ``keys`` holds their
    ``(config_id, seed)`` pairs (a sweep's runs may sit among others in the folder). Their transfer rows, with
    the same config id and seed, are other datasets' numbers, not runs. Ids read as the sweep's check of what is
    done reads them: an old DDP row recorded under 1 process x 16's id is not that configuration's run."""
    from ..results.runs_csv import read_runs
    from .older_rows import sweep_rows

    table = read_runs(out)
    if not len(table) or "config_id" not in table.columns:
        return []
    table = sweep_rows(table, out)
    mine = [r for r in table.to_dict("records") if (r.get("config_id"), r.get("seed")) in keys]
    return summary_lines(mine) if mine else []
