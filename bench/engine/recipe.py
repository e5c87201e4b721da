"""What the training engine computes, and how, as one frozen, torch-free value.

A :class:`TrainRecipe` holds every choice that decides the training step: the optimizer and its settings, the
schedule, the loss, the precision, and the speed switches (CUDA graph, tower streams, compile, channels_last,
cuDNN autotuning, determinism, the compact embedding). ``RunConfig.recipe()`` makes one from a run's
configuration; ``bench throughput``, the scripts and the benchmarks make theirs the same way, so a step timed
anywhere is a step ``bench run`` would take. :func:`bench.engine.build.build_engine` turns it into an engine on a
device; choices that depend on the device ("auto" precision, whether a CUDA graph is possible) are resolved there.
"""
from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("adamw", "sgd", "muon")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear")
LOSSES = ("clip", "multipositive")
# how the text tower sees a batch's captions (bench.engine.train_step.encode_prompts); "auto" picks by device
TEXT_MODES = ("auto", "unique", "all", "tree", "tree_all")


@dataclass(frozen=True)
class TrainRecipe:
    # -- optimizer (bench.engine.optim.build_optimizer) --
    optimizer: str = "adamw"  # "adamw", or "sgd"/"muon" on the vision tower beside AdamW for the rest
    lr: float = 1e-4  # peak learning rate (AdamW's step size; SGD's gradient multiplier)
    weight_decay: float = 0.01  # decoupled weight decay
    momentum: float = 0.85  # "sgd": Nesterov momentum of the vision tower
    muon_lr: float = 0.24  # "muon": the conv filters' learning rate
    muon_momentum: float = 0.6  # "muon": the conv filters' Nesterov momentum
    text_lr: float | None = None  # lr of all but the vision tower; None: lr
    text_weight_decay: float | None = None  # weight decay of all but the vision tower; None: weight_decay
    norm_lr_scale: float = 1.0  # lr multiplier of the vision tower's normalisation parameters, decay unchanged
    lookahead: float = 0.0  # airbench's lookahead: the final per-step EMA decay (0: off)
    max_grad_norm: float | None = None  # clip the global gradient norm (None: no clipping)
    fused: bool = True  # fused AdamW kernels (False: foreach, for measuring the difference)
    # -- schedule (bench.engine.optim.build_scheduler) --
    schedule: str = "cosine"  # after the lr warm-up: "cosine" or "linear" decay to zero
    lr_warmup_steps: int = 0  # steps of linear learning-rate warm-up
    epochs: int = 50  # the schedule spans epochs x steps_per_epoch steps
    steps_per_epoch: int | None = None  # None: no schedule (a constant lr), e.g. for timing steps
    # -- loss (bench.clip.loss.ClipLoss) --
    loss: str = "clip"  # "clip" (symmetric InfoNCE) or "multipositive" (same class = positive)
    label_smoothing: float = 0.0
    batch_size: int = 32  # images per step and process: with the prompt count it picks the text mode
    text_mode: str = "auto"  # see TEXT_MODES; "auto": the whole table on CUDA while small, else a prompt tree
    # -- precision and speed; none of these changes the function computed, except precision --
    precision: str = "auto"  # "auto": bf16 on a CUDA GPU with bf16, fp16 on one without, fp32 on CPU
    cuda_graph: bool = True  # on CUDA, the whole step captured once as a CUDA graph and replayed
    tower_streams: bool = True  # on CUDA, the two towers on two streams
    compile: bool = False  # torch.compile the two towers (inside the step's CUDA graph on CUDA)
    channels_last: bool = True  # on CUDA, channels_last weights and batches for convolutional towers
    cudnn_benchmark: bool = True  # on CUDA, cuDNN autotunes each convolution shape once
    tf32: bool = True  # on CUDA, TF32 matmuls and convolutions (off: exact fp32, for comparing steps)
    deterministic: bool = False  # deterministic kernels only (no cuDNN autotuning)
    compact_embedding: bool = True  # train only the token-embedding rows the prompts use (exact)
    sync_bn: bool = True  # under torchrun: batch norm over the global batch

    @property
    def total_steps(self) -> int | None:
        """Optimizer steps the schedule spans; None without a schedule."""
        return None if self.steps_per_epoch is None else self.epochs * self.steps_per_epoch
