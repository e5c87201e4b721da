"""The ``bench`` command line: a thin click layer over the library; errors become one line and exit 2."""
from __future__ import annotations

import json
import sys

import click

from .errors import BenchError


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
@click.option("--encoder", default="modified_resnet", show_default=True, help="Vision encoder (bench list encoders).")
@click.option("--encoder-opt", "encoder_opts", multiple=True, metavar="KEY=VALUE", help="Encoder factory option.")
@click.option("--preset", default="reference", show_default=True, help="Recipe: reference (the spec's) or smoke.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--weight-decay", type=float)
@click.option("--warmup-steps", type=int)
@click.option("--loss", type=click.Choice(["clip", "multipositive"]))
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
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True, help="torch.compile the model.")
@click.option("--embed-dim", type=int, help="Joint embedding width (default 512).")
@click.option("--image-size", type=int, help="Input resolution (default 32).")
@click.option("--text-width", type=int, help="Text Transformer width (default 512).")
@click.option("--text-layers", type=int, help="Text Transformer layers (default 6).")
@click.option("--text-heads", type=int, help="Text Transformer heads (default 8).")
@click.option("--checkpoints/--no-checkpoints", default=True, show_default=True, help="Keep best.pt and last.pt.")
@click.option("--progress/--no-progress", default=None, help="tqdm bars (default: only on a terminal).")
@click.option("--out", default="results", show_default=True, help="Results folder.")
def run(encoder, encoder_opts, preset, embed_dim, image_size, text_width, text_layers, text_heads, compile_,
        checkpoints, **flags):
    """Train a CLIP, evaluate it zero-shot each epoch and append a row to OUT/runs.csv."""
    from .config import make_config, parse_opts
    from .runner import run as run_training

    model = dict(encoder=encoder, encoder_opts=parse_opts(encoder_opts), embed_dim=embed_dim,
                 image_resolution=image_size, width=text_width, layers=text_layers, heads=text_heads)
    cfg = make_config(preset, model=model, compile=compile_, save_checkpoints=checkpoints, **flags)
    row = run_training(cfg)
    click.echo(f"run {row['run_id']}: zero-shot top-1 {row['zeroshot_top1']:.4f}, top-5 {row['zeroshot_top5']:.4f}, "
               f"mean per-class recall {row['mean_per_class_recall']:.4f}, {row['train_images_per_s']:.0f} images/s "
               f"over {row['train_seconds']:.1f} s -> {cfg.out}/runs.csv")


@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--templates", callback=_split, multiple=True, help="Template sets, comma-separated (default: the run's).")
@click.option("--dataset", help="Dataset (default: the run's).")
@click.option("--data-dir")
@click.option("--limit-test", type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown", show_default=True)
def eval_(checkpoint, templates, dataset, data_dir, limit_test, device, fmt):
    """Re-evaluate CHECKPOINT zero-shot: one row per template set."""
    from .evaluate_checkpoint import evaluate_checkpoint

    table = evaluate_checkpoint(checkpoint, templates=templates or None, dataset=dataset, data_dir=data_dir,
                                limit_test=limit_test, device=device)
    click.echo(_format(table, fmt))


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=int, default=3, show_default=True)
@click.option("--templates", help="Template set for the classifier (default: the run's).")
@click.option("--device", default="auto", show_default=True)
def predict(checkpoint, images, top_k, templates, device):
    """Print the top classes of each image file (any size; resized to the model's input)."""
    from .evaluate_checkpoint import predict_images

    for path, ranked in predict_images(checkpoint, images, top_k=top_k, templates=templates, device=device):
        click.echo(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Name, version, hooks, load error and registrations as JSON.")
def plugins(as_json):
    """List every plugin with what it registered."""
    from .plugins import get_host

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
    from .catalog import format_entries
    from .plugins import get_registry

    for line in format_entries(get_registry(), kind, pattern):
        click.echo(line)


def _format(table, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False).rstrip()
    if fmt == "json":
        return table.to_json(orient="records", indent=2)
    return table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _preload_plugins(argv):
    """Load --plugins-dir / -p plugins before click parses, so their commands exist."""
    from .plugins import build_host, set_host

    dirs, modules = [], []
    for i, arg in enumerate(argv):
        for flag, target in (("--plugins-dir", dirs), ("--plugin", modules), ("-p", modules)):
            if arg == flag and i + 1 < len(argv):
                target.append(argv[i + 1])
            elif arg.startswith(flag + "="):
                target.append(arg.split("=", 1)[1])
    host = build_host(plugins_dirs=dirs, modules=modules)
    set_host(host)
    return host


def build_cli(host) -> click.Group:
    """A fresh root group with the built-in commands plus those plugins add through ``register_commands``."""
    group = click.Group(name="bench", commands=dict(cli.commands), params=list(cli.params), callback=cli.callback,
                        help=cli.help, context_settings=cli.context_settings)
    host.pm.hook.register_commands(cli=group)
    return group


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
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
    except click.Abort:
        click.echo("bench: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("bench: interrupted", err=True)
        sys.exit(130)
