"""Input checks that run before any work: each failure is one BenchError naming the problem and the fix.

Nothing here writes: the results folder is inspected, not created, so a rejected command leaves every
file as it was. Range checks of the run config itself live in :func:`bench.config.validate_config`.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path

from ..atomic_files import check_writable_folder
from ..errors import BenchError, one_line_cause


def check_run_inputs(cfg):
    """What ``bench run`` needs beyond ``validate_config``: checkpoint options, encoder options, folders."""
    if cfg.checkpoint_every < 0:
        raise BenchError(f"--checkpoint-every must be >= 0 steps (0 = only at the end of each epoch), "
                         f"got {cfg.checkpoint_every}")
    if cfg.max_grad_norm is not None and not (cfg.max_grad_norm > 0 and math.isfinite(cfg.max_grad_norm)):
        raise BenchError(f"--max-grad-norm must be a positive number, got {cfg.max_grad_norm}; leave it out to not clip")
    check_encoder_opts(cfg.model.encoder, dict(cfg.model.encoder_opts))
    from ..results.loggers import check_logger_packages

    check_logger_packages(cfg.log)
    check_data_dir(cfg.data_dir)
    check_out_dir_writable(cfg.out)


def check_encoder_opts(encoder: str, opts: dict):
    """Unknown ``--encoder-opt`` keys fail here, not as a TypeError deep inside the model constructor."""
    from ..host.manager import get_entry

    factory = get_entry("encoders", encoder).factory
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C factory: nothing to check against
        return
    try:
        signature.bind_partial(1, 1, **opts)
    except TypeError:
        accepted = [p.name for p in list(signature.parameters.values())[2:]
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in opts if k not in accepted]
        raise BenchError(f"encoder {encoder!r} takes no option {unknown[0] if unknown else ''!r}; its options are "
                         f"{', '.join(accepted) or 'none'} (--encoder-opt KEY=VALUE)") from None


def check_data_dir(data_dir):
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise BenchError(f"--data-dir {str(data_dir)!r} is not a folder; pass the folder that holds the dataset "
                         f"(CIFAR-10: train.npz/test.npz or cifar-10-batches-py/)")


def check_out_dir_writable(out) -> Path:
    """The results folder (or the nearest folder above it that exists) is a writable folder, and a runs.csv
    already in it is a results table. Damaged rows in it are reported now, not after hours of training."""
    from ..results.runs_csv import read_table

    out = check_writable_folder(out)
    if out.exists() and (out / "runs").exists() and not (out / "runs").is_dir():
        raise BenchError(f"--out {str(out)!r}: {str(out / 'runs')!r} is a file, not the runs folder; move it away")
    if (out / "runs.csv").exists():
        read_table(out / "runs.csv").report()
    return out


def check_positive(option: str, value, allow_none: bool = True):
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise BenchError(f"{option} must be at least 1, got {value}")


def check_image_size(cfg, data):
    """The model is built for ``--image-size``; the loader feeds the dataset's images as they are."""
    height, width = data.images.shape[1:3]
    if height != width:
        raise BenchError(f"dataset {cfg.dataset!r} has {height}x{width} images; bench trains on square images")
    if height != cfg.model.image_resolution:
        raise BenchError(f"--image-size {cfg.model.image_resolution} does not match dataset {cfg.dataset!r}, whose "
                         f"images are {height}x{height}; use --image-size {height}")


def check_encoder_forward(entry, visual, image_size: int, embed_dim: int):
    """One eval-mode forward of two blank images through a freshly built vision tower, without gradients: a tower
    that cannot run at this size (a plugin's shapes, a heads count that does not divide) fails now, in one line,
    not mid-run. Eval mode and ``no_grad`` leave its state (batch-norm statistics, RNG) untouched."""
    import torch

    was_training = visual.training
    visual.eval()
    try:
        with torch.no_grad():
            features = visual(torch.zeros(2, 3, image_size, image_size))
    except Exception as exc:  # noqa: BLE001 - any failure of the plugin's module is reported as its own
        raise BenchError(f"encoder {entry.name!r} (plugin {entry.plugin!r}) fails on {image_size}-pixel images: "
                         f"{one_line_cause(exc)}; check --image-size and --encoder-opt") from exc
    finally:
        visual.train(was_training)
    if tuple(getattr(features, "shape", ())) != (2, embed_dim):
        raise BenchError(f"encoder {entry.name!r} (plugin {entry.plugin!r}) returns features of shape "
                         f"{tuple(getattr(features, 'shape', ()))} for 2 images; a vision tower must return "
                         f"(N, embed_dim) = (2, {embed_dim})")


def check_encoder_builds(encoder: str, embed_dim: int, image_size: int, opts: dict):
    """Build ``encoder``'s vision tower from the user's options once and run :func:`check_encoder_forward`: what
    a sweep and ``bench throughput`` do for each encoder configuration before the first run or timing starts."""
    from ..host.manager import get_entry

    entry = get_entry("encoders", encoder)
    visual = entry.create(embed_dim, image_size, **{k: v for k, v in opts.items() if v is not None})
    check_encoder_forward(entry, visual, image_size, embed_dim)
