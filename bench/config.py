"""The run configuration: one frozen dataclass built once (defaults < preset < flags) and passed down."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .clip.configs import ModelCfg, TextCfg
from .engine.recipe import TrainRecipe
from .errors import BenchError

# A preset sets the recipe, never the architecture: the encoder name alone fixes the vision tower.
PRESETS: dict[str, dict] = {
    "reference": dict(  # the spec's recipe: AdamW 1e-4, wd 0.01, cosine over 50 epochs, batch 32, full CIFAR-10
        epochs=50, batch_size=32, lr=1e-4, weight_decay=0.01, warmup_steps=0, limit_train=None, limit_test=None,
        loss="clip",
        # engine, not recipe: at batch 32 cuDNN's heuristics pick kernels as fast as autotuning's (2.91 against
        # 2.95 ms a step on an H200) without its 8 s of tuning in the first steps (docs/performance.md)
        cudnn_benchmark=False,
    ),
    "smoke": dict(  # seconds on a CPU: a few steps on a small slice, to check that everything runs
        epochs=2, batch_size=32, lr=1e-4, weight_decay=0.01, warmup_steps=0, limit_train=256, limit_test=256,
        loss="clip",
    ),
    # bench's speed recipe (docs/performance.md): 94% zero-shot top-1 on CIFAR-10 in under 30 s of training on
    # one H100 (measured on an H200: 94.30% in 25.0 s, docs/performance.md). Big batches keep the GPU busy; the
    # multi-positive loss makes the 100-odd captions of each class in a batch positives instead of negatives;
    # 2 warm-up epochs, then cosine. The training loss saturates long before the end, so regularisation is
    # what moves accuracy: an 8-pixel cutout took it from 93.4% to 94.3%; label smoothing 0.2 (airbench's)
    # measured no better.
    "fast": dict(
        epochs=60, batch_size=1024, lr=2e-3, weight_decay=0.05, warmup_steps=98, limit_train=None, limit_test=None,
        loss="multipositive", label_smoothing=0.0, cutout=8, encoder="airbench_wide",
    ),
    # towards 96% (issue 15; not yet run on a GPU, so its accuracy and time are unmeasured): the fast recipe on
    # airbench96's deeper, wider tower, with airbench96's 12-pixel cutout, and half the fast preset's epochs,
    # since each costs about three times as much (airbench96 trains 45 epochs to 96.0%)
    "fast96": dict(
        epochs=30, batch_size=1024, lr=2e-3, weight_decay=0.05, warmup_steps=98, limit_train=None, limit_test=None,
        loss="multipositive", label_smoothing=0.0, cutout=12, encoder="airbench96",
    ),
}
# A preset's "encoder" is only a default: an explicit --encoder wins, and the encoder name alone still fixes the
# vision tower.


def not_in_id(default):
    """A field of how a run is carried out or reported, not of what it computes: left out of its configuration
    id (``config_id``), so runs that differ only here compare as one configuration over seeds."""
    return field(default=default, metadata={"config_id": False})


def in_id_when(flag: str, default, among: tuple = ()):
    """A field that enters the configuration id only while the boolean field ``flag`` is true, or with ``among``
    while ``flag``'s value is one of them: what it changes about the run depends on that field (see ``target``,
    ``momentum``)."""
    return field(default=default, metadata={"config_id": (flag, among) if among else flag})


@dataclass(frozen=True)
class RunConfig:
    model: ModelCfg = field(default_factory=ModelCfg)  # architecture: encoder + text tower
    tokenizer: str = "clip_bpe"  # registered tokenizer name
    # registered template set used for training captions and zero-shot; bench run without --templates takes the
    # dataset's own (its registration's templates=, bench.app.dataset_lookup.dataset_templates), else this
    templates: str = "seed"
    dataset: str = "cifar10"  # registered dataset name
    data_dir: str | None = not_in_id(None)  # dataset folder; None = the dataset's default
    data_opts: tuple = ()  # sorted (key, value) pairs passed to the dataset's factory (--data-opt KEY=VALUE)
    data_seed: int = 0  # seed of generated datasets (fixed across run seeds, so seeds compare like for like)
    preset: str = "reference"  # the preset the recipe started from
    epochs: int = 50  # passes over the training split
    batch_size: int = 32  # images per optimizer step (per process)
    lr: float = 1e-4  # AdamW peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup_steps: int = 0  # learning-rate warm-up: linear steps before the decay (--lr-warmup-steps)
    loss: str = "clip"  # "clip" (symmetric InfoNCE) or "multipositive" (same class = positive)
    label_smoothing: float = 0.0  # mix each row's target with the uniform one over the batch (0: off)
    crop_pad: int = 4  # zero padding of the random crop (the reference recipe's padded crop); 0: flip only
    cutout: int = 0  # side of the random square blanked in each training image (DeVries & Taylor; 0: off)
    # "random": each image flipped with probability 1/2 every epoch; "alternate": at random in the first epoch,
    # then each epoch flips exactly the images the one before did not (airbench's alternating flip)
    flip: str = "random"
    schedule: str = "cosine"  # after the warm-up: "cosine" or "linear" decay to zero (airbench's triangle)
    # "adamw" (the reference recipe) or "sgd": the vision tower on Nesterov SGD with airbench's decoupled
    # hyperparameters (a step is lr x gradient at any momentum; decay lr x wd per step, as AdamW's), the rest on
    # AdamW (bench.engine.optim.MixedAdamW); "muon": as sgd, with the tower's conv filters on Muon (airbench94_muon)
    optimizer: str = "adamw"
    # (in the id only under the optimizers that use them: AdamW trains the same whatever they are)
    momentum: float = in_id_when("optimizer", 0.85, among=("sgd", "muon"))  # --optimizer sgd's Nesterov momentum
    # --optimizer muon: the conv filters' lr (airbench94_muon's) and Nesterov momentum
    muon_lr: float = in_id_when("optimizer", 0.24, among=("muon",))
    muon_momentum: float = in_id_when("optimizer", 0.6, among=("muon",))
    # lr and weight decay of everything outside the vision tower (text tower, token embedding, projections,
    # temperature); None: lr / weight_decay. --optimizer sgd needs text_lr: there lr is SGD's
    text_lr: float | None = None
    text_weight_decay: float | None = None
    norm_lr_scale: float = 1.0  # lr multiplier of the vision tower's normalisation parameters, decay unchanged
    # airbench's lookahead (bench.engine.lookahead): every 5 steps the weights move to an EMA of themselves whose
    # decay ramps up to this per-step value (airbench: 0.95) by the end, where the run takes the average; 0: off
    lookahead: float = 0.0
    # train this many steps of a throwaway copy on random images first (compilation, cuDNN autotuning, CUDA
    # start-up), outside train_seconds, as airbench times warm runs; the run's numbers are unchanged. 0: off
    prewarm_steps: int = not_in_id(0)
    seed: int = not_in_id(0)  # seed of initialisation, data order, augmentation and template choice
    device: str = not_in_id("auto")  # "auto" (cuda if available), "cpu", "cuda", "cuda:N"
    # "auto" (bf16 autocast on a CUDA GPU with bf16, fp16 with loss scaling on one without, fp32 on CPU), "fp32",
    # "bf16", "fp16" (autocast to float16 with dynamic loss scaling)
    precision: str = "auto"
    limit_train: int | None = None  # use only the first N training images
    limit_test: int | None = None  # evaluate on the first N test images
    # zero-shot evaluation every N epochs (and always after the last); with stop_at_target it decides at which
    # epoch the run can stop, so there it is part of what is trained
    eval_every: int = in_id_when("stop_at_target", 1)
    # a quality target, "METRIC=VALUE" (bench.evaluation.target), checked at each evaluated epoch; the row records
    # whether and when it was first reached. Only observing, it leaves what is trained unchanged and stays out of
    # the configuration id, so runs with and without it compare as one configuration over seeds; with
    # stop_at_target the run ends at the epoch that reaches it, so there the target decides what was trained
    target: str | None = in_id_when("stop_at_target", None)
    # end the run after the first epoch whose evaluation reaches the target: a different run from one that trained
    # every epoch (its weights and metrics are the earlier epoch's), so in the id. The schedule stays the full run's.
    stop_at_target: bool = False
    log_every: int = not_in_id(50)  # steps between reading the loss back to the host
    compile: bool = not_in_id(False)  # torch.compile the model
    channels_last: bool = not_in_id(True)  # channels_last memory format for convolutional towers on CUDA
    save_checkpoints: bool = not_in_id(True)  # keep best.pt and last.pt in the run folder
    out: str = not_in_id("results")  # results folder: runs.csv and runs/<run_id>/
    progress: bool | None = not_in_id(None)  # tqdm bars; None = only on a terminal
    sync_bn: bool = True  # under torchrun: batch norm over the global batch (exactly one process's batch N x B)
    # also save last.pt every N optimizer steps (0 = only at the end of each epoch)
    checkpoint_every: int = not_in_id(0)
    max_grad_norm: float | None = None  # clip the global gradient norm to this value; None = no clipping
    # -- evaluation suite after training (bench.evaluation.suite); none of these change what is trained --
    evals: tuple = not_in_id(())  # extra evaluations on the final weights: any of "retrieval", "probe", "robustness"
    robust_limit: int | None = not_in_id(None)  # robustness on the first N test images (None = the whole test split)
    robust_severities: tuple = not_in_id((1, 2, 3, 4, 5))  # corruption severities evaluated
    # zero-shot transfer after training (bench.app.transfer): other datasets, each "NAME" or "NAME@TEMPLATES", one
    # runs.csv row each; not what is trained, so not in the configuration id
    transfer: tuple = not_in_id(())
    # classes whose images and prompts training leaves out (bench.data.class_split): class names, or one count
    # drawn with the seed; evaluation still classifies among every class (seen_top1, unseen_top1, harmonic_top1)
    holdout_classes: tuple = ()
    # speed (docs/performance.md); these leave the computed function unchanged (cuDNN's choice of algorithm only
    # changes rounding)
    cuda_graph: bool = True  # on CUDA, capture the whole training step as one CUDA graph and replay it
    tower_streams: bool = True  # on CUDA, run the image and text towers concurrently on two streams
    # on CUDA, time cuDNN's convolution algorithms at each new shape and keep the fastest
    cudnn_benchmark: bool = not_in_id(True)
    compact_embedding: bool = True  # train only the token-embedding rows the prompts use; decay the rest exactly
    # bit-identical reruns on CUDA (bench.deterministic): deterministic algorithms only, cuDNN deterministic without
    # autotuning, a fixed cuBLAS workspace; CPU runs at one thread count are bit-identical without it
    deterministic: bool = not_in_id(False)
    # -- live curves (bench.results.loggers); never part of what is computed --
    log: tuple = not_in_id(())  # any of "tensorboard", "wandb"
    wandb_project: str | None = not_in_id(None)  # None: WANDB_PROJECT, else "bench"
    wandb_entity: str | None = not_in_id(None)  # None: WANDB_ENTITY, else the account's default

    def recipe(self, steps_per_epoch: int | None = None) -> TrainRecipe:
        """What the training engine computes for this run (bench.engine.recipe). ``steps_per_epoch``: the loader's
        length, which the schedule spans with ``epochs`` (None: no schedule)."""
        return TrainRecipe(
            optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay, momentum=self.momentum,
            muon_lr=self.muon_lr, muon_momentum=self.muon_momentum, text_lr=self.text_lr,
            text_weight_decay=self.text_weight_decay, norm_lr_scale=self.norm_lr_scale, lookahead=self.lookahead,
            max_grad_norm=self.max_grad_norm, schedule=self.schedule, lr_warmup_steps=self.warmup_steps,
            epochs=self.epochs, steps_per_epoch=steps_per_epoch, loss=self.loss, label_smoothing=self.label_smoothing,
            batch_size=self.batch_size, precision=self.precision, cuda_graph=self.cuda_graph,
            tower_streams=self.tower_streams, compile=self.compile, channels_last=self.channels_last,
            cudnn_benchmark=self.cudnn_benchmark, deterministic=self.deterministic,
            compact_embedding=self.compact_embedding, sync_bn=self.sync_bn)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["model"] = ModelCfg.from_dict(d.get("model", {}))
        # JSON gives lists; the frozen config keeps tuples
        for name in ("evals", "robust_severities", "log", "transfer", "holdout_classes"):
            if isinstance(d.get(name), list):
                d[name] = tuple(d[name])
        if isinstance(d.get("data_opts"), list):  # pairs, as ModelCfg's encoder_opts
            d["data_opts"] = tuple(tuple(p) for p in d["data_opts"])
        if "warm_up" in d:  # a config from before the CLI reshape (7bd3d82 and earlier): --warm-up, now --prewarm-steps
            d.setdefault("prewarm_steps", d.pop("warm_up"))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# what each KEY=VALUE option's error shows as an example
_OPT_EXAMPLES = {"--encoder-opt": "--encoder-opt drop_path_rate=0.1", "--data-opt": "--data-opt test_fraction=0.2"}


def parse_opts(pairs, option: str = "--encoder-opt") -> tuple:
    """``["drop_path_rate=0.1", "width=16"]`` -> sorted ``(key, value)`` pairs, values parsed as JSON when possible.
    ``option``: the flag they came from, for the error."""
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise BenchError(f"{option} {pair!r} is not KEY=VALUE; write it like {_OPT_EXAMPLES.get(option, option)}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return tuple(sorted(out.items()))


def make_config(preset: str = "reference", model: dict | None = None, **overrides) -> RunConfig:
    """Defaults < preset < ``overrides`` (None values are ignored, so unset flags keep the preset's value).

    Builds without checking: ``preset`` must be a key of :data:`PRESETS`, and the values are checked where a run
    takes them (:mod:`bench.app.validation`), so this module stays free of registry and evaluation code.
    """
    values = dict(PRESETS[preset])
    preset_encoder = values.pop("encoder", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    model = {k: v for k, v in (model or {}).items() if v is not None}
    if preset_encoder is not None:
        model.setdefault("encoder", preset_encoder)
    text = {k: model.pop(k) for k in list(model) if k in {f.name for f in dataclasses.fields(TextCfg)}}
    model_cfg = ModelCfg(text=TextCfg(**text), **model)
    return RunConfig(model=model_cfg, preset=preset, **values)
