"""Throughput of encoders: the vision tower alone and the whole CLIP training step, on synthetic inputs.

Follows timm's ``benchmark.py``: inputs built on the device, untimed steps apart from timed ones, the
clock picked once (CUDA events per step on a GPU, ``perf_counter`` on a CPU), flat rows with a fixed
column order, and on out-of-memory a retry at a smaller batch that the row records. Unlike timm's bulk
mode, a failed benchmark stays in the table with its ``error``.

Rows (one per encoder x component x mode):
- ``vision/infer``: the vision tower's forward under ``no_grad`` (what zero-shot evaluation runs);
- ``vision/train``: forward, a stand-in loss, backward and fused AdamW over the tower's parameters;
- ``text/train``: the text tower's part of that step: the prompts the step encodes, forward and backward, in the
  text mode ``bench run`` picks for the device and batch (:func:`bench.engine.build.resolve_text_mode`: on a CPU
  the prompt tree of the batch's prompts, on CUDA the whole table while it is small), for the same drawn
  captions as ``clip/train``; a stand-in loss, fused AdamW over the parameters outside the vision tower.
  Beside ``vision/train`` (same batch and precision, both eager) it gives the text tower's share of a step:
  text / (text + vision);
- ``clip/train``: bench's whole CLIP training step (:func:`bench.engine.train_step.clip_step`, or the CUDA-graph
  step on a GPU), text tower, prompt table, contrastive loss and optimizer included. Its FLOPs are those of
  ``vision/train`` plus ``text/train`` plus the loss's logits (a few batch x batch x embed_dim products).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace

import pandas as pd
import torch

from ..engine.build import DTYPES, autocast_dtype_for, precision_name, set_backend_flags
from ..errors import BenchError

COLUMNS = [
    "encoder", "component", "mode", "batch_size", "requested_batch_size", "oom_retries", "precision",
    "channels_last", "compile", "cuda_graph", "tower_streams", "device", "device_name", "torch_threads", "samples_per_s",
    "step_ms_median", "step_ms_p90", "steps", "untimed_steps", "peak_mem_mb", "params", "gflops_per_sample",
    "kernels_per_step", "error", "time",
    "torch_version", "cuda_version", "git_commit", "git_dirty", "hostname", "command",
]


@dataclass(frozen=True)
class ThroughputCfg:
    encoder: str = "modified_resnet"  # registered encoder name
    batch_size: int = 32  # samples per step, before any out-of-memory retry
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" autocast (fp16 with bench run's loss scaling)
    channels_last: bool = True  # channels_last inputs and weights, on CUDA only (as bench run)
    compile: bool = False  # torch.compile the model (compile time is in the untimed steps, not the timing)
    cuda_graph: bool = True  # on CUDA, the CLIP training step as one replayed graph (as bench run does)
    tower_streams: bool = True  # on CUDA, the two towers on two streams (as bench run does)
    device: str = "cpu"
    steps: int = 10  # timed steps
    untimed_steps: int = 3  # steps run before the timed ones and not timed (autotuning, allocation, compilation),
    # after the three that count FLOPs, compile and count kernels; a row's untimed_steps counts all of them
    image_size: int = 32
    embed_dim: int = 512
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 6
    encoder_opts: tuple = ()  # (key, value) pairs for the encoder factory


# ---------------------------------------------------------------------------------------------------------
# Clock, memory, FLOPs
# ---------------------------------------------------------------------------------------------------------
def time_steps(fn, steps: int, device: torch.device) -> list[float]:
    """Milliseconds of each of ``steps`` calls of ``fn``: CUDA events around each call on a GPU (one sync at
    the end, so the GPU stays busy between steps), ``perf_counter`` on a CPU.

    The events go on ``device``'s current stream: a bare ``record()`` takes the current device's, which under
    ``--device cuda:1`` is cuda:0's, where none of the step's work runs."""
    if device.type == "cuda":
        stream = torch.cuda.current_stream(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        for start, end in events:
            start.record(stream)
            fn()
            end.record(stream)
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events]
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def p90(values) -> float:
    return float(torch.tensor(values, dtype=torch.float64).quantile(0.9))


def count_flops(fn) -> float:
    """FLOPs of one call as torch's own counter sees them (matmuls, convolutions, attention).

    Compiled code runs eagerly while counting (the counter sees aten ops, which compiled kernels hide);
    NaN if counting fails, so a FLOP-counter limitation never costs the timing.
    """
    import torch._dynamo
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch._dynamo.config.patch(disable=True), FlopCounterMode(display=False) as counter:
            fn()
    except Exception:  # noqa: BLE001
        return float("nan")
    return counter.get_total_flops()


def count_kernels(fn, device: torch.device) -> int:
    """Work items one call of ``fn`` launches: on CUDA the device kernels torch.profiler records (memory copies and
    sets included); on a CPU the aten operations that reach a backend, views left out (a dispatch mode counts
    them; the CPU's unit of launched work, and no profiler start-up noise on a machine without a GPU).

    Count an eager call: a captured CUDA graph replays the same kernels as one launch, and it is their number,
    each a few microseconds of fixed cost at small batches, that a faster step has to cut.
    """
    if device.type == "cuda":
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize(device)
        return sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA)
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += not func.is_view
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new high-water mark, so that the peak read after the timed steps is theirs, not an earlier row's:
    CUDA's allocator peak; on Linux the process's peak resident set (``VmHWM``, which writing 5 to
    ``/proc/self/clear_refs`` resets). False where it cannot be reset."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _resident_peak_kib() is not None


def _resident_peak_kib() -> int | None:
    """``VmHWM`` of /proc/self/status (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def peak_memory_mb(device: torch.device, reset: bool = True) -> float:
    """The peak since :func:`reset_peak_memory` (``reset``: whether it succeeded): allocated device memory on CUDA;
    on a CPU the process's peak resident set. NaN where the CPU's mark could not be reset: the process's lifetime
    peak would be an earlier row's as often as this one's."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    peak = _resident_peak_kib() if reset else None
    return float("nan") if peak is None else peak / 1024


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _inputs_fit(cfg: ThroughputCfg, batch: int) -> bool:
    """Whether a step's inputs, four times over (a step also holds their activations and gradients), fit in the
    memory the system has available. On the CPU an allocation Linux overcommits does not fail: the process is
    killed as it touches the pages, with no out-of-memory error to halve the batch on. True where unknown."""
    available = _available_bytes()
    per_sample = 3 * cfg.image_size ** 2 * 4 + 77 * 8  # float32 pixels, int64 tokens
    return available is None or 4 * batch * per_sample <= available


def _available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def with_oom_retry(fn, batch_size: int, device: torch.device, min_batch: int = 2):
    """``fn(batch_size)``, halving the batch after each out-of-memory error; returns (result, batch, retries)."""
    retries = 0
    while True:
        try:
            return fn(batch_size), batch_size, retries
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
            if not is_oom(exc) or batch_size // 2 < min_batch:
                raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        batch_size //= 2
        retries += 1


# ---------------------------------------------------------------------------------------------------------
# What is timed
# ---------------------------------------------------------------------------------------------------------
def _build(cfg: ThroughputCfg, device: torch.device, component: str):
    from ..clip.model import count_parameters, create_model

    model = create_model(cfg.encoder, cfg.embed_dim, cfg.image_size, 77, 49408, cfg.text_width, cfg.text_heads,
                         cfg.text_layers, dict(cfg.encoder_opts)).to(device)
    if _channels_last(cfg, device) and component != "clip":  # the CLIP step's engine converts its own model
        model = model.to(memory_format=torch.channels_last)
    return model, count_parameters(model.visual), count_parameters(model)


def _images(cfg, batch, device):
    x = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if _channels_last(cfg, device) else x


def _channels_last(cfg: ThroughputCfg, device) -> bool:
    """Whether the timed tensors are channels_last: bench run's rule (asked for, and on CUDA)."""
    from ..engine.build import uses_channels_last

    return uses_channels_last(clip_recipe(cfg, cfg.batch_size), device)


def _vision_step(cfg, model, batch, device, train: bool):
    """A closure running one vision-tower step on fresh-looking synthetic images."""
    dtype = autocast_dtype_for(cfg.precision, device)
    visual = torch.compile(model.visual) if cfg.compile else model.visual
    x = _images(cfg, batch, device)
    if not train:
        model.eval()

        @torch.no_grad()
        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return visual(x)

        return step
    return _train_step(cfg, model, lambda: visual(x), model.visual.parameters(), device)


def _train_step(cfg, model, forward, params, device, embedding=None):
    """A closure: ``forward()``'s features, a stand-in loss, backward and fused AdamW over ``params`` (and the
    decay of ``embedding``'s untrained rows after each step, as the engine attaches it)."""
    from ..engine import compact_embedding

    dtype = autocast_dtype_for(cfg.precision, device)
    model.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    if embedding is not None:
        compact_embedding.attach(embedding, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = forward().float().pow(2).mean()  # stands in for any loss on the features
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _prompt_table(device):
    """The seed templates' 50 CIFAR-10 prompts as bench run's prompt table, and the number of templates."""
    from ..clip.prompts import prompt_table
    from ..clip.templates import SEED_TEMPLATES
    from ..data.datasets import CIFAR10_CLASSES

    return prompt_table(SEED_TEMPLATES, CIFAR10_CLASSES, device=device), len(SEED_TEMPLATES)


def _captions(table, n_templates, batch, device):
    """A batch's synthetic captions: (labels, prompt ids). Drawn from a fixed seed, so that the text/train and
    clip/train rows encode the same prompts (on a CPU the step encodes only the batch's prompts, and how many
    distinct ones a draw holds sets the text tower's work) and a rerun counts the same FLOPs."""
    generator = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(0, len(table), (batch,), generator=generator).to(device)
    return prompt_ids // n_templates, prompt_ids


def _text_step(cfg, model, batch, device):
    """A closure running the text tower's part of a CLIP step: the prompts of the batch's captions, encoded as
    ``bench run``'s step encodes them (its text mode for this device, table and batch)."""
    from ..engine import compact_embedding
    from ..engine.build import resolve_text_mode
    from ..engine.train_step import encode_prompts

    table, n_templates = _prompt_table(device)
    _, prompt_ids = _captions(table, n_templates, batch, device)
    recipe = clip_recipe(cfg, batch)
    mode = resolve_text_mode(recipe, len(table), device)
    # the engine trains only the token rows the prompts use (the dense AdamW over the 25M-parameter embedding was
    # most of this row's time on a CPU, and no bench run step does it)
    embedding = compact_embedding.install(model, table) if recipe.compact_embedding else None
    text = [p for name, p in model.named_parameters() if not name.startswith("visual.")]
    if cfg.compile:  # as the engine compiles it (bench.engine.build.compile_towers); the tree calls it directly
        model.transformer.compile()
    return _train_step(cfg, model, lambda: encode_prompts(model, table, prompt_ids, mode), text, device, embedding)


# the schedule of the timed CLIP step spans a CIFAR-10 training split's epochs, as bench run's would
CIFAR10_TRAIN_IMAGES = 50_000


def clip_recipe(cfg: ThroughputCfg, batch: int):
    """The recipe of the timed CLIP step: what ``bench run`` (preset ``reference``) trains under when given the same
    flags (batch size, precision, channels_last, compile, CUDA graph, tower streams)."""
    from ..config import make_config

    run_cfg = make_config("reference", batch_size=batch, precision=cfg.precision, channels_last=cfg.channels_last,
                          compile=cfg.compile, cuda_graph=cfg.cuda_graph, tower_streams=cfg.tower_streams,
                          device=cfg.device)
    return run_cfg.recipe(steps_per_epoch=CIFAR10_TRAIN_IMAGES // batch)


def _clip_step(cfg, model, batch, device):
    """A closure running bench's whole CLIP training step (the `bench run` engine) on synthetic data, and whether it
    replays a CUDA graph."""
    from ..engine.build import build_engine

    table, n_templates = _prompt_table(device)
    engine = build_engine(model, table, clip_recipe(cfg, batch))
    model.train()
    images = _images(cfg, batch, device)
    labels, prompt_ids = _captions(table, n_templates, batch, device)
    return lambda: engine.step(images, labels, prompt_ids), engine.graph is not None


def measure(cfg: ThroughputCfg, component: str, mode: str) -> dict:
    """One row: build, count FLOPs, warm up, time; out-of-memory retried at half the batch."""
    device = torch.device(cfg.device)

    def attempt(batch):
        if device.type == "cpu" and component != "text" and not _inputs_fit(cfg, batch):  # text: prompts, no images
            raise RuntimeError(f"out of memory: a batch of {batch} does not fit in the memory available")
        set_backend_flags(clip_recipe(cfg, batch), device)  # every row under the flags bench run would set
        model, vision_params, clip_params = _build(cfg, device, component)
        graph = False
        if component == "clip":
            step, graph = _clip_step(cfg, model, batch, device)
        elif component == "text":
            step = _text_step(cfg, model, batch, device)
        else:
            step = _vision_step(cfg, model, batch, device, train=mode == "train")
        flops = count_flops(step)  # also the first warm-up step: eager, before any graph capture
        step()  # compiles, with --compile
        kernels = count_kernels(step, device)  # the third step: still eager, every kernel compiled and tuned
        extra = max(cfg.untimed_steps, 4 if graph else 0)  # a graph is captured after 3 eager steps
        for _ in range(extra):
            step()
        reset = reset_peak_memory(device)
        times = time_steps(step, cfg.steps, device)
        params = {"clip": clip_params, "text": clip_params - vision_params}.get(component, vision_params)
        return {"params": params, "flops": flops, "times": times, "untimed": 3 + extra,
                "graph": graph, "peak": peak_memory_mb(device, reset), "kernels": kernels}

    out, batch, retries = with_oom_retry(attempt, cfg.batch_size, device)
    median = statistics.median(out["times"])
    return {"batch_size": batch, "oom_retries": retries, "samples_per_s": batch / median * 1e3,
            "step_ms_median": median, "step_ms_p90": p90(out["times"]), "untimed_steps": out["untimed"],
            "peak_mem_mb": out["peak"],
            "params": out["params"], "gflops_per_sample": out["flops"] / batch / 1e9, "cuda_graph": out["graph"],
            "channels_last": _channels_last(cfg, device),
            "kernels_per_step": out["kernels"]}


def measurements(mode: str) -> list[tuple[str, str]]:
    """(component, mode) pairs for ``--mode``."""
    if mode not in ("train", "infer", "both"):
        raise BenchError(f"--mode must be train, infer or both, got {mode!r}")
    pairs = [("vision", "infer")] if mode in ("infer", "both") else []
    return pairs + ([("vision", "train"), ("text", "train"), ("clip", "train")] if mode in ("train", "both") else [])


def check_encoder_options(cfg: ThroughputCfg, encoders: list[str]):
    """Options the user gave (``--encoder-opt``) that an encoder rejects are the user's to fix: every encoder is
    built with them, and a :class:`BenchError` ends the command (exit 2) before anything is written or timed."""
    if cfg.encoder_opts:
        from ..app.validation import check_encoder_builds

        for encoder in encoders:
            check_encoder_builds(encoder, cfg.embed_dim, cfg.image_size, dict(cfg.encoder_opts))


def run_throughput(cfg: ThroughputCfg, encoders: list[str], mode: str = "both", on_row=None) -> pd.DataFrame:
    """Benchmark each encoder (after :func:`check_encoder_options`); a failure becomes a row with ``error`` set,
    and the others still run."""
    from ..results.run_folder import provenance

    device = torch.device(cfg.device)
    prov = provenance(device)
    rows = []
    for encoder in encoders:
        for component, step_mode in measurements(mode):
            run_cfg = replace(cfg, encoder=encoder)
            row = {"encoder": encoder, "component": component, "mode": step_mode,
                   "requested_batch_size": cfg.batch_size, **{k: v for k, v in asdict(run_cfg).items()
                                                              if k in COLUMNS}, "error": None,
                   "torch_threads": torch.get_num_threads()}  # a CPU row's speed depends on it several-fold
            try:
                row.update(measure(run_cfg, component, step_mode))
            except Exception as exc:  # noqa: BLE001 - a broken encoder is a row, not the end of the table
                row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            row.update({k: prov[k] for k in ("time", "device_name", "torch_version", "cuda_version", "git_commit",
                                             "git_dirty", "hostname", "command")})
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def append_rows(table: pd.DataFrame, path) -> None:
    """Append to ``path`` (a CSV) under the lock runs.csv uses, in :data:`COLUMNS` order; rows already in the
    file are copied field for field, not re-typed."""
    from ..results.runs_csv import append_rows as append_table_rows

    append_table_rows(path, table.to_dict("records"), COLUMNS, key=None)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading on a terminal."""
    cols = ["encoder", "component", "mode", "batch_size", "precision", "samples_per_s", "step_ms_median",
            "step_ms_p90", "peak_mem_mb", "params", "gflops_per_sample", "kernels_per_step", "error"]
    out = table[cols].copy()
    for col, digits in (("samples_per_s", 1), ("step_ms_median", 2), ("step_ms_p90", 2), ("peak_mem_mb", 0),
                        ("gflops_per_sample", 3)):
        out[col] = out[col].astype(float).round(digits)
    out["params"] = (out["params"].astype(float) / 1e6).round(2).astype(str) + "M"
    return out


def resolve(encoders: str, device: str = "auto", precision: str | None = None, steps: int | None = None,
            untimed_steps: int | None = None, **kwargs) -> tuple[ThroughputCfg, list[str]]:
    """Validate command-line values into a config and a list of encoder names (``all``: every registered one)."""
    from ..app.validation import check_device, model_size_checks
    from ..distributed.world import resolve_device
    from ..host.manager import get_entry, get_registry

    check_device(device)
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    names = get_registry().names("encoders") if encoders == "all" else [n for n in encoders.split(",") if n]
    if not names:
        raise BenchError("--encoder is empty; name an encoder (bench list encoders) or 'all'")
    for name in names:
        get_entry("encoders", name)  # unknown names fail here, listing what exists
    cfg = ThroughputCfg(device=str(dev), precision=precision or precision_name(autocast_dtype_for("auto", dev)),
                        steps=steps if steps is not None else (20 if cuda else 5),
                        untimed_steps=untimed_steps if untimed_steps is not None else (10 if cuda else 2), **kwargs)
    checks = [(cfg.batch_size >= 2, f"--batch-size must be at least 2, got {cfg.batch_size}"),
              (cfg.steps >= 1, f"--steps must be at least 1, got {cfg.steps}"),
              (cfg.untimed_steps >= 0, f"--untimed-steps must be >= 0, got {cfg.untimed_steps}"),
              (cfg.precision in DTYPES, f"--precision must be fp32, bf16 or fp16, got {cfg.precision!r}"),
              *model_size_checks(cfg.image_size, cfg.embed_dim, cfg.text_width, cfg.text_heads, cfg.text_layers)]
    for ok, message in checks:
        if not ok:
            raise BenchError(message)
    return cfg, names


def throughput_command(encoders: str, mode: str, out, encoder_opts=(), echo=print, echo_err=print,
                       **options) -> pd.DataFrame:
    """``bench throughput``: check the options, time every encoder (a line per measurement), print the rows'
    summary and, given ``out``, append the rows to ``out/throughput.csv`` (none given: nothing is written, as a
    command run in a checkout must not add rows to the committed results/throughput.csv unasked).
    ``encoder_opts``: ``KEY=VALUE`` strings."""
    from ..atomic_files import make_folder
    from ..config import parse_opts

    cfg, names = resolve(encoders, encoder_opts=parse_opts(encoder_opts), **options)
    check_encoder_options(cfg, names)
    # made now: a folder that cannot be is said before the measuring
    path = None if out is None else make_folder(out) / "throughput.csv"

    def line(row):
        echo_err(f"{row['encoder']} {row['component']}/{row['mode']}: "
                 + (f"error {row['error']}" if row["error"] else f"{row['samples_per_s']:.1f} samples/s"))

    table = run_throughput(cfg, names, mode, on_row=line)
    if path is not None:
        append_rows(table, path)
    echo(summary(table).to_markdown(index=False))
    echo(f"{len(table)} rows ({int(table['error'].notna().sum())} failed)"
         + (f" -> {path}" if path is not None else "; --out DIR appends them to DIR/throughput.csv"))
    return table
