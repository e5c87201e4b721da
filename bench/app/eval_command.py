"""``bench eval`` from its parsed options: a bench checkpoint (or an OpenAI-format state dict) evaluated again,
or a pretrained open_clip model evaluated the same way and recorded next to trained runs."""
from __future__ import annotations

from pathlib import Path

from ..errors import BenchError
from .validation import check_positive


def eval_command(checkpoint=None, open_clip_model=None, pretrained=None, results_dir="results", templates=(),
                 dataset=(), data_dir=None, limit_test=None, device="auto", per_template=False, evals=(),
                 robust_limit=None, robust_severities=(), out=None, holdout_classes=()):
    """One row per dataset x template set; returns the table and ``(rows, runs.csv)`` for the rows recorded (open_clip
    rows; a checkpoint's transfer rows), or None when none were."""
    from ..data.corruptions import parse_severities
    from ..evaluation import parse_evals
    from ..evaluation.suite import SuiteOptions

    if (checkpoint is None) == (open_clip_model is None):
        raise BenchError("bench eval takes a CHECKPOINT or --open-clip MODEL --pretrained TAG_OR_FILE (one of them)")
    if pretrained is not None and open_clip_model is None:
        raise BenchError("--pretrained goes with --open-clip MODEL; a bench checkpoint is given as CHECKPOINT")
    check_positive("--robust-limit", robust_limit)
    evals = parse_evals(evals)
    severities = parse_severities(robust_severities)  # checked here; all five where none are given
    common = dict(templates=list(templates) or None, data_dir=data_dir, limit_test=limit_test, device=device,
                  per_template=per_template, out=out, holdout_classes=tuple(holdout_classes))
    if open_clip_model is not None:
        from .evaluate_pretrained import evaluate_open_clip

        suite = SuiteOptions(evals=evals, robust_limit=robust_limit, robust_severities=severities)
        table = evaluate_open_clip(open_clip_model, pretrained, dataset=list(dataset) or "cifar10",
                                   results=results_dir, suite=suite, **common)
        return table, (table.attrs["recorded"], Path(results_dir) / "runs.csv")
    from .evaluate import evaluate_checkpoint

    # a checkpoint's suite settings left unset are its run's, so that its row's suite columns come out again
    table = evaluate_checkpoint(checkpoint, dataset=list(dataset) or None, evals=evals, robust_limit=robust_limit,
                                robust_severities=severities if robust_severities else (), **common)
    if not table.attrs.get("recorded"):
        return table, None
    return table, (table.attrs["recorded"], Path(checkpoint).resolve().parent.parent.parent / "runs.csv")
