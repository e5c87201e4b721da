"""``bench run``'s options as one checked :class:`~bench.config.RunConfig`: defaults < preset < flags.

``bench sweep`` builds each of its runs here too, so a value means the same in a flag and in a sweep file.
"""
from __future__ import annotations

from ..config import RunConfig, make_config, parse_opts
from ..data.imagefolder import dataset_name
from .dataset_lookup import dataset_templates
from .validation import check_preset, validate_config


def build_config(preset: str = "reference", model: dict | None = None, **overrides) -> RunConfig:
    """:func:`bench.config.make_config`, with the preset name and every value checked.

    The template set: ``templates`` when given, else the dataset's own
    (:func:`bench.app.dataset_lookup.dataset_templates`), else RunConfig's ``seed``. CIFAR-10 and synthetic name
    ``seed``, so their runs keep their configuration ids.
    """
    check_preset(preset)
    if overrides.get("dataset") is not None:  # one spelling per dataset: imagefolder:x/ and imagefolder:./x are x
        overrides["dataset"] = dataset_name(overrides["dataset"])
    if overrides.get("templates") is None:
        overrides["templates"] = dataset_templates(overrides.get("dataset") or RunConfig.dataset)
    return validate_config(make_config(preset, model=model, **overrides))


def config_from_flags(encoder=None, encoder_opts=(), preset="reference", embed_dim=None, image_size=None,
                      text_width=None, text_layers=None, text_heads=None, compile_=False, checkpoints=True, evals=(),
                      robust_severities=(), log=(), data_opts=(), transfer=(), holdout_classes=(),
                      **flags) -> RunConfig:
    """The run config from ``bench run``'s flags as click passes them (parameter names, strings for lists)."""
    from ..data.class_split import canonical_holdout
    from ..data.corruptions import parse_severities
    from ..evaluation.target import parse_target

    if flags.get("target") is not None:  # one spelling per target (" zeroshot_top1 = .94" -> "zeroshot_top1=0.94")
        flags["target"] = parse_target(flags["target"]).text
    model = dict(encoder=encoder, encoder_opts=parse_opts(encoder_opts), embed_dim=embed_dim,
                 image_resolution=image_size, width=text_width, layers=text_layers, heads=text_heads)
    return build_config(preset, model=model, compile=compile_, save_checkpoints=checkpoints, evals=tuple(evals),
                        log=tuple(log), robust_severities=parse_severities(robust_severities),
                        data_opts=parse_opts(data_opts, "--data-opt"), transfer=tuple(transfer),
                        holdout_classes=canonical_holdout(holdout_classes), **flags)
