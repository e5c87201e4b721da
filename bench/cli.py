"""The ``bench`` command line: click declarations, each command one call into :mod:`bench.app` (or the library
function that does its job). Errors become one line on stderr and exit code 2."""
from __future__ import annotations

import sys

import click

from .errors import BenchError, Interrupted


def _split(ctx, param, value):
    return [v for part in value for v in part.split(",") if v] if value else []


def _folder(ctx, param, value):
    # an empty --out "$DIR" would otherwise be the current folder, unsaid
    if value is not None and not str(value).strip():
        raise click.BadParameter("is empty; name a folder ('.' for the current one)", param=param)
    return value


def _split_naming(what: str, example: str):
    """A comma list that must name something when given: an empty ``--holdout-classes "$CLASSES"`` (or a lone
    comma) would otherwise train on every class, a configuration not meant, and record it as if asked."""
    def callback(ctx, param, value):
        names = _split(ctx, param, value)
        if value and not names:
            raise click.BadParameter(f"names no {what}; give {example}, or leave the option out", param=param)
        return names
    return callback


def _split_seeds(ctx, param, value):
    # an empty --seeds "$SEEDS" would otherwise run the default seed once, not the seeds meant
    seeds = _split(ctx, param, value)
    if value and not seeds:
        raise click.BadParameter("names no seed; give integers separated by commas, e.g. --seeds 0,1,2", param=param)
    return seeds


def _typed() -> frozenset:
    """The parameter names of the running command that were typed on its command line."""
    ctx = click.get_current_context()
    return frozenset(p.name for p in ctx.command.params
                     if ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE)


def _echo_err(line: str):
    click.echo(line, err=True)


# Options several commands take alike
device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
format_option = click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown",
                             show_default=True,
                             help="markdown: a table to read; csv, json: the fractions the table holds, for scripts.")


# bench run's ~60 options (and sweep's ~75) as sections in --help, as timm's train.py and pytest group theirs; by
# parameter name, so a sweep's copies of run's options land where run's do. An option of neither command left out
# of this table shows under "Other options" (a test keeps that empty)
HELP_SECTIONS = {
    "Sweep plan": ("file", "until", "min_seeds", "max_seeds", "dry_run", "status"),
    "Where a sweep's runs go": ("concurrent", "workers", "gpus", "launcher", "gpus_per_run", "ray_address", "slurm"),
    "Model": ("encoder", "encoder_opts", "embed_dim", "image_size", "text_width", "text_layers", "text_heads",
              "tokenizer", "compact_embedding"),
    "Data": ("dataset", "data_dir", "data_opts", "templates", "limit_train", "limit_test", "holdout_classes"),
    "Recipe": ("preset", "epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule", "optimizer",
               "momentum", "muon_lr", "muon_momentum", "text_lr", "text_weight_decay", "norm_lr_scale", "lookahead",
               "max_grad_norm", "loss", "label_smoothing", "crop_pad", "cutout", "flip", "seed", "seeds"),
    "Evaluation": ("eval_every", "evals", "robust_limit", "robust_severities", "transfer", "target",
                   "stop_at_target"),
    "Device and speed": ("device", "precision", "compile_", "cuda_graph", "tower_streams", "cudnn_benchmark",
                         "sync_bn", "prewarm_steps", "deterministic"),
    "Output": ("out", "resume", "checkpoints", "checkpoint_every", "progress", "log_every", "log", "wandb_project",
               "wandb_entity"),
}


class SectionedCommand(click.Command):
    """A command whose --help shows its options under :data:`HELP_SECTIONS`, in that order."""

    def format_options(self, ctx, formatter):
        rows = {name: [] for name in (*HELP_SECTIONS, "Other options")}
        section_of = {param: name for name, params in HELP_SECTIONS.items() for param in params}
        for param in self.get_params(ctx):
            if isinstance(param, click.Argument):  # named in the usage line and the docstring, as click shows them
                continue
            record = param.get_help_record(ctx)
            if record is not None:
                rows[section_of.get(param.name, "Other options")].append(record)
        for name, records in rows.items():
            if records:
                with formatter.section(name):
                    formatter.write_dl(records)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="bench", prog_name="bench")
@click.option("--plugins-dir", "plugins_dirs", multiple=True, type=click.Path(),
              help="Load every .py file / package in DIR as a plugin (also BENCH_PLUGINS_DIR).")
@click.option("-p", "--plugin", "plugin_modules", multiple=True, help="Import MODULE (on sys.path) as a plugin.")
def cli(plugins_dirs, plugin_modules):
    """Train CLIP models on CIFAR-10 (or another dataset) and compare them zero-shot, also on datasets they were
    not trained on."""


@cli.command(cls=SectionedCommand)
@click.option("--encoder", help="Vision encoder (bench list encoders); default: the preset's, else modified_resnet.")
@click.option("--encoder-opt", "encoder_opts", multiple=True, metavar="KEY=VALUE", help="Encoder factory option.")
@click.option("--preset", default="reference", show_default=True,
              help="Recipe: reference (the spec's), smoke, fast (airbench_wide encoder, batch 1024, for GPUs) or "
                   "fast96 (airbench96's tower).")
@click.option("--epochs", type=int, help="Training epochs (default: the preset's; reference 50, smoke 2).")
@click.option("--batch-size", type=int,
              help="Image-caption pairs per step, per rank (default: the preset's; reference 32).")
@click.option("--lr", type=float, help="Peak learning rate (default: the preset's; reference 1e-4).")
@click.option("--weight-decay", type=float,
              help="Weight decay: AdamW's, and the vision tower's SGD's under --optimizer sgd or muon (default: the "
                   "preset's; reference 0.01).")
@click.option("--lr-warmup-steps", "warmup_steps", type=int,
              help="Learning-rate warm-up: steps of linear ramp to --lr before the decay (default 0).")
@click.option("--loss", type=click.Choice(["clip", "multipositive"]),
              help="clip: the symmetric contrastive loss; multipositive: every pair of one class is a positive "
                   "(default: the preset's; clip in reference).")
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
@click.option("--prewarm-steps", type=int,
              help="Prewarm the process: train this many steps of a throwaway copy on random images first "
                   "(compilation, autotuning), outside train_seconds; results unchanged (default 0: off).")
@click.option("--lookahead", type=float,
              help="airbench's lookahead: per-step EMA decay the weights are pulled to, ramped up to the end, where "
                   "the run takes the average (e.g. 0.95; default 0: off).")
@click.option("--templates", help="Template set (bench list templates); default: the dataset's own (seed for cifar10, "
                                   "openai_cifar100 for cifar100, ...: bench list datasets).")
@click.option("--tokenizer", default="clip_bpe", show_default=True, help="Tokenizer (bench list tokenizers).")
@click.option("--dataset", default="cifar10", show_default=True,
              help="Dataset (bench list datasets), or imagefolder:PATH for your own images.")
@click.option("--data-dir", help="Dataset folder (CIFAR-10: train.npz/test.npz or cifar-10-batches-py/; the others: "
                                 "torchvision's files, bench list datasets).")
@click.option("--data-opt", "data_opts", multiple=True, metavar="KEY=VALUE",
              help="Dataset factory option, e.g. imagefolder's test_fraction=0.2, split_seed=0, size=32.")
@device_option
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="Autocast: auto is bf16 on a GPU with bf16, fp16 (with dynamic loss scaling) on one without, fp32 "
                   "on a CPU.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of initialisation, data order, augmentation and drawn held-out classes.")
@click.option("--limit-train", type=int, help="Train on the first N images.")
@click.option("--limit-test", type=int, help="Evaluate on the first N test images.")
@click.option("--eval-every", type=int, default=1, show_default=True,
              help="Evaluate zero-shot every N epochs (and after the last); also how often --target is checked.")
@click.option("--target", metavar="METRIC=VALUE",
              help="Quality target, e.g. zeroshot_top1=0.94: the row records whether and when an evaluated epoch "
                   "first reached it (reached_target, epochs_to_target, time_to_target_seconds).")
@click.option("--stop-at-target/--no-stop-at-target", default=None,
              help="End the run after the first epoch that reaches --target (the schedule stays the full run's).")
@click.option("--log-every", type=int, default=50, show_default=True,
              help="Steps per train_log.csv row (their mean loss) and live-curve point.")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile the two towers (on CUDA inside the step's CUDA graph; compile time counts as "
                   "training time unless --prewarm-steps compiles first).")
@click.option("--embed-dim", type=int, help="Joint embedding width (default 512).")
@click.option("--image-size", type=int, help="Input resolution (default 32).")
@click.option("--text-width", type=int, help="Text Transformer width (default 512).")
@click.option("--text-layers", type=int, help="Text Transformer layers (default 6).")
@click.option("--text-heads", type=int, help="Text Transformer heads (default 8).")
@click.option("--checkpoints/--no-checkpoints", default=True, show_default=True, help="Keep best.pt and last.pt.")
@click.option("--progress/--no-progress", default=None, help="tqdm bars (default: only on a terminal).")
@click.option("--out", default="results", show_default=True, callback=_folder, help="Results folder.")
@click.option("--sync-bn/--no-sync-bn", default=True, show_default=True,
              help="Under torchrun: batch norm statistics over all ranks' images (docs/distributed.md).")
@click.option("--checkpoint-every", type=int, help="Also save last.pt every N steps (default 0: each epoch only).")
@click.option("--max-grad-norm", type=float, help="Clip the global gradient norm to this value (default: no clip).")
@click.option("--resume", metavar="RUN_ID|RUN_DIR|latest", help="Continue a stopped run from its last.pt.")
@click.option("--seeds", callback=_split_seeds, multiple=True,
              help="Repeat for each seed, comma-separated (replaces --seed); prints mean ± std.")
@click.option("--evals", callback=_split, multiple=True,
              help="After training also run: retrieval, probe, robustness (comma-separated).")
@click.option("--robust-limit", type=int, help="Robustness on the first N test images (default: all).")
@click.option("--robust-severities", callback=_split, multiple=True, help="Corruption severities (default 1,2,3,4,5).")
@click.option("--transfer", callback=_split_naming("dataset", "datasets such as stl10,cifar100"), multiple=True,
              metavar="DATASET[@TEMPLATES]",
              help="After training, also evaluate zero-shot on these other datasets (comma-separated), each with its "
                   "own classes and template set: one runs.csv row each (docs/evaluation.md).")
@click.option("--holdout-classes", callback=_split_naming("class", "class names (cat,truck) or a count (2)"),
              multiple=True, metavar="NAMES|COUNT",
              help="Leave these classes' images and prompts out of training: names (cat,truck) or a count drawn with "
                   "the seed; reports seen_top1, unseen_top1 and harmonic_top1.")
@click.option("--cuda-graph/--no-cuda-graph", default=None,
              help="On CUDA, replay the training step as one captured CUDA graph (default: on).")
@click.option("--tower-streams/--no-tower-streams", default=None,
              help="On CUDA, run the image and text towers concurrently on two streams (default: on).")
@click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=None,
              help="On CUDA, autotune each convolution shape once (default: on, off in the reference preset; off "
                   "saves the first steps' tuning).")
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
    from .app.run_command import run_command

    run_command(flags, seeds=seeds, resume=resume, given=_typed(), echo=click.echo,
                own_process=click.get_current_context().obj["own_process"])


def sweep(file, encoder, templates, seeds, dry_run, status, slurm, until, min_seeds, max_seeds, **options):
    """Run a sweep: FILE.toml's plan (docs/sweeps.md), or the cross product --encoder x --templates x --seeds.

    Every run has a fixed id in OUT/runs/, so the same command again skips finished runs and continues
    stopped ones from their last.pt. --concurrent K trains K runs at once on one device; --workers/--gpus
    start one worker per device; --launcher ray|slurm spreads the runs over a cluster. Takes every flag of
    `bench run`, which override FILE's [base].
    """
    from .app.sweep.command import SweepRequest, sweep_command

    obj = click.get_current_context().obj
    request = SweepRequest(file=file, encoders=tuple(encoder), templates=tuple(templates), seeds=tuple(seeds),
                           dry_run=dry_run, status=status, slurm=tuple(slurm), options=options, given=_typed(),
                           argv=tuple(obj["argv"]), until=until, min_seeds=min_seeds, max_seeds=max_seeds,
                           own_process=obj["own_process"])
    code = sweep_command(request, _sweep_run_params(), echo=click.echo, echo_err=_echo_err)
    if code:
        sys.exit(code)


def _sweep_run_params() -> list:
    """``bench run``'s options that a sweep takes per run (in its flags and its file)."""
    return [p for p in run.params if p.name not in {"seeds", "resume"}]


def _sweep_command() -> click.Command:
    """``bench sweep`` takes ``bench run``'s flags, with --encoder, --templates and --seeds as comma lists."""
    lists = [
        click.Argument(["file"], required=False, type=click.Path()),
        click.Option(["--encoder"], callback=_split, multiple=True,
                     help="Vision encoders, comma-separated (bench list encoders), without FILE."),
        click.Option(["--templates"], callback=_split, multiple=True, help="Template sets, comma-separated [seed]."),
        click.Option(["--seeds"], callback=_split_seeds, multiple=True, help="Seeds, comma-separated [0]."),
        click.Option(["--until"], metavar="METRIC:HALFWIDTH",
                     help="Seeds in rounds: add seeds to each configuration until the 95% interval of its mean METRIC "
                          "is within ±HALFWIDTH (the metric's unit: 0.005 = 0.5 points of top-1), e.g. "
                          "zeroshot_top1:0.005 (docs/sweeps.md)."),
        click.Option(["--min-seeds"], type=int, help="With --until: the first round's seeds [3]."),
        click.Option(["--max-seeds"], type=int, help="With --until: the most seeds of a configuration [20]."),
        click.Option(["--dry-run"], is_flag=True, help="Print the plan (each run's id, state and what varies); run nothing."),
        click.Option(["--status"], is_flag=True, help="Print where each run of the plan stands (as --dry-run)."),
        click.Option(["--concurrent"], type=int, default=1, show_default=True,
                     help="Runs trained at once in one process on one device (own CUDA stream and graph each); "
                          "with --launcher ray, the most runs in flight (left out: as many as the cluster places)."),
        click.Option(["--workers"], type=int, help="Worker processes on this machine (default: one per --gpus)."),
        click.Option(["--gpus"], help="GPUs for one worker each: 0,1,... or all (default: all visible, if several)."),
        click.Option(["--launcher"], type=click.Choice(["local", "ray", "slurm"]), default="local", show_default=True,
                     help="ray: each run a Ray task; slurm: a submitit job array (docs/sweeps.md)."),
        click.Option(["--gpus-per-run"], type=float,
                     help="Ray: GPUs (or a fraction) per run [1 where the cluster (for a local Ray, this machine) has "
                          "a GPU, else 0]."),
        click.Option(["--ray-address"], help="Ray: an existing cluster (default: a local Ray for this sweep)."),
        click.Option(["--slurm"], multiple=True, metavar="KEY=VALUE",
                     help="Slurm/submitit setting, repeatable: partition, time_min, gpus_per_job, runs_per_job, "
                          "cluster=local, ... (also FILE's [slurm])."),
    ]
    shared = [p for p in run.params if p.name not in {"encoder", "templates", "seed", "seeds", "resume"}]
    return SectionedCommand("sweep", params=lists + shared, callback=sweep, help=sweep.__doc__,
                         short_help="Run a sweep file's plan, or encoders x template sets x seeds.")


cli.add_command(_sweep_command())


@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path(), required=False)
@click.option("--open-clip", "open_clip_model", metavar="MODEL",
              help="Evaluate this open_clip model (a name from open_clip.list_models(), or a model config .json) "
                   "instead of a checkpoint.")
@click.option("--pretrained", metavar="TAG_OR_FILE",
              help="With --open-clip: an open_clip pretrained tag (downloaded by open_clip) or a local weights file.")
@click.option("--results", "results_dir", default="results", show_default=True, callback=_folder,
              help="With --open-clip: the results folder whose runs.csv gets one row per template set.")
@click.option("--templates", callback=_split, multiple=True, help="Template sets, comma-separated (default: the run's).")
@click.option("--dataset", callback=_split_naming("dataset", "datasets such as stl10,synthetic"), multiple=True,
              help="Datasets, comma-separated (default: the run's); another than the run's is zero-shot transfer, "
                   "recorded in its results folder's runs.csv.")
@click.option("--data-dir", help="Folder of the datasets named (default: the run's own for its dataset, else each "
                                  "dataset's default folder).")
@click.option("--limit-test", type=int, help="Evaluate on the first N test images (default: the run's).")
@device_option
@format_option
@click.option("--per-template", is_flag=True, help="Also one row per single template of each set.")
@click.option("--evals", callback=_split, multiple=True,
              help="Also: retrieval, probe, robustness (comma-separated); a checkpoint's with its run's data seed.")
@click.option("--robust-limit", type=int,
              help="Robustness on the first N test images (default: the run's; all with --open-clip).")
@click.option("--robust-severities", callback=_split, multiple=True,
              help="Corruption severities (default: the run's; 1,2,3,4,5 with --open-clip).")
@click.option("--holdout-classes", callback=_split_naming("class", "class names (cat,truck) or a count (2)"),
              multiple=True, metavar="NAMES|COUNT",
              help="Report seen_top1, unseen_top1 and harmonic_top1 with these classes as the unseen ones (default: "
                   "the run's held-out classes; a pretrained model takes names).")
@click.option("--out", type=click.Path(), callback=_folder,
              help="Also write eval.csv, per-class accuracy and confusion matrices here.")
def eval_(fmt, **options):
    """Re-evaluate CHECKPOINT zero-shot: one row per template set (with its protocol).

    CHECKPOINT is a bench run's last.pt/best.pt or an OpenAI-format state dict (OpenAI's preprocessing). With
    --open-clip MODEL --pretrained TAG_OR_FILE, a pretrained open_clip model is evaluated the same way, with its
    own preprocessing, and recorded in --results' runs.csv next to trained runs.
    """
    from .app.eval_command import eval_command
    from .app.tables import format_table

    table, recorded = eval_command(**options)
    click.echo(format_table(table, fmt))
    if recorded is not None:
        click.echo(f"{recorded[0]} row(s) -> {recorded[1]}", err=True)


# --- result tables: bench results, bench compare, bench report ----------------------------------------------
@cli.command(name="results")
@click.argument("sources", nargs=-1)
@click.option("--results", "results_dir", default="results", show_default=True, callback=_folder,
              help="Results folder read when no SOURCE is given, and where run ids are looked up.")
@click.option("--where", "wheres", multiple=True, metavar="COL=VALUE",
              help="Keep rows where COL=VALUE (also !=, >, <, >=, <=; VALUE may be a,b); repeatable.")
@click.option("--sort", "sort_by", help="Sort by this column (metrics best first).")
@click.option("--ascending/--descending", default=None, help="Override the sort direction.")
@click.option("--columns", callback=_split, multiple=True, help="Columns to show, comma-separated.")
@click.option("--aggregate", "aggregate_", is_flag=True, help="One row per configuration: mean ± std over seeds.")
@click.option("--long", "long_", is_flag=True,
              help="The tidy long table: one row per run x metric, time to a --target included.")
@click.option("--limit", type=int, help="Show at most N rows.")
@format_option
@click.option("--rebuild", is_flag=True,
              help="Rebuild runs.csv from its runs' records (runs/*/result.json), in the folder named or else "
                   "--results, then print it.")
def results(**options):
    """Print result tables (SOURCES: results folders, runs.csv files, run folders or run ids; default --results)."""
    from .app.tables import show_results

    show_results(**options, echo=click.echo, echo_err=_echo_err)


@cli.command(name="compare")
@click.argument("sides", nargs=-1, required=True)
@click.option("--results", "results_dir", default="results", show_default=True, callback=_folder,
              help="Where run ids are looked up.")
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
@click.option("--equivalence", multiple=True, metavar="METRIC:MARGIN",
              help="Also test that each difference lies within ±MARGIN (the metric's unit: zeroshot_top1:0.005 is "
                   "half a point): two one-sided tests over seeds and, for top-1, over test images; repeatable.")
@click.option("--fail-on-not-equivalent", is_flag=True,
              help="With --equivalence: exit 1 unless every tested difference is shown equivalent (a CI gate).")
@format_option
def compare_(**options):
    """Compare runs A B [C...] side by side: the first is the baseline; configurations are joined, seeds pooled.

    Differences get Welch's t-test over seeds and, for zero-shot top-1, a paired test over the test images
    (docs/evaluation.md).
    """
    from .app.tables import compare_sides

    code = compare_sides(**options, echo=click.echo, echo_err=_echo_err)
    if code:
        sys.exit(code)


@cli.command(name="report")
@click.argument("runs", nargs=-1)
@click.option("--out", required=True, type=click.Path(), callback=_folder,
              help="Folder for report.md and the figures.")
@click.option("--results", "results_dir", default="results", show_default=True, callback=_folder,
              help="Results folder used when no RUNS are given, and where run ids are looked up.")
@click.option("--where", "wheres", multiple=True, metavar="COL=VALUE", help="Report only matching runs; repeatable.")
@click.option("--title", help="Report title.")
@click.option("--correct", type=click.Choice(["none", "holm"]), default="none", show_default=True,
              help="Adjust the p-values of every configuration's comparison with the baseline, across all "
                   "configurations and metrics (holm: family-wise error rate).")
def report(runs, out, results_dir, wheres, title, correct):
    """Write a markdown report with figures for RUNS (results folders, files, run folders or run ids)."""
    from .app.tables import write_report

    paths = write_report(runs, out, results_dir, wheres, title, correct)
    click.echo(f"wrote {paths[0]} and {len(paths) - 1} figures")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=int, default=3, show_default=True, help="Classes shown per image.")
@click.option("--templates", help="Template set for the classifier (default: the run's).")
@device_option
def predict(checkpoint, images, top_k, templates, device):
    """Print the top classes of each image file (any size: its centre square, resized to the model's input)."""
    from .app.evaluate import predict_images

    for path, ranked in predict_images(checkpoint, images, top_k=top_k, templates=templates, device=device):
        click.echo(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Name, version, hooks, load error and registrations as JSON.")
def plugins(as_json):
    """List every plugin with what it registered."""
    from .app.catalog import plugin_lines

    for line in plugin_lines(as_json):
        click.echo(line)


@cli.command(name="list")
@click.argument("kind", type=click.Choice(["encoders", "tokenizers", "templates", "datasets"]))
@click.option("--filter", "pattern", help="fnmatch pattern, e.g. 'timm/*'.")
@click.option("--count-params", is_flag=True,
              help="Encoders whose plugin declares no parameter count: build each on PyTorch's meta device to count "
                   "it (imports torch: seconds).")
def list_(kind, pattern, count_params):
    """List registered names with their summaries (encoders: family, parameters at embed width 512, source)."""
    from .app.catalog import listing

    for line in listing(kind, pattern, count=count_params):
        click.echo(line)


@cli.command()
@click.option("--encoder", "encoders", default="modified_resnet", show_default=True,
              help="Encoder name, comma-separated names, or 'all' (every registered encoder).")
@click.option("--mode", type=click.Choice(["train", "infer", "both"]), default="both", show_default=True,
              help="Time training steps, inference, or both.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Halved on out-of-memory (recorded).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), help="Autocast (default: bf16 on CUDA, fp16 on a GPU without bf16, fp32 on CPU).")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="channels_last weights and inputs, on CUDA only (as bench run).")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True, help="torch.compile (time not counted).")
@click.option("--cuda-graph/--no-cuda-graph", default=True, show_default=True, help="CLIP step as a CUDA graph (CUDA only).")
@click.option("--tower-streams/--no-tower-streams", default=True, show_default=True,
              help="CLIP step with the two towers on two CUDA streams (CUDA only).")
@device_option
@click.option("--steps", type=int, help="Timed steps (default 20 on CUDA, 5 on CPU).")
@click.option("--untimed-steps", type=int,
              help="Steps run first and not timed (default 10 on CUDA, 2 on CPU), after the 3 that count FLOPs, "
                   "compile and count kernels; a row's untimed_steps counts all of them.")
@click.option("--encoder-opt", "encoder_opts", multiple=True, metavar="KEY=VALUE", help="Encoder factory option.")
@click.option("--embed-dim", type=int, default=512, show_default=True, help="Joint embedding width.")
@click.option("--text-width", type=int, default=512, show_default=True, help="Text Transformer width.")
@click.option("--text-layers", type=int, default=6, show_default=True, help="Text Transformer layers.")
@click.option("--text-heads", type=int, default=8, show_default=True, help="Text Transformer heads.")
@click.option("--out", type=click.Path(), callback=_folder,
              help="Also append the rows to OUT/throughput.csv (default: print them only).")
def throughput(encoders, mode, compile_, out, **flags):
    """Images/s, step time, memory, params and GFLOPs of encoders on synthetic inputs."""
    from .perf.throughput import throughput_command

    throughput_command(encoders, mode, out, compile=compile_, echo=click.echo, echo_err=_echo_err, **flags)


def build_cli(host) -> click.Group:
    """A fresh root group with the built-in commands plus those plugins add through ``register_commands``."""
    group = click.Group(name="bench", commands=dict(cli.commands), params=list(cli.params), callback=cli.callback,
                        help=cli.help, context_settings=cli.context_settings)
    host.add_commands(group)
    return group


# Options an earlier bench had under another name, by the commands that took them: the old name is refused naming
# the new one. click's own guess lists look-alikes, among them the wrong one (--warm-up: --lr-warmup-steps too).
RENAMED_OPTIONS = {
    "--warm-up": ("--prewarm-steps", ("run", "sweep")),
    "--warmup-steps": ("--lr-warmup-steps", ("run", "sweep")),
    "--warmup": ("--untimed-steps", ("throughput",)),
}
# Options an earlier bench took that no longer exist, with what replaces them, by the commands that took them.
REMOVED_OPTIONS = {
    "--skip-existing": ("a sweep always skips its finished runs; drop the flag", ("sweep",)),
}


def _old_option(exc: click.UsageError) -> str | None:
    """The line for an option this command had in an earlier bench (renamed or removed since), or None."""
    if not isinstance(exc, click.NoSuchOption) or exc.ctx is None:
        return None
    command, name = exc.ctx.command.name, exc.option_name
    new, commands = RENAMED_OPTIONS.get(name, (None, ()))
    if command in commands:
        return f"bench {command}: {name} was renamed {new} (same meaning, same values); write {new} instead"
    fix, commands = REMOVED_OPTIONS.get(name, (None, ()))
    if command in commands:
        return f"bench {command}: {name} was removed: {fix}"
    return None


def main(argv=None):
    """``bench ARGV...``: plugins named on the command line load first, so that their commands exist; the
    command line travels down in click's context object (sweep workers run it again), and whether this process
    is the command itself (``argv`` None: the console script, ``python -m bench``) or a caller's (a test)."""
    from .app.own_process import freeze_gc_at_exit
    from .host.manager import host_for

    own_process = argv is None
    if own_process:
        freeze_gc_at_exit()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        group = build_cli(host_for(argv))
        group.main(args=argv, prog_name="bench", standalone_mode=False, obj={"argv": argv, "own_process": own_process})
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # one line: click lists a missing argument's choices one per line
        line = _old_option(exc) or " ".join(exc.format_message().split())
        click.echo(f"bench: error: {line}", err=True)
        sys.exit(2)
    except BenchError as exc:
        click.echo(f"bench: error: {exc}", err=True)
        sys.exit(2)
    except Interrupted as exc:  # a run stopped by a signal, with where its checkpoint is
        if not exc.quiet:  # under torchrun every rank stops at the agreed step: rank 0 says so once
            click.echo(f"bench: interrupted: {exc}", err=True)
        sys.exit(130)
    except (click.Abort, KeyboardInterrupt):  # a second Ctrl-C, which does not wait for the step and the checkpoint
        click.echo("bench: aborted; a run stopped this way continues from its last checkpoint with bench run "
                   "--resume latest (and its --out)", err=True)
        sys.exit(130)
