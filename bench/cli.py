"""The ``bench`` command line: a thin click layer over the library; errors become one line and exit 2."""
from __future__ import annotations

import atexit
import contextlib
import gc
import json
import sys
from pathlib import Path

import click

from .errors import BenchError, Interrupted


def _split(ctx, param, value):
    return [v for part in value for v in part.split(",") if v] if value else []


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="bench", prog_name="bench")
@click.option("--plugins-dir", "plugins_dirs", multiple=True, type=click.Path(),
              help="Load every .py file / package in DIR as a plugin (also BENCH_PLUGINS_DIR).")
@click.option("-p", "--plugin", "plugin_modules", multiple=True, help="Import MODULE (on sys.path) as a plugin.")
def cli(plugins_dirs, plugin_modules):
    """Train CLIP models on CIFAR-10 and compare them zero-shot."""


@cli.command()
@click.option("--encoder", help="Vision encoder (bench list encoders); default: the preset's, else modified_resnet.")
@click.option("--encoder-opt", "encoder_opts", multiple=True, metavar="KEY=VALUE", help="Encoder factory option.")
@click.option("--preset", default="reference", show_default=True,
              help="Recipe: reference (the spec's), smoke, fast (airbench encoder, batch 1024, for GPUs) or fast96 "
                   "(airbench96's tower).")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--weight-decay", type=float)
@click.option("--warmup-steps", type=int)
@click.option("--loss", type=click.Choice(["clip", "multipositive"]))
@click.option("--label-smoothing", type=float, help="Mix each target with the uniform one over the batch (default 0).")
@click.option("--crop-pad", type=int, help="Zero padding of the random crop, in pixels (default 4; 0: flip only).")
@click.option("--cutout", type=int, help="Blank one random square of this side in each training image (default 0: off).")
@click.option("--flip", type=click.Choice(["random", "alternate"]),
              help="Horizontal flips: random each epoch, or alternate (each epoch flips the images the last did not).")
@click.option("--schedule", type=click.Choice(["cosine", "linear"]),
              help="Learning-rate decay after the warm-up, to zero (default cosine).")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd", "muon"]),
              help="adamw (default), or sgd: the vision tower on Nesterov SGD with decoupled lr, momentum and decay "
                   "(airbench's), the rest on AdamW at --text-lr; muon: as sgd, its conv filters on Muon.")
@click.option("--momentum", type=float, help="--optimizer sgd's Nesterov momentum (default 0.85).")
@click.option("--muon-lr", type=float, help="--optimizer muon: the conv filters' lr (default 0.24).")
@click.option("--muon-momentum", type=float, help="--optimizer muon: the conv filters' momentum (default 0.6).")
@click.option("--text-lr", type=float, help="AdamW lr of all but the vision tower (default --lr; needed with sgd).")
@click.option("--text-weight-decay", type=float, help="Weight decay of all but the vision tower (default --weight-decay).")
@click.option("--norm-lr-scale", type=float,
              help="Learning-rate multiplier of the vision tower's normalisation parameters, decay unchanged "
                   "(default 1).")
@click.option("--warm-up", type=int,
              help="Train this many steps of a throwaway copy on random images first (compilation, autotuning), "
                   "outside train_seconds; results unchanged (default 0: off).")
@click.option("--lookahead", type=float,
              help="airbench's lookahead: per-step EMA decay the weights are pulled to, ramped up to the end, where "
                   "the run takes the average (e.g. 0.95; default 0: off).")
@click.option("--templates", default="seed", show_default=True)
@click.option("--tokenizer", default="clip_bpe", show_default=True)
@click.option("--dataset", default="cifar10", show_default=True)
@click.option("--data-dir", help="Dataset folder (CIFAR-10: train.npz/test.npz or cifar-10-batches-py/).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit-train", type=int, help="Train on the first N images.")
@click.option("--limit-test", type=int, help="Evaluate on the first N test images.")
@click.option("--eval-every", type=int, default=1, show_default=True)
@click.option("--log-every", type=int, default=50, show_default=True)
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile the two towers (on CUDA inside the step's CUDA graph; compile time counts as "
                   "training time unless --warm-up compiles first).")
@click.option("--embed-dim", type=int, help="Joint embedding width (default 512).")
@click.option("--image-size", type=int, help="Input resolution (default 32).")
@click.option("--text-width", type=int, help="Text Transformer width (default 512).")
@click.option("--text-layers", type=int, help="Text Transformer layers (default 6).")
@click.option("--text-heads", type=int, help="Text Transformer heads (default 8).")
@click.option("--checkpoints/--no-checkpoints", default=True, show_default=True, help="Keep best.pt and last.pt.")
@click.option("--progress/--no-progress", default=None, help="tqdm bars (default: only on a terminal).")
@click.option("--out", default="results", show_default=True, help="Results folder.")
@click.option("--sync-bn/--no-sync-bn", default=True, show_default=True,
              help="Under torchrun: batch norm statistics over all ranks' images (docs/distributed.md).")
@click.option("--checkpoint-every", type=int, help="Also save last.pt every N steps (default 0: each epoch only).")
@click.option("--max-grad-norm", type=float, help="Clip the global gradient norm to this value (default: no clip).")
@click.option("--resume", metavar="RUN_ID|RUN_DIR|latest", help="Continue a stopped run from its last.pt.")
@click.option("--seeds", callback=_split, multiple=True,
              help="Repeat for each seed, comma-separated (replaces --seed); prints mean ± std.")
@click.option("--evals", callback=_split, multiple=True,
              help="After training also run: retrieval, probe, robustness (comma-separated).")
@click.option("--robust-limit", type=int, help="Robustness on the first N test images (default: all).")
@click.option("--robust-severities", callback=_split, multiple=True, help="Corruption severities (default 1,2,3,4,5).")
@click.option("--cuda-graph/--no-cuda-graph", default=None,
              help="On CUDA, replay the training step as one captured CUDA graph (default: on).")
@click.option("--tower-streams/--no-tower-streams", default=None,
              help="On CUDA, run the image and text towers concurrently on two streams (default: on).")
@click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=None,
              help="On CUDA, autotune each convolution shape once (default: on; off saves the first steps' tuning).")
@click.option("--compact-embedding/--no-compact-embedding", default=None,
              help="Train only the token-embedding rows the prompts use; exact (default: on).")
@click.option("--log", callback=_split, multiple=True,
              help="Live curves: tensorboard, wandb (comma-separated; pip install 'bench[tensorboard]' / 'bench[wandb]').")
@click.option("--wandb-project", help="W&B project (default: WANDB_PROJECT, else bench).")
@click.option("--wandb-entity", help="W&B entity (default: WANDB_ENTITY, else your default).")
@click.option("--deterministic/--no-deterministic", default=None,
              help="Bit-identical reruns on CUDA: deterministic kernels only (slower); CPU runs are bit-identical "
                   "without it (default: off).")
def run(seeds, resume, **flags):
    """Train a CLIP, evaluate it zero-shot each epoch and append a row to OUT/runs.csv."""
    with _imports_without_gc():
        from .app.run import run as run_training

    if resume is not None:
        from .app.resume import ALLOWED_WITH_RESUME, resume_run

        ctx = click.get_current_context()
        given = [p.name for p in ctx.command.params if p.name != "resume"
                 and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
        row, out = resume_run(resume, flags["out"], given, {k: flags[k] for k in ALLOWED_WITH_RESUME})
        _echo_run(row, out)
        return
    cfg = _config_from_flags(**flags)
    if not seeds:
        _echo_run(run_training(cfg), cfg.out)
        return
    from dataclasses import replace

    from .app.sweep.plan import parse_seeds

    cfgs = [replace(cfg, seed=s) for s in parse_seeds(seeds)]
    rows = [_echo_run(run_training(c), c.out) for c in cfgs]
    _echo_summary(rows)


def _config_from_flags(encoder, encoder_opts, preset, embed_dim, image_size, text_width, text_layers, text_heads,
                       compile_, checkpoints, evals, robust_severities, log, **flags):
    """The frozen run config from ``bench run``'s flags (shared by ``bench sweep``)."""
    from .config import make_config, parse_opts
    from .data.corruptions import parse_severities

    model = dict(encoder=encoder, encoder_opts=parse_opts(encoder_opts), embed_dim=embed_dim,
                 image_resolution=image_size, width=text_width, layers=text_layers, heads=text_heads)
    return make_config(preset, model=model, compile=compile_, save_checkpoints=checkpoints, evals=tuple(evals),
                       log=tuple(log),
                       robust_severities=parse_severities(robust_severities), **flags)


def _echo_run(row, out):
    """One line per finished run (rank 0 only under torchrun)."""
    from .distributed.world import is_main_process

    if is_main_process():
        ranks = f" on {row['world_size']} ranks" if row.get("world_size", 1) > 1 else ""
        click.echo(f"run {row['run_id']}: zero-shot top-1 {row['zeroshot_top1']:.4f}, "
                   f"top-5 {row['zeroshot_top5']:.4f}, mean per-class recall {row['mean_per_class_recall']:.4f}, "
                   f"{row['train_images_per_s']:.0f} images/s over {row['train_seconds']:.1f} s{ranks} -> {out}/runs.csv")
    return row


def _echo_summary(rows):
    """Mean ± std over seeds of the headline metrics, one line per configuration."""
    import pandas as pd

    from .results.columns import SUMMARY_METRICS
    from .results.views import aggregate, fmt_value

    table = aggregate(pd.DataFrame(rows))
    metrics = [m for m in SUMMARY_METRICS if m in table.columns.str.removesuffix("_mean")]
    for _, r in table.iterrows():
        parts = [f"{m} {fmt_value(r[f'{m}_mean'], m, r[f'{m}_std'])}" for m in metrics]
        click.echo(f"{r.get('encoder', '')} / {r.get('templates', '')} over {int(r['n'])} seeds: " + ", ".join(parts))


def sweep(file, encoder, templates, seeds, skip_existing, dry_run, status, concurrent, workers, gpus, launcher,
          gpus_per_run, ray_address, slurm, **flags):
    """Run a sweep: FILE.toml's plan (docs/sweeps.md), or the cross product --encoder x --templates x --seeds.

    Every run has a fixed id in OUT/runs/, so the same command again skips finished runs and continues
    stopped ones from their last.pt. --concurrent K trains K runs at once on one device; --workers/--gpus
    start one worker per device; --launcher ray|slurm spreads the runs over a cluster. Takes every flag of
    `bench run`, which override FILE's [base].
    """
    import os

    from .app.sweep.plan import cross_product, parse_seeds, plan, plan_lines

    ctx = click.get_current_context()
    given = {p.name for p in ctx.command.params if ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE}
    settings, slurm_table = {}, {}
    if file is not None:
        if encoder or templates or seeds:
            raise BenchError("--encoder, --templates and --seeds form a sweep without a file; with FILE, put them "
                             "in its [grid]")
        from .app.sweep.toml_file import read_sweep_file, varying_keys

        spec = read_sweep_file(file)
        settings, slurm_table = spec.sweep, spec.slurm
        keys = varying_keys(spec.points)
        cfgs = [_config_from_point(spec.path, point, flags, given, keys) for point in spec.points]
        varying = [{k: p[k] if k in p else _effective(c, k) for k in keys} for p, c in zip(spec.points, cfgs)]
    else:
        if not encoder:
            raise BenchError("--encoder is empty; name one or more encoders, comma-separated (bench list encoders), "
                             "or pass a sweep file")
        base = _config_from_flags(encoder=encoder[0], templates=templates[0] if templates else "seed", seed=0, **flags)
        cfgs = cross_product(base, encoder, templates, parse_seeds(seeds) if seeds else [0])
        varying = [{"encoder": c.model.encoder, "templates": c.templates, "seed": c.seed} for c in cfgs]
        shown = [k for k in ("encoder", "templates", "seed") if len({v[k] for v in varying}) > 1] or ["encoder", "seed"]
        varying = [{k: v[k] for k in shown} for v in varying]
    planned = plan(cfgs, varying)
    if dry_run or status:
        for line in plan_lines(planned):
            click.echo(line)
        return
    opts = {name: value for name, value in (("concurrent", concurrent), ("workers", workers), ("gpus", gpus),
                                             ("launcher", launcher), ("gpus_per_run", gpus_per_run),
                                             ("ray_address", ray_address)) if name in given}
    settings = {**settings, **opts}
    slurm_table = {**slurm_table, **dict(_slurm_pairs(slurm))}
    from .app.sweep.launchers import launch

    in_worker = "BENCH_SWEEP_WORKER" in os.environ  # a worker that --workers/--gpus started: its share only
    outcomes = launch(planned, settings, slurm_table, argv=_ARGV, in_worker=in_worker, echo=click.echo,
                      plugins=_plugin_args(_ARGV))
    if in_worker:
        return
    from .results.columns import config_key
    from .results.runs_csv import read_runs

    keys = {(config_key(p.cfg), p.cfg.seed) for p in planned}
    table = read_runs(planned[0].out)
    if len(table) and "config_id" in table.columns:
        mine = [r for r in table.to_dict("records") if (r.get("config_id"), r.get("seed")) in keys]
        if mine:
            _echo_summary(mine)
    failed = [o for o in outcomes if o.status == "failed"]
    unfinished = [o for o in outcomes if o.status == "unfinished"]
    if failed:
        click.echo(f"bench: {len(failed)} of {len(planned)} runs failed (errors in {planned[0].out}/sweep/failed/); "
                   f"fix the cause and run the same command again to retry them", err=True)
    if unfinished:
        why = f" ({unfinished[0].error})" if unfinished[0].error else ""
        click.echo(f"bench: {len(unfinished)} of {len(planned)} runs unfinished{why}; run the same command again to "
                   f"continue them", err=True)
    if failed or unfinished:
        sys.exit(1)


def _config_from_point(path, point: dict, flags: dict, given: set, varying: list):
    """One run's config: ``bench run``'s defaults < the sweep file's point < flags typed on the command line."""
    import difflib

    by_key = {_option_key(p): p for p in _SWEEP_RUN_PARAMS}
    values = dict(flags)
    values.update(encoder=None, templates="seed", seed=0)
    ctx = click.get_current_context()
    for key, value in point.items():
        param = by_key.get(key)
        if param is None:
            close = difflib.get_close_matches(key, list(by_key), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise BenchError(f"{path}: unknown option {key!r}; {hint}a sweep file takes `bench run` options by their "
                             f"long names with underscores (bench run --help)")
        if param.name in given:
            if key in varying:
                raise BenchError(f"{path} sweeps {key}, and --{key.replace('_', '-')} was given too; drop one")
            continue
        values[param.name] = _convert(path, key, param, value, ctx)
    return _config_from_flags(**values)


def _effective(cfg, key: str):
    """The value a run got for option ``key`` that its sweep-file point left out (the preset's or the default)."""
    names = {"text_width": "width", "text_layers": "layers", "text_heads": "heads", "image_size": "image_resolution"}
    for obj in (cfg, cfg.model, cfg.model.text):
        if hasattr(obj, names.get(key, key)):
            return getattr(obj, names.get(key, key))
    return "default"


def _option_key(param) -> str:
    return max(param.opts, key=len).lstrip("-").replace("-", "_") if param.name not in ("encoder", "templates", "seed") \
        else param.name


def _convert(path, key: str, param, value, ctx):
    """A sweep file's TOML value as the flag's own type would read it from the command line."""
    if key == "encoder_opt":
        if isinstance(value, dict):
            return [f"{k}={json.dumps(v)}" for k, v in value.items()]
        return [value] if isinstance(value, str) else [str(v) for v in value]
    if param.multiple:
        return [v for v in value.split(",") if v] if isinstance(value, str) else [str(v) for v in value]
    if getattr(param, "is_flag", False) and not isinstance(value, bool):
        raise BenchError(f"{path}: {key} = {value!r} must be true or false")
    try:
        return param.type.convert(value, param, ctx)
    except click.BadParameter as exc:
        raise BenchError(f"{path}: {key} = {value!r}: {exc.format_message()}") from None


def _slurm_pairs(values):
    for pair in values:
        if "=" not in pair:
            raise BenchError(f"--slurm {pair!r} is not KEY=VALUE; write it like --slurm partition=gpu")
        key, value = pair.split("=", 1)
        try:
            yield key.strip(), json.loads(value)
        except json.JSONDecodeError:
            yield key.strip(), value


_SWEEP_RUN_PARAMS: list = []  # bench run's options that a sweep takes per run (filled below)


def _sweep_command() -> click.Command:
    """``bench sweep`` takes ``bench run``'s flags, with --encoder, --templates and --seeds as comma lists."""
    lists = [
        click.Argument(["file"], required=False, type=click.Path()),
        click.Option(["--encoder"], callback=_split, multiple=True,
                     help="Vision encoders, comma-separated (bench list encoders), without FILE."),
        click.Option(["--templates"], callback=_split, multiple=True, help="Template sets, comma-separated [seed]."),
        click.Option(["--seeds"], callback=_split, multiple=True, help="Seeds, comma-separated [0]."),
        click.Option(["--skip-existing"], is_flag=True, hidden=True, help="Kept for old scripts: now always so."),
        click.Option(["--dry-run"], is_flag=True, help="Print the plan (each run's id, state and what varies); run nothing."),
        click.Option(["--status"], is_flag=True, help="Print where each run of the plan stands (as --dry-run)."),
        click.Option(["--concurrent"], type=int, default=1, show_default=True,
                     help="Runs trained at once in one process on one device (own CUDA stream and graph each)."),
        click.Option(["--workers"], type=int, help="Worker processes on this machine (default: one per --gpus)."),
        click.Option(["--gpus"], help="GPUs for one worker each: 0,1,... or all (default: all visible, if several)."),
        click.Option(["--launcher"], type=click.Choice(["local", "ray", "slurm"]), default="local", show_default=True,
                     help="ray: each run a Ray task; slurm: a submitit job array (docs/sweeps.md)."),
        click.Option(["--gpus-per-run"], type=float, help="Ray: GPUs (or a fraction) per run [1 with GPUs, else 0]."),
        click.Option(["--ray-address"], help="Ray: an existing cluster (default: a local Ray for this sweep)."),
        click.Option(["--slurm"], multiple=True, metavar="KEY=VALUE",
                     help="Slurm/submitit setting, repeatable: partition, time_min, gpus_per_job, runs_per_job, "
                          "cluster=local, ... (also FILE's [slurm])."),
    ]
    shared = [p for p in run.params if p.name not in {"encoder", "templates", "seed", "seeds", "resume"}]
    _SWEEP_RUN_PARAMS[:] = shared + [p for p in run.params if p.name in {"encoder", "templates", "seed"}]
    return click.Command("sweep", params=lists + shared, callback=sweep, help=sweep.__doc__,
                         short_help="Run a sweep file's plan, or encoders x template sets x seeds.")


cli.add_command(_sweep_command())


@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path(), required=False)
@click.option("--open-clip", "open_clip_model", metavar="MODEL",
              help="Evaluate this open_clip model (a name from open_clip.list_models(), or a model config .json) "
                   "instead of a checkpoint.")
@click.option("--pretrained", metavar="TAG_OR_FILE",
              help="With --open-clip: an open_clip pretrained tag (downloaded by open_clip) or a local weights file.")
@click.option("--results", "results_dir", default="results", show_default=True,
              help="With --open-clip: the results folder whose runs.csv gets one row per template set.")
@click.option("--templates", callback=_split, multiple=True, help="Template sets, comma-separated (default: the run's).")
@click.option("--dataset", help="Dataset (default: the run's).")
@click.option("--data-dir")
@click.option("--limit-test", type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown", show_default=True)
@click.option("--per-template", is_flag=True, help="Also one row per single template of each set.")
@click.option("--evals", callback=_split, multiple=True, help="Also: retrieval, probe, robustness (comma-separated).")
@click.option("--robust-limit", type=int, help="Robustness on the first N test images (default: all).")
@click.option("--robust-severities", callback=_split, multiple=True, help="Corruption severities (default 1,2,3,4,5).")
@click.option("--out", type=click.Path(), help="Also write eval.csv, per-class accuracy and confusion matrices here.")
def eval_(checkpoint, open_clip_model, pretrained, results_dir, templates, dataset, data_dir, limit_test, device, fmt,
          per_template, evals, robust_limit, robust_severities, out):
    """Re-evaluate CHECKPOINT zero-shot: one row per template set (with its protocol).

    CHECKPOINT is a bench run's last.pt/best.pt or an OpenAI-format state dict (OpenAI's preprocessing). With
    --open-clip MODEL --pretrained TAG_OR_FILE, a pretrained open_clip model is evaluated the same way, with its
    own preprocessing, and recorded in --results' runs.csv next to trained runs.
    """
    from .data.corruptions import parse_severities
    from .evaluation import parse_evals
    from .evaluation.suite import SuiteOptions

    if (checkpoint is None) == (open_clip_model is None):
        raise BenchError("bench eval takes a CHECKPOINT or --open-clip MODEL --pretrained TAG_OR_FILE (one of them)")
    if pretrained is not None and open_clip_model is None:
        raise BenchError("--pretrained goes with --open-clip MODEL; a bench checkpoint is given as CHECKPOINT")
    if robust_limit is not None and robust_limit < 1:
        raise BenchError(f"--robust-limit must be at least 1, got {robust_limit}")
    suite = SuiteOptions(evals=parse_evals(evals), robust_limit=robust_limit,
                         robust_severities=parse_severities(robust_severities))
    common = dict(templates=templates or None, data_dir=data_dir, limit_test=limit_test, device=device,
                  per_template=per_template, suite=suite, out=out)
    if open_clip_model is not None:
        from .app.evaluate_pretrained import evaluate_open_clip

        table = evaluate_open_clip(open_clip_model, pretrained, dataset=dataset or "cifar10", results=results_dir,
                                   **common)
        click.echo(_format(table, fmt))
        click.echo(f"{len(set(table['templates']))} row(s) -> {Path(results_dir) / 'runs.csv'}", err=True)
        return
    from .app.evaluate import evaluate_checkpoint

    table = evaluate_checkpoint(checkpoint, dataset=dataset, **common)
    click.echo(_format(table, fmt))


# --- result tables: bench results, bench compare, bench report ----------------------------------------------
@cli.command(name="results")
@click.argument("sources", nargs=-1)
@click.option("--results", "results_dir", default="results", show_default=True,
              help="Results folder read when no SOURCE is given, and where run ids are looked up.")
@click.option("--where", "wheres", multiple=True, metavar="COL=VALUE",
              help="Keep rows where COL=VALUE (also !=, >, <, >=, <=; VALUE may be a,b); repeatable.")
@click.option("--sort", "sort_by", help="Sort by this column (metrics best first).")
@click.option("--ascending/--descending", default=None, help="Override the sort direction.")
@click.option("--columns", callback=_split, multiple=True, help="Columns to show, comma-separated.")
@click.option("--aggregate", "aggregate_", is_flag=True, help="One row per configuration: mean ± std over seeds.")
@click.option("--long", "long_", is_flag=True, help="The tidy long table: one row per run x metric.")
@click.option("--limit", type=int, help="Show at most N rows.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown", show_default=True)
@click.option("--rebuild", is_flag=True,
              help="Rebuild --results' runs.csv from its runs' records (runs/*/result.json), then print it.")
def results(sources, results_dir, wheres, sort_by, ascending, columns, aggregate_, long_, limit, fmt, rebuild):
    """Print result tables (SOURCES: results folders, runs.csv files, run folders or run ids; default --results)."""
    from .app.validation import check_positive
    from .results.lookup import combine, load_sources
    from .results.views import display_table

    check_positive("--limit", limit)
    if rebuild:
        from .results.runs_csv import rebuild_runs

        if not (Path(results_dir) / "runs").is_dir():
            raise BenchError(f"{results_dir} has no runs/ folder to rebuild runs.csv from; pass the results folder "
                             f"with --results")
        done = rebuild_runs(results_dir)
        kept = f", the old table kept as {done['backup'].name}" if done["backup"] else ""
        click.echo(f"rebuilt {results_dir}/runs.csv: {done['rows']} runs, {done['added']} added from records, "
                   f"{done['dropped']} dropped (damaged or repeated){kept}", err=True)
    if not sources and not (Path(results_dir) / "runs.csv").is_file():
        raise BenchError(f"no results table at {results_dir}/runs.csv; run `bench run` first, or pass a results "
                         f"folder, results file, run folder or run id")
    table = combine(load_sources(sources or [results_dir], results_dir)).table
    shown = display_table(table, wheres=wheres, sort_by=sort_by, descending=None if ascending is None else not ascending,
                          columns=columns, aggregate_=aggregate_, long_=long_, limit=limit, pretty=fmt == "markdown")
    # numbers are already formatted (42.0 stays 42.0): stop tabulate from re-parsing them
    click.echo(shown.to_markdown(index=False, disable_numparse=True) if fmt == "markdown" else _format(shown, fmt))


@cli.command(name="compare")
@click.argument("sides", nargs=-1, required=True)
@click.option("--results", "results_dir", default="results", show_default=True, help="Where run ids are looked up.")
@click.option("--split-by", help="Split the runs of all SIDES by this column instead (e.g. encoder).")
@click.option("--on", callback=_split, multiple=True, help="Join on these configuration columns (default: automatic).")
@click.option("--where", "wheres", multiple=True, metavar="COL=VALUE", help="Filter every side first; repeatable.")
@click.option("--metrics", callback=_split, multiple=True, help="Metrics to compare (default: all shared).")
@click.option("--fail-on", "fail_on", multiple=True, metavar="METRIC:DELTA",
              help="Exit 1 when a candidate's difference passes DELTA (accuracies in points): e.g. zeroshot_top1:-0.5.")
@click.option("--fail-on-significant", is_flag=True,
              help="With --fail-on: fail only on differences past DELTA that are also significant.")
@click.option("--alpha", type=float, default=0.05, show_default=True,
              help="Significance level: p < alpha is significant.")
@click.option("--correct", type=click.Choice(["none", "holm"]), default="none", show_default=True,
              help="Adjust p-values across the metrics of each comparison (holm: family-wise error rate).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown", show_default=True)
def compare_(sides, results_dir, split_by, on, wheres, metrics, fail_on, fail_on_significant, alpha, correct, fmt):
    """Compare runs A B [C...] side by side: the first is the baseline; configurations are joined, seeds pooled.

    Differences get Welch's t-test over seeds and, for zero-shot top-1, a paired test over the test images
    (docs/evaluation.md).
    """
    from .results.compare import (
        check_alpha,
        compare,
        parse_fail_on,
        render_markdown,
        split_sides,
    )
    from .results.lookup import load_sources
    from .results.views import filter_rows

    thresholds = parse_fail_on(fail_on)
    check_alpha(alpha)
    if fail_on_significant and not thresholds:
        raise BenchError("--fail-on-significant refines --fail-on; add a threshold, e.g. --fail-on zeroshot_top1:0 "
                         "--fail-on-significant to fail on any significant drop of top-1")
    sources = load_sources(sides, results_dir)
    for source in sources:
        source.table = filter_rows(source.table, wheres)
    result = compare(split_sides(sources, split_by), metrics=metrics or None, on=on or None, fail_on=thresholds,
                     alpha=alpha, correct=correct, fail_on_significant=fail_on_significant)
    for warning in result.warnings:
        click.echo(f"bench: warning: {warning}", err=True)
    click.echo(render_markdown(result) if fmt == "markdown" else _format(result.rows, fmt))
    if result.failures:
        for failure in result.failures:
            click.echo(f"bench: compare failed: {failure}", err=True)
        sys.exit(1)


@cli.command(name="report")
@click.argument("runs", nargs=-1)
@click.option("--out", required=True, type=click.Path(), help="Folder for report.md and the figures.")
@click.option("--results", "results_dir", default="results", show_default=True,
              help="Results folder used when no RUNS are given, and where run ids are looked up.")
@click.option("--where", "wheres", multiple=True, metavar="COL=VALUE", help="Report only matching runs; repeatable.")
@click.option("--title", help="Report title.")
def report(runs, out, results_dir, wheres, title):
    """Write a markdown report with figures for RUNS (results folders, files, run folders or run ids)."""
    from .results.lookup import combine, load_sources
    from .results.report import build_report
    from .results.views import filter_rows

    source = combine(load_sources(runs or [results_dir], results_dir))
    source.table = filter_rows(source.table, wheres)
    paths = build_report([source], out, title=title)
    click.echo(f"wrote {paths[0]} and {len(paths) - 1} figures")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=int, default=3, show_default=True)
@click.option("--templates", help="Template set for the classifier (default: the run's).")
@click.option("--device", default="auto", show_default=True)
def predict(checkpoint, images, top_k, templates, device):
    """Print the top classes of each image file (any size; resized to the model's input)."""
    from .app.evaluate import predict_images

    for path, ranked in predict_images(checkpoint, images, top_k=top_k, templates=templates, device=device):
        click.echo(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Name, version, hooks, load error and registrations as JSON.")
def plugins(as_json):
    """List every plugin with what it registered."""
    from .host.manager import get_host

    infos = get_host().plugins()
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    for info in infos:
        origin = "built-in" if info.builtin else f"version {info.version or '?'}"
        click.echo(f"{info.name} ({origin})" + (f"  ERROR: {info.error}" if info.error else ""))
        for kind, names in info.registered.items():
            if names:
                click.echo(f"  {kind}: {', '.join(names)}")


@cli.command(name="list")
@click.argument("kind", type=click.Choice(["encoders", "tokenizers", "templates", "datasets"]))
@click.option("--filter", "pattern", help="fnmatch pattern, e.g. 'timm/*'.")
def list_(kind, pattern):
    """List registered names with their summaries (encoders: family, parameters at embed width 512, source)."""
    from .app.catalog import format_entries
    from .host.manager import get_registry

    for line in format_entries(get_registry(), kind, pattern):
        click.echo(line)


@cli.command()
@click.option("--encoder", "encoders", default="modified_resnet", show_default=True,
              help="Encoder name, comma-separated names, or 'all' (every registered encoder).")
@click.option("--mode", type=click.Choice(["train", "infer", "both"]), default="both", show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Halved on out-of-memory (recorded).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), help="Autocast (default: bf16 on CUDA, fp32 on CPU).")
@click.option("--channels-last/--no-channels-last", default=False, show_default=True)
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True, help="torch.compile (time not counted).")
@click.option("--cuda-graph/--no-cuda-graph", default=True, show_default=True, help="CLIP step as a CUDA graph (CUDA only).")
@click.option("--tower-streams/--no-tower-streams", default=True, show_default=True,
              help="CLIP step with the two towers on two CUDA streams (CUDA only).")
@click.option("--device", default="auto", show_default=True)
@click.option("--steps", type=int, help="Timed steps (default 20 on CUDA, 5 on CPU).")
@click.option("--warmup", type=int, help="Untimed steps first (default 10 on CUDA, 2 on CPU).")
@click.option("--encoder-opt", "encoder_opts", multiple=True, metavar="KEY=VALUE")
@click.option("--embed-dim", type=int, default=512, show_default=True)
@click.option("--text-width", type=int, default=512, show_default=True)
@click.option("--text-layers", type=int, default=6, show_default=True)
@click.option("--text-heads", type=int, default=8, show_default=True)
@click.option("--out", default="results", show_default=True, help="Appends rows to OUT/throughput.csv.")
def throughput(encoders, mode, compile_, encoder_opts, out, **flags):
    """Images/s, step time, memory, params and GFLOPs of encoders on synthetic inputs."""
    from .atomic_files import check_writable_folder
    from .config import parse_opts
    from .perf.throughput import append_rows, resolve, run_throughput, summary

    cfg, names = resolve(encoders, compile=compile_, encoder_opts=parse_opts(encoder_opts), **flags)
    path = check_writable_folder(out) / "throughput.csv"
    table = run_throughput(cfg, names, mode, on_row=lambda row: click.echo(
        f"{row['encoder']} {row['component']}/{row['mode']}: " + (f"error {row['error']}" if row["error"] else
                                                                  f"{row['samples_per_s']:.1f} samples/s"), err=True))
    append_rows(table, path)
    click.echo(_format(summary(table), "markdown"))
    click.echo(f"{len(table)} rows ({int(table['error'].notna().sum())} failed) -> {path}")


def _format(table, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False).rstrip()
    if fmt == "json":
        return table.to_json(orient="records", indent=2)
    return table.to_markdown(index=False)  # through tabulate, a declared dependency


def _plugin_args(argv) -> tuple[list, list]:
    """The --plugins-dir and -p/--plugin values of a command line (sweep workers elsewhere load the same)."""
    dirs, modules = [], []
    for i, arg in enumerate(argv):
        for flag, target in (("--plugins-dir", dirs), ("--plugin", modules), ("-p", modules)):
            if arg == flag and i + 1 < len(argv):
                target.append(argv[i + 1])
            elif arg.startswith(flag + "="):
                target.append(arg.split("=", 1)[1])
    return dirs, modules


def _preload_plugins(argv):
    """Load --plugins-dir / -p plugins before click parses, so their commands exist."""
    from .host.manager import build_host, set_host

    dirs, modules = _plugin_args(argv)
    host = build_host(plugins_dirs=dirs, modules=modules)
    set_host(host)
    return host


def build_cli(host) -> click.Group:
    """A fresh root group with the built-in commands plus those plugins add through ``register_commands``."""
    group = click.Group(name="bench", commands=dict(cli.commands), params=list(cli.params), callback=cli.callback,
                        help=cli.help, context_settings=cli.context_settings)
    host.pm.hook.register_commands(cli=group)
    return group


_ARGV: list[str] = []  # this invocation's arguments: sweep workers are started with the same command line
_OWN_PROCESS = False  # main() is the program (python -m bench, the console script), not a call from a test


@contextlib.contextmanager
def _imports_without_gc():
    """In a process that is this command: no cyclic GC while torch and pandas import, then their objects frozen out
    of its sight. They live until the process exits, so walking them frees nothing, and each full collection walks
    a few hundred thousand (several during torch's import, more in torch._dynamo's, which the optimizer's
    constructor imports: a second or more of a smoke run's start-up on a 2-core machine). Another program that
    calls main() keeps its GC as it is."""
    if not _OWN_PROCESS:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def main(argv=None):
    global _OWN_PROCESS
    if argv is None:  # this process is the command, not a caller's
        _OWN_PROCESS = True
        # at exit the cyclic GC's last collections walk torch's few hundred thousand objects, a second or more, to
        # free memory the OS takes back anyway. Registered first, so it runs after every other exit handler
        atexit.register(gc.freeze)
    argv = list(sys.argv[1:] if argv is None else argv)
    _ARGV[:] = argv
    try:
        group = build_cli(_preload_plugins(argv))
        group.main(args=argv, prog_name="bench", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        click.echo(f"bench: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except BenchError as exc:
        click.echo(f"bench: error: {exc}", err=True)
        sys.exit(2)
    except Interrupted as exc:  # a run stopped by a signal, with where its checkpoint is
        click.echo(f"bench: interrupted: {exc}", err=True)
        sys.exit(130)
    except click.Abort:
        click.echo("bench: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("bench: interrupted", err=True)
        sys.exit(130)
