"""The engine, built once from a recipe: backend flags -> precision -> memory format -> text mode -> compact token
embedding -> compile and DDP wrapping -> optimizer -> schedule -> loss scaling -> the step (a CUDA graph or eager).

``bench run``, ``bench throughput``, the scripts, the benchmarks and the tests all build their step here, from a
:class:`~bench.engine.recipe.TrainRecipe`, so a step measured anywhere is the step ``bench run`` takes, and a new
training option is threaded through one function. The order matters and is kept: the compact embedding replaces
the token table before the optimizer sees the parameters, and a wrapper (compiled towers, DDP) that changes
modules in place runs before the optimizer is built.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..clip.loss import ClipLoss
from ..errors import BenchError
from . import compact_embedding
from .cuda_graph import DDP_EAGER_STEPS, CudaGraphStep
from .ddp import wrap_model
from .epoch_loop import train_steps
from .lookahead import Lookahead, averaged_tensors
from .loss_scale import LossScale
from .optim import build_optimizer, build_scheduler
from .recipe import TrainRecipe
from .train_step import TrainState, clip_step, unwrap_model

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype_for(precision: str, device: torch.device):
    """The autocast dtype of ``precision`` on ``device`` (None: fp32, no autocast). ``"auto"``: bf16 on a CUDA GPU
    that has it, fp16 on one without (T4, V100: trained with loss scaling), fp32 on a CPU."""
    device = torch.device(device)
    if precision != "auto":
        if not runs_precision(precision, device):  # else autocast turns itself off: fp32 under another name
            raise BenchError(f"--precision {precision} does not run on this {device.type} device (torch "
                             f"{torch.__version__}'s autocast there does not take it); use --precision auto, which "
                             f"picks one this device runs, or fp32")
        return DTYPES[precision]
    if device.type != "cuda":
        return None
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 has no emulation to exclude
        native = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native else torch.float16


def precision_name(autocast_dtype) -> str:
    """What a row records for an autocast dtype."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast_dtype]


def runs_precision(precision: str, device: torch.device) -> bool:
    """Whether ``device`` can train in ``precision`` ("fp32", "bf16" or "fp16"): autocast to its dtype takes effect
    there (and fp16's grad scaler exists for it). Asked of torch, not assumed: a CPU autocast that does not take
    float16 (older torch) warns and turns itself off, which would train fp32 under fp16's name, and a CUDA GPU
    without bf16 refuses it. Emulated bf16 (a GPU without native bf16) counts: slow, but it computes bf16."""
    dtype = DTYPES[precision]
    if dtype is None:
        return True
    device = torch.device(device)
    probe = torch.ones(1, 1, device=device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the "disabling autocast" warning: the dtype below is the answer
            with torch.autocast(device.type, dtype=dtype):
                casts = torch.mm(probe, probe).dtype == dtype
            return casts and (dtype != torch.float16 or torch.amp.GradScaler(device.type).is_enabled())
    except (RuntimeError, AttributeError):  # AttributeError: a torch without torch.amp.GradScaler
        return False


def set_backend_flags(recipe: TrainRecipe, device: torch.device):
    """TF32 and cuDNN autotuning as ``recipe`` asks, on CUDA; set by :func:`build_engine`, never at import.

    A caller that runs device work before it builds the engine (a model's data-dependent initialisation) calls
    this first, so that work sees the flags the run trains under. Autotuning picks kernels by timing, so
    ``deterministic`` turns it off.
    """
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = recipe.tf32
        torch.backends.cudnn.allow_tf32 = recipe.tf32
        torch.backends.cudnn.benchmark = recipe.cudnn_benchmark and not recipe.deterministic


def compile_towers(model, **kwargs):
    """``torch.compile`` the vision tower and the text Transformer in place (``nn.Module.compile``).

    The training step calls ``model.encode_image``/``encode_text``, which ``torch.compile(model)`` leaves
    uncompiled (it compiles ``forward`` only); compiling the towers in place also keeps state-dict keys.
    """
    model.visual.compile(**kwargs)
    model.transformer.compile(**kwargs)
    return model


def text_mode_for(n_prompts: int, batch_size: int, device: torch.device) -> str:
    """CUDA: the whole table (static shapes, CUDA graphs) while it is small; CPU: the prompt tree of the
    batch's prompts (fewest tokens; measured in docs/performance.md)."""
    if torch.device(device).type == "cuda":
        return "all" if n_prompts <= max(batch_size, 512) else "unique"
    return "tree"


def resolve_text_mode(recipe: TrainRecipe, n_prompts: int, device: torch.device) -> str:
    """The text mode the step runs under: the recipe's, or for ``"auto"`` :func:`text_mode_for` this table and
    batch. One rule, so a row that times the text tower alone encodes what the whole step encodes."""
    if recipe.text_mode != "auto":
        return recipe.text_mode
    return text_mode_for(n_prompts, recipe.batch_size, device)


def uses_channels_last(recipe: TrainRecipe, device: torch.device) -> bool:
    """channels_last weights and batches: asked for, and on CUDA (on a CPU it measured slower)."""
    return recipe.channels_last and torch.device(device).type == "cuda"


def captures_graph(recipe: TrainRecipe, device: torch.device, text_mode: str, autocast_dtype) -> bool:
    """The one rule for a captured step: asked for, on CUDA, with static shapes (the whole prompt table each
    step), and, under fp16's loss scaling, an optimizer that skips overflowed steps inside its kernel (fused
    AdamW); SGD and Muon groups check for an overflow on the host, so their fp16 steps stay eager."""
    fp16_ok = autocast_dtype != torch.float16 or recipe.optimizer == "adamw"
    return recipe.cuda_graph and torch.device(device).type == "cuda" and text_mode == "all" and fp16_ok


@dataclass
class Engine:
    """A CLIP ready to train under a recipe on one device: its :class:`TrainState` and its step.

    ``step_fn(state, images, labels, prompt_ids)`` is the step every caller times and trains with: a
    :class:`CudaGraphStep` where :func:`captures_graph` says so, else :func:`clip_step`.
    """

    state: TrainState
    recipe: TrainRecipe
    device: torch.device
    autocast_dtype: torch.dtype | None  # the training (and evaluation) autocast; None: fp32
    channels_last: bool  # batches must be channels_last to match the weights
    graph: CudaGraphStep | None  # the captured step; None when every step runs eagerly

    @property
    def step_fn(self):
        return self.graph if self.graph is not None else clip_step

    @property
    def model(self) -> torch.nn.Module:
        """The bare CLIP (for evaluation and checkpoints), under any compile or DDP wrapper."""
        return unwrap_model(self.state.model)

    @property
    def precision(self) -> str:
        return precision_name(self.autocast_dtype)

    def step(self, images, labels, prompt_ids) -> torch.Tensor:
        """One training step; returns the loss (not synced)."""
        return self.step_fn(self.state, images, labels, prompt_ids)

    def train_epoch(self, batches, n_steps: int, **kwargs) -> dict:
        """:func:`bench.engine.epoch_loop.train_steps` with this engine's step."""
        return train_steps(self.state, batches, n_steps, step_fn=self.step_fn, **kwargs)

    def skipped_steps(self) -> int:
        """Steps fp16's loss scaling skipped on an overflow (0 in other precisions); reads the device."""
        return 0 if self.state.scaler is None else int(self.state.scaler.skipped)


def build_engine(model, prompt_tokens: torch.Tensor, recipe: TrainRecipe, world=None,
                 ddp_options: dict | None = None) -> Engine:
    """The engine of ``model`` (the bare CLIP, already on its device) on the prompt table ``prompt_tokens`` (on the
    same device; :func:`bench.clip.prompts.prompt_table`) under ``recipe``.

    ``world`` (:class:`bench.distributed.world.World`): under torchrun the step trains the DDP-wrapped model, with
    the loss gathering every rank's features; None or a plain world: a single process. ``model`` is changed in
    place (compact token embedding, channels_last, compiled towers, synced batch norm) and stays the bare CLIP.
    ``ddp_options``: DDP's own settings (``bucket_cap_mb``, ...; :func:`bench.engine.ddp.wrap_model`), for
    measuring them.
    """
    device = prompt_tokens.device
    set_backend_flags(recipe, device)
    autocast_dtype = autocast_dtype_for(recipe.precision, device)
    channels_last = uses_channels_last(recipe, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    text_mode = resolve_text_mode(recipe, len(prompt_tokens), device)
    graph = captures_graph(recipe, device, text_mode, autocast_dtype)
    distributed = world is not None and world.distributed
    embedding = compact_embedding.install(model, prompt_tokens) if recipe.compact_embedding else None
    if recipe.compile:
        # --compile's towers (inductor's default mode, which makes no CUDA graphs of its own) compile in the eager
        # steps before the capture and are captured with the rest of the step
        compile_towers(model)
    train_model = wrap_model(model, world, recipe.sync_bn, graph, **(ddp_options or {})) if distributed else model
    opt = build_optimizer(model, recipe, device, capturable=graph)
    if embedding is not None:
        compact_embedding.attach(embedding, opt)
    total = recipe.total_steps
    scheduler = None if total is None else build_scheduler(opt, total, recipe.lr_warmup_steps, recipe.schedule,
                                                           recipe.steps_per_epoch)
    if recipe.lookahead and total is None:
        raise ValueError("a lookahead needs a schedule (steps_per_epoch): it runs to the last step")
    slow = Lookahead(averaged_tensors(model, opt), recipe.lookahead, total) if recipe.lookahead else None
    rank, size = (world.rank, world.size) if distributed else (0, 1)
    state = TrainState(train_model, opt, scheduler, ClipLoss(recipe.loss, rank, size, recipe.label_smoothing),
                       prompt_tokens, autocast_dtype, text_mode, max_grad_norm=recipe.max_grad_norm,
                       tower_streams=recipe.tower_streams, lookahead=slow,
                       scaler=LossScale(device) if autocast_dtype == torch.float16 else None)
    step = CudaGraphStep(eager_steps=DDP_EAGER_STEPS if distributed else 3) if graph else None
    return Engine(state, recipe, device, autocast_dtype, channels_last, step)
