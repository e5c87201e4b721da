"""The checks of every command's options, run before any work: each failure is one BenchError naming the
problem and the fix.

Nothing here writes: the results folder is inspected, not created, so a rejected command leaves every file as
it was. :func:`validate_config` holds the range checks of a run configuration (:class:`bench.config.RunConfig`
is built unchecked), :func:`check_names` the registered names a run looks up, :func:`check_run_inputs` what a
run needs beyond them (folders, encoder options); :func:`check_before_heavy_imports` runs these two before
``bench run`` and ``bench sweep`` import torch and pandas.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from pathlib import Path

from ..atomic_files import check_writable_folder
from ..config import PRESETS, RunConfig
from ..errors import BenchError, UnknownNameError, one_line_cause
from ..host.registry import unknown_name_message

# the largest --lr each optimizer takes: AdamW's steps are lr-sized; SGD's are lr x gradient, and the contrastive
# loss's gradients are small
MAX_LR = {"adamw": 1, "sgd": 100, "muon": 100}
OPTIMIZERS = tuple(MAX_LR)


def parse_seeds(values) -> list[int]:
    """``--seeds`` (bench run and the flags form of bench sweep): distinct integers >= 0."""
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise BenchError(f"--seeds takes integers separated by commas, got {','.join(map(str, values))!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise BenchError(f"--seeds must be distinct integers >= 0, got {','.join(map(str, values))!r}")
    return seeds


def check_preset(preset: str):
    """A preset name typed by the user (a saved run's ``preset`` is only a label of where its recipe came from)."""
    if preset not in PRESETS:
        raise BenchError(unknown_name_message("preset", preset, sorted(PRESETS)))


def validate_config(cfg):
    """Reject values no run can use, before any work starts; returns ``cfg``."""
    px, text = cfg.model.image_resolution, cfg.model.text
    checks = [
        *model_size_checks(px, cfg.model.embed_dim, text.width, text.heads, text.layers),  # first: px is used below
        (cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}"),
        (cfg.batch_size >= 2, f"--batch-size must be at least 2 (a contrastive batch needs negatives), got {cfg.batch_size}"),
        (cfg.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}"),
        (0 < cfg.lr <= MAX_LR.get(cfg.optimizer, 1),
         f"--lr must be in (0, {MAX_LR.get(cfg.optimizer, 1)}]"
         f"{'' if cfg.optimizer == 'adamw' else f' with --optimizer {cfg.optimizer}'}, got {cfg.lr}"),
        (0 <= cfg.momentum < 1, f"--momentum must be in [0, 1), got {cfg.momentum}"),
        (0 < cfg.muon_lr <= 100, f"--muon-lr must be in (0, 100], got {cfg.muon_lr}"),
        (0 <= cfg.muon_momentum < 1, f"--muon-momentum must be in [0, 1), got {cfg.muon_momentum}"),
        (cfg.optimizer == "adamw" or cfg.text_lr is not None,
         f"--optimizer {cfg.optimizer} trains the text tower with AdamW: give its learning rate with --text-lr "
         f"(e.g. 2e-3)"),
        (cfg.text_lr is None or 0 < cfg.text_lr <= 1, f"--text-lr must be in (0, 1] (AdamW), got {cfg.text_lr}"),
        (cfg.text_weight_decay is None or 0 <= cfg.text_weight_decay <= 1,
         f"--text-weight-decay must be in [0, 1], got {cfg.text_weight_decay}"),
        (0 < cfg.norm_lr_scale <= 1000, f"--norm-lr-scale must be in (0, 1000], got {cfg.norm_lr_scale}"),
        (cfg.prewarm_steps >= 0, f"--prewarm-steps must be a number of steps >= 0, got {cfg.prewarm_steps}"),
        (0 <= cfg.lookahead < 1, f"--lookahead must be in [0, 1) (a per-step decay such as 0.95; 0: off), got "
                                 f"{cfg.lookahead}"),
        (0 <= cfg.weight_decay <= 1, f"--weight-decay must be in [0, 1], got {cfg.weight_decay}"),
        (cfg.warmup_steps >= 0, f"--lr-warmup-steps must be >= 0, got {cfg.warmup_steps}"),
        (cfg.limit_train is None or cfg.limit_train >= 1, f"--limit-train must be at least 1, got {cfg.limit_train}"),
        (cfg.limit_test is None or cfg.limit_test >= 1, f"--limit-test must be at least 1, got {cfg.limit_test}"),
        (cfg.eval_every >= 1, f"--eval-every must be at least 1, got {cfg.eval_every}"),
        (cfg.log_every >= 1, f"--log-every must be at least 1, got {cfg.log_every}"),
        (cfg.precision in ("auto", "fp32", "bf16", "fp16"),
         f"--precision must be auto, fp32, bf16 or fp16, got {cfg.precision!r}"),
        (cfg.loss in ("clip", "multipositive"), f"--loss must be clip or multipositive, got {cfg.loss!r}"),
        (0 <= cfg.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}"),
        (0 <= cfg.crop_pad < px, f"--crop-pad must be in [0, {px}) for {px}-pixel images, got {cfg.crop_pad}"),
        (0 <= cfg.cutout <= px, f"--cutout must be in [0, {px}] for {px}-pixel images, got {cfg.cutout}"),
        (cfg.flip in ("random", "alternate"), f"--flip must be random or alternate, got {cfg.flip!r}"),
        (cfg.schedule in ("cosine", "linear"), f"--schedule must be cosine or linear, got {cfg.schedule!r}"),
        (cfg.seed >= 0, f"--seed must be >= 0, got {cfg.seed}"),
        (cfg.seed < 2 ** 32, f"--seed must be below 2**32 = {2 ** 32} (numpy's seed range), got {cfg.seed}"),
        (cfg.robust_limit is None or cfg.robust_limit >= 1, f"--robust-limit must be at least 1, got {cfg.robust_limit}"),
    ]
    for ok, message in checks:
        if not ok:
            raise BenchError(message)
    from ..data.class_split import check_holdout_spec
    from ..data.corruptions import parse_severities
    from ..evaluation import parse_evals
    from ..results.loggers import check_loggers
    from .transfer_spec import parse_transfer

    check_holdout_spec(cfg.holdout_classes)
    parse_transfer(cfg.transfer, cfg.dataset)
    parse_evals(cfg.evals)
    check_target(cfg.target, cfg.stop_at_target, cfg.holdout_classes)
    check_loggers(cfg.log)
    parse_severities(cfg.robust_severities)
    check_device(cfg.device)
    return cfg


def check_target(target, stop_at_target: bool, holdout_classes=()):
    """``--target METRIC=VALUE`` parses (a held-out accuracy only where classes are held out), and
    ``--stop-at-target`` has a target to stop at."""
    from ..evaluation.target import HOLDOUT_TARGET_METRICS, parse_target

    if target is not None:
        metric = parse_target(target).metric
        if metric in HOLDOUT_TARGET_METRICS and not holdout_classes:
            raise BenchError(f"--target {metric}: held-out accuracies are evaluated only with --holdout-classes; "
                             f"add it, or name zeroshot_top1")
    elif stop_at_target:
        raise BenchError("--stop-at-target stops at a target: add --target METRIC=VALUE (e.g. --target "
                         "zeroshot_top1=0.94)")


def model_size_checks(image_size: int, embed_dim: int, text_width: int, text_heads: int,
                      text_layers: int) -> list[tuple[bool, str]]:
    """``(ok, message)`` for the model sizes ``bench run`` and ``bench throughput`` both take from flags."""
    return [
        (image_size >= 8, f"--image-size must be at least 8, got {image_size}"),
        (embed_dim >= 1, f"--embed-dim must be at least 1, got {embed_dim}"),
        (text_width >= 1, f"--text-width must be at least 1, got {text_width}"),
        (text_heads >= 1, f"--text-heads must be at least 1, got {text_heads}"),
        (text_width % max(text_heads, 1) == 0,
         f"--text-width ({text_width}) must be a multiple of --text-heads ({text_heads})"),
        (text_layers >= 1, f"--text-layers must be at least 1, got {text_layers}"),
    ]


def check_device(name: str):
    if not (name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise BenchError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def check_names(cfg: RunConfig):
    """Resolve every registered name first, so a typo fails before any data is read."""
    from ..host.manager import get_entry
    from .transfer_spec import check_transfer_names, parse_transfer

    for kind, name in (("encoders", cfg.model.encoder), ("tokenizers", cfg.tokenizer), ("templates", cfg.templates),
                       ("datasets", cfg.dataset)):
        get_entry(kind, name)
    check_transfer_names(parse_transfer(cfg.transfer, cfg.dataset))


def check_before_heavy_imports(cfgs):
    """What ``bench run`` and ``bench sweep`` refuse before torch and pandas load: each configuration's names
    (:func:`check_names`), then :func:`check_run_inputs` but the results folder's (pandas reads its runs.csv). The
    run, or the plan, checks all of it again in the same order, the folder included: a bad option gets the line it
    got before, without the seconds of torch's import first."""
    for cfg in cfgs:
        check_names(cfg)
        check_run_inputs(cfg, out=None)


def check_run_inputs(cfg, out: str | None = "write"):
    """Everything a run's options must pass before it starts: :func:`validate_config`, then checkpoint options,
    encoder options, logger packages and folders; the results folder (:func:`check_results_folder`) one the command will
    ``"write"`` into or only ``"read"`` (``--dry-run``, ``--status``), or ``None``: not checked here."""
    validate_config(cfg)
    if cfg.checkpoint_every < 0:
        raise BenchError(f"--checkpoint-every must be >= 0 steps (0 = only at the end of each epoch), "
                         f"got {cfg.checkpoint_every}")
    if cfg.max_grad_norm is not None and not (cfg.max_grad_norm > 0 and math.isfinite(cfg.max_grad_norm)):
        raise BenchError(f"--max-grad-norm must be a positive number, got {cfg.max_grad_norm}; leave it out to not clip")
    check_encoder_opts(cfg.model.encoder, dict(cfg.model.encoder_opts))
    check_data_opts(cfg.dataset, dict(cfg.data_opts))
    from ..results.loggers import check_logger_packages

    check_logger_packages(cfg.log)
    check_data_dir(cfg.data_dir)
    if out is not None:
        check_results_folder(cfg.out, writes=out == "write")


def check_encoder_opts(encoder: str, opts: dict):
    """Unknown ``--encoder-opt`` keys fail here, not as a TypeError deep inside the model constructor."""
    _check_factory_options("encoders", encoder, ("embed_dim", "image_size"), opts, "--encoder-opt")


def check_data_opts(dataset: str, opts: dict):
    """``--data-opt`` keys the dataset's factory does not take fail here, in one line naming the ones it does."""
    _check_factory_options("datasets", dataset, ("split", "data_dir", "seed"), opts, "--data-opt")


def _check_factory_options(kind: str, name: str, leading: tuple, opts: dict, flag: str):
    """``opts`` bind to the registered factory after its ``leading`` positional arguments, or one line names the
    first unknown key and the options the factory takes."""
    from ..host.manager import get_entry

    if not opts:
        return
    factory = get_entry(kind, name).factory
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C factory: nothing to check against
        return
    try:
        signature.bind_partial(*leading, **opts)
    except TypeError:
        accepted = [p.name for p in list(signature.parameters.values())[len(leading):]
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in opts if k not in accepted]
        raise BenchError(f"{kind[:-1]} {name!r} takes no option {unknown[0] if unknown else ''!r}; its options are "
                         f"{', '.join(accepted) or 'none'} ({flag} KEY=VALUE)") from None


def check_data_dir(data_dir):
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise BenchError(f"--data-dir {str(data_dir)!r} is not a folder; pass the folder that holds the dataset "
                         f"(CIFAR-10: train.npz/test.npz or cifar-10-batches-py/; the others: bench list datasets)")


def check_results_folder(out, writes: bool = True) -> Path:
    """The results folder (or the nearest folder above it that exists) is a folder, writable where the command
    ``writes`` (``--dry-run`` and ``--status`` only read), and a runs.csv already in it is a results table. Damaged
    rows in it are reported now, not after hours of training."""
    from ..results.runs_csv import read_table

    out = check_writable_folder(out, writes=writes)
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
    """The model is built for ``--image-size``; the dataset's images are resized to it once, at load
    (:mod:`bench.data.resize`), so they must be square and not too far below it."""
    from ..data.resize import check_resizable

    check_resizable(data, cfg.model.image_resolution, cfg.dataset)


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
    if not isinstance(features, torch.Tensor) or tuple(features.shape) != (2, embed_dim):
        got = (f"features of shape {tuple(features.shape)}" if isinstance(features, torch.Tensor)
               else type(features).__name__)
        raise BenchError(f"encoder {entry.name!r} (plugin {entry.plugin!r}) returns {got} for 2 images; a vision "
                         f"tower must return features (N, embed_dim) = (2, {embed_dim})")
    if features.dtype != torch.float32:  # the text tower's are float32: the loss would fail on the first step
        raise BenchError(f"encoder {entry.name!r} (plugin {entry.plugin!r}) returns {features.dtype} features for "
                         f"float32 images; a vision tower returns float32 (autocast makes it bf16 where asked)")


def check_prompt_tokens(tokens, tokenizer, entry, rows: int, templates, classes):
    """The prompt table a run trains on (``templates`` filled with ``classes``, tokenized by ``tokenizer``, which
    registered ``entry`` made), against what its text tower reads: every id below the token embedding's ``rows``
    (an index past it fails mid-step), and each prompt's end token as its largest id, since the tower pools a text
    at its ``argmax`` (features read at another token train silently wrong)."""
    from ..clip.templates import fill

    who = f"tokenizer {entry.name!r} (plugin {entry.plugin!r})"
    low, top = int(tokens.min()), int(tokens.max())
    if top >= rows or low < 0:
        raise BenchError(f"{who} gives id {top if top >= rows else low}, outside the text tower's "
                         f"{rows} token-embedding rows (CLIP's BPE vocabulary); its ids must be in 0..{rows - 1}")
    eot = getattr(tokenizer, "eot_token_id", None)
    if not isinstance(eot, numbers.Integral):
        raise BenchError(f"{who} has eot_token_id={eot!r}; a tokenizer names its end token as an integer "
                         f"(docs/plugins.md)")
    wrong = (tokens.gather(1, tokens.argmax(dim=1, keepdim=True)).squeeze(1) != eot).nonzero()
    if len(wrong):
        prompt = fill(templates, classes)[int(wrong[0])]  # the table's row order
        raise BenchError(f"{who}: the largest id of prompt {prompt!r} is not its end token "
                         f"(eot_token_id {eot}); the text tower pools a text at its largest id, so a tokenizer's end "
                         f"token must have the largest id (bench.testing.check_tokenizer)")


def check_encoder_builds(encoder: str, embed_dim: int, image_size: int, opts: dict):
    """Build ``encoder``'s vision tower from the user's options once and run :func:`check_encoder_forward`: what
    a sweep and ``bench throughput`` do for each encoder configuration before the first run or timing starts."""
    from ..host.manager import get_entry

    entry = get_entry("encoders", encoder)
    visual = entry.create(embed_dim, image_size, **{k: v for k, v in opts.items() if v is not None})
    check_encoder_forward(entry, visual, image_size, embed_dim)


def saved_config(ckpt: dict, path) -> RunConfig:
    """The run configuration a checkpoint holds; a damaged one (unreadable, or a value of the wrong type) is a
    one-line error naming the file."""
    try:
        cfg = RunConfig.from_dict(ckpt["config"])
        problem = _mistyped(cfg)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        raise BenchError(f"{path} holds a damaged run configuration ({problem}); use another checkpoint of the run "
                         f"(best.pt or last.pt) or retrain")
    return cfg


# what each registry kind a saved run resolves is called in its configuration
SAVED_NAMES = {"encoders": lambda cfg: cfg.model.encoder, "tokenizers": lambda cfg: cfg.tokenizer,
               "templates": lambda cfg: cfg.templates, "datasets": lambda cfg: cfg.dataset}


def check_saved_names(cfg: RunConfig, path, kinds=tuple(SAVED_NAMES)):
    """Each of ``kinds`` that the run saved in ``path`` used is registered now. One that is not was most likely
    registered by a plugin this process did not load, so the error says to load it, not only that it is unknown."""
    from ..host.manager import get_entry

    for kind in kinds:
        try:
            get_entry(kind, SAVED_NAMES[kind](cfg))
        except UnknownNameError as exc:
            raise UnknownNameError(f"{exc}; the run in {path} used it: load the plugin that registers it (bench "
                                   f"--plugins-dir DIR or bench -p MODULE before the command, or install its "
                                   f"package; bench plugins lists those loaded)") from None


def _mistyped(cfg) -> str | None:
    """The first setting of ``cfg`` (nested configs too) whose value is not of its default's kind, as ``name=value``."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            inner = _mistyped(value)
            if inner:
                return f"{f.name}.{inner}"
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is None or value is None:
            continue
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float))
        else:
            ok = isinstance(value, type(default))
        if not ok:
            return f"{f.name}={value!r}"
    return None
