"""Training checkpoints: everything a run needs to continue exactly, and loading that explains mismatches.

``last.pt`` holds the model, optimizer, scheduler and grad scaler, every RNG state (Python, numpy, torch CPU
and CUDA, and the loader's generator, which alone drives data order, augmentation and template choice), the
epoch, the step within the epoch, that epoch's data order and running loss, and what the run accumulated
(history, best epoch, last metrics). Restoring all of it and replaying the remaining batches gives, on
CPU, bit-identical weights and metrics to a run that was never stopped. ``best.pt`` holds weights only.

Every value is a tensor or plain Python data, so ``torch.load(weights_only=True)`` reads it back: numpy
scalars and arrays are converted on the way in (:func:`plain`).
"""
from __future__ import annotations

import functools
import random
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ..atomic_files import save_checkpoint
from ..clip.model import state_dict_mismatch
from ..distributed.world import mean_over_ranks
from ..errors import BenchError
from .build import DTYPES, autocast_dtype_for, precision_name, runs_precision
from .epoch_loop import EpochProgress
from .train_step import TrainState, unwrap_model

FORMAT = 1  # bumped when the layout of the training state changes incompatibly
# what a last.pt of this FORMAT holds beyond the weights and the config, for restore_training
TRAINING_STATE = ("optimizer", "rng", "epoch", "step", "history", "progress")


@dataclass
class RunProgress:
    """What a run has accumulated besides the :class:`TrainState`, saved so a resumed run ends identically."""

    train_seconds: float = 0.0  # training time of the finished epochs (timing only)
    train_images: int = 0  # images trained on in the finished epochs
    best: dict | None = None  # history row of the best zero-shot epoch so far
    metrics: dict = field(default_factory=dict)  # the last zero-shot evaluation, per_class/confusion as lists
    resumes: int = 0  # how many times this run was resumed
    epoch: EpochProgress | None = None  # the unfinished epoch, None at an epoch boundary
    order: torch.Tensor | None = None  # that epoch's data order (indices into the training split)
    loss_log: list = field(default_factory=list)  # train_log.csv's rows so far: step, epoch, train_loss
    loss_window: tuple = (0, 0.0)  # (steps, loss sum) of the current epoch at its last loss read-back


def plain(obj):
    """numpy scalars and arrays -> Python numbers and tensors, recursively: the only types weights_only reads."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, str) and type(obj) is not str:  # torch.__version__ is a TorchVersion, a str subclass
        return str(obj)
    return obj


def capture_rng(generator: torch.Generator) -> dict:
    state = np.random.get_state(legacy=False)
    rng = {
        "python": random.getstate(),
        "numpy": {**state, "state": {**state["state"], "key": torch.from_numpy(state["state"]["key"].astype(np.int64))}},
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return rng


def restore_rng(rng: dict, generator: torch.Generator):
    random.setstate(_as_tuple(rng["python"]))
    state = dict(rng["numpy"])
    state["state"] = {**state["state"], "key": state["state"]["key"].numpy().astype(np.uint32)}
    np.random.set_state(state)
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["loader"])
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """The code that wrote a checkpoint, asked of git once per process (checkpoints may come every few steps)."""
    from ..results.run_folder import provenance

    prov = provenance()
    return plain({k: prov[k] for k in ("bench_version", "git_commit", "git_dirty", "torch_version")})


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict):
    """``optimizer.load_state_dict(saved)``, each tensor-valued setting (a capturable optimizer's lr) kept as the
    device tensor it was, its value copied in: load_state_dict puts the checkpoint's CPU tensors in their place,
    and a CUDA graph captured on a CPU lr bakes one number into every replay."""
    held = [{k: v for k, v in group.items() if isinstance(v, torch.Tensor)} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, tensors in zip(optimizer.param_groups, held):
        for key, tensor in tensors.items():
            with torch.no_grad():
                tensor.copy_(torch.as_tensor(group[key]))
            group[key] = tensor


def restore_training(ckpt: dict, state: TrainState, generator: torch.Generator, device, ranks: int = 1,
                     path="last.pt", split_size: int | None = None) -> RunProgress:
    """Load a ``last.pt`` into a freshly built ``state`` and ``generator`` (weights are loaded before, into the
    bare model: see :func:`load_weights`); returns what the run had accumulated. ``ranks``: the processes that
    train on now (each takes its share of the unfinished epoch's image count). ``split_size``: the images of the
    training split now, which an unfinished epoch's saved order must index.

    Raises:
        BenchError: the training state is damaged (an entry missing or of the wrong kind), or the saved order of
            an unfinished epoch does not fit the training split (``path`` names the file).
    """
    try:
        progress = _restore_training(ckpt, state, generator, device, ranks)
    except torch.OutOfMemoryError:  # the device's limit, not the file's damage
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise _damaged(path, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
                       "bench eval can still evaluate its weights, or start the run again with bench run") from None
    if progress.order is not None and split_size is not None and len(progress.order) != split_size:
        raise BenchError(f"{path} stopped in an epoch over {len(progress.order)} training images, but the training "
                         f"split has {split_size} now: the dataset changed since; restore it, or start the run again")
    return progress


def resume_threads_note(ckpt: dict, device) -> str | None:
    """A warning when a CPU run resumes at another torch thread count than the one that wrote ``ckpt``: CPU kernels
    split their work (and so their float sums) by thread count, so the run may end a few last bits away from the
    uninterrupted one; None when the counts agree, on a GPU, or for a checkpoint that does not say."""
    saved, now = ckpt.get("torch_threads"), torch.get_num_threads()
    if torch.device(device).type != "cpu" or type(saved) is not int or saved == now:
        return None
    return (f"warning: this run was trained with torch_threads={saved} and continues with {now}: CPU kernels split "
            f"their work by thread count, so it may end a few last bits away from the run that never stopped; to "
            f"continue exactly, resume it at {saved} (OMP_NUM_THREADS={saved})")


def resume_precision(ckpt: dict, asked: str, device, path="last.pt") -> tuple[str, str | None]:
    """The precision a run resumed from ``ckpt`` trains in (for its recipe), and a note to log or None. ``asked``:
    the run's configured precision.

    "auto" resolves by device (:func:`bench.engine.build.autocast_dtype_for`), and the device is not part of the
    run's id: resumed elsewhere (a GPU's bf16 run on a CPU) it would continue, silently, in another precision, and
    its row would name only that one. So it continues in the precision ``ckpt`` records (``precision``). A
    ``last.pt`` written before that record resumes as it did, with a note; only fp16 is known there (it alone
    keeps a grad scaler's state).

    Raises:
        BenchError: this device cannot run the recorded precision; or the record is not a precision, or is not
            the one the run's config asks for (``path`` names the file).
    """
    saved = ckpt.get("precision")
    if saved is None and asked == "auto" and ckpt.get("scaler") is not None:
        saved = "fp16"
    if saved is not None and saved not in tuple(DTYPES):  # a tuple: an unhashable record is damage, not a crash
        raise _damaged(path, f"precision {saved!r}, not one of {', '.join(DTYPES)}",
                       "put back the file bench wrote, or start the run again with bench run")
    if saved is not None and asked not in ("auto", saved):
        raise _damaged(path, f"precision {saved}, but its config asks for --precision {asked}",
                       "put back the file bench wrote, or start the run again with bench run")
    here = precision_name(autocast_dtype_for("auto", device))  # what a fresh auto run trains in on this device
    if saved is None:
        if asked != "auto":
            return asked, None
        return asked, (f"note: {path} does not say which precision the run trained in (it was written before bench "
                       f"recorded it); --precision auto continues in {here} on this device, which may not be the "
                       f"one it started in")
    if saved != here and not runs_precision(saved, device):
        started = " (--precision auto where it started)" if asked == "auto" else ""
        raise BenchError(f"{path} trained in {saved}{started}, which this {torch.device(device).type} device cannot "
                         f"run, and continuing in {here} would change what the run computes; resume it on a device "
                         f"that runs {saved}, or start it again with bench run --precision {here}")
    return saved, None


def saved_ranks(ckpt: dict, path) -> int:
    """The number of ranks that wrote ``ckpt`` (the global batch and the config id depend on it)."""
    ranks = ckpt.get("world_size", 1)
    if type(ranks) is not int or ranks < 1:  # bench eval reads it too (the config id): its weights are no way out
        raise _damaged(path, f"world_size {ranks!r}, not a number of ranks",
                       "put back the file bench wrote, or start the run again with bench run")
    return ranks


def _damaged(path, what: str, fix: str) -> BenchError:
    return BenchError(f"{path} holds a damaged training state ({what}); {fix}")


def _restore_training(ckpt: dict, state: TrainState, generator: torch.Generator, device, ranks: int) -> RunProgress:
    _load_optimizer(state.optimizer, ckpt["optimizer"])
    if _saved_part(ckpt, "scheduler", state.scheduler, "learning-rate schedule") is not None:
        state.scheduler.load_state_dict(ckpt["scheduler"])
    if _saved_part(ckpt, "scaler", state.scaler, "fp16 grad scaler") is not None:
        state.scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt["rng"], generator)
    _restore_compact(state.model, _saved_part(ckpt, "compact_embedding", _compact_state(state.model),
                                              "compact token embedding"))
    if state.lookahead is not None:
        state.lookahead.load_state_dict(ckpt["lookahead"])
    if not all(type(ckpt[k]) is int for k in ("epoch", "step")):
        raise TypeError(f"epoch {ckpt['epoch']!r} and step {ckpt['step']!r} must be whole numbers")
    state.epoch, state.step, state.history = ckpt["epoch"], ckpt["step"], list(ckpt["history"])
    p = ckpt["progress"]
    progress = RunProgress(p["train_seconds"], p["train_images"], p["best"], dict(p["metrics"]), p["resumes"] + 1,
                           loss_log=list(p["loss_log"]), loss_window=tuple(p["loss_window"]))
    if p["step_in_epoch"]:
        progress.epoch = EpochProgress(p["step_in_epoch"], p["epoch_loss_sum"].to(device), p["epoch_images"] // ranks,
                                       p["epoch_seconds"])
        progress.order = p["order"].to(device)
    return progress


def _saved_part(ckpt: dict, key: str, ours, what: str):
    """``ckpt[key]``, which must be a state exactly when this run keeps one (``ours`` is not None): a missing one
    would continue from a fresh state (the schedule back at its first step, fp16's scale back at 2**16, the compact
    embedding's rows re-split from their rounded product) and end, silently, elsewhere than the run that never
    stopped; one this run does not keep says the checkpoint and the configuration disagree (another precision)."""
    saved = ckpt.get(key)
    if ours is not None and saved is None:
        raise ValueError(f"no {key} state, which this run's {what} needs")
    if ours is None and saved is not None:
        raise ValueError(f"a {key} state, but this run has no {what}")
    return saved


def _compact_state(model) -> dict | None:
    """The compact embedding's frozen rows and decay product: the dense ``weight`` in the state dict is their
    rounded product, and continuing from it would round differently from the run that never stopped."""
    from .compact_embedding import CompactTokenEmbedding

    emb = getattr(unwrap_model(model), "token_embedding", None)
    if not isinstance(emb, CompactTokenEmbedding):
        return None
    return {"frozen": emb.frozen.detach(), "decay": emb.decay.detach()}


def _restore_compact(model, saved: dict | None):
    from .compact_embedding import CompactTokenEmbedding

    emb = getattr(unwrap_model(model), "token_embedding", None)
    if saved is not None and isinstance(emb, CompactTokenEmbedding):
        with torch.no_grad():
            emb.frozen.copy_(saved["frozen"])
            emb.decay.copy_(saved["decay"])


def load_weights(model: torch.nn.Module, state_dict: dict, ckpt: dict, path):
    """``model.load_state_dict`` that explains a checkpoint of another architecture instead of a shape traceback."""
    problem = explain_mismatch(model, state_dict)
    if problem:
        cfg = ckpt.get("config", {}).get("model", {})
        raise BenchError(f"{path} does not fit encoder {cfg.get('encoder', '?')!r} as this code builds it from the "
                         f"checkpoint's config: {problem}; it was written by bench {ckpt.get('bench_version', '?')} "
                         f"(commit {str(ckpt.get('code', {}).get('git_commit', '?'))[:12]}), so check out that "
                         f"version or retrain")
    model.load_state_dict(state_dict, strict=True)


def explain_mismatch(model: torch.nn.Module, state_dict: dict) -> str | None:
    """One clause naming what differs between ``model`` and ``state_dict`` (vocabulary first), or None."""
    if isinstance(state_dict, dict) and all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        own = model.state_dict().get("token_embedding.weight")
        theirs = state_dict.get("token_embedding.weight")
        if own is not None and theirs is not None and tuple(theirs.shape) != tuple(own.shape):
            return (f"its text vocabulary has {theirs.shape[0]} tokens of width {theirs.shape[1]}, the model built "
                    f"here {own.shape[0]} of width {own.shape[1]} (another tokenizer or --text-width)")
    return state_dict_mismatch(model, state_dict)


def snapshot(obj, non_blocking: bool = False):
    """A copy of ``obj`` whose tensors are on the CPU and share no memory with training, which goes on.

    Containers keep their type and attributes (a state dict's ``_metadata``). ``non_blocking``: CUDA tensors
    are copied into pinned memory on the current stream without waiting for the copies; the caller records an
    event after them and waits for it before reading (:class:`CheckpointSaver` does, on its writer thread).
    Later steps on that stream run after the copies, so the copy is of this moment's values.
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type == "cpu":
            return t.clone()
        if non_blocking and t.device.type == "cuda" and _dense(t):
            try:
                out = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="cpu", pin_memory=True)
            except RuntimeError:  # no pinned memory to be had (a locked-memory limit): copy and wait instead
                return t.to("cpu")
            return out.copy_(t, non_blocking=True)
        return t.to("cpu")
    if isinstance(obj, dict):
        out = type(obj)((k, snapshot(v, non_blocking)) for k, v in obj.items())
        if hasattr(obj, "__dict__"):  # OrderedDict's attributes, e.g. a state dict's _metadata
            out.__dict__.update(obj.__dict__)
        return out
    if isinstance(obj, (list, tuple)):
        items = [snapshot(v, non_blocking) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def _dense(t: torch.Tensor) -> bool:
    """Laid out as a contiguous or channels-last block: its bytes copy as one piece into the same strides."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


class CheckpointSaver:
    """Writes one run's ``last.pt`` (full training state) and ``best.pt`` (weights), atomically, when enabled.

    Under torchrun every rank calls :meth:`save_last` at the same step (it takes part in one all-reduce)
    and rank 0 alone writes.

    The files are written by one background thread, in order: a save copies the state to the CPU and
    returns, while the thread pickles, writes and fsyncs (about a second for the reference model's
    420 MB ``last.pt``, every epoch). On a GPU the copy itself is queued on the training stream into
    pinned memory, so a save does not wait for the device; the thread waits for the copy's event.
    ``best.pt`` of the same step reuses ``last.pt``'s copy of the weights. At most two writes wait at a
    time (one epoch's ``last.pt`` and ``best.pt``), so a save blocks only when the disk is slower than
    training. :meth:`wait`, and leaving the ``with`` block, wait for every write; a failed write raises
    there, or at the next save.
    """

    def __init__(self, run_dir, state: TrainState, header: dict, generator, run_id: str, progress: RunProgress, world,
                 saved_step: int | None = None, enabled: bool = True):
        # header: what every checkpoint of the run records as it is: "config" (the run's config dict) and "classes"
        # (its class names), and the tokenizer's own vocabulary where it has one (bench.clip.tokenizer.own_vocabulary)
        self.run_dir, self.state, self.header, self.enabled = run_dir, state, header, enabled
        self.generator, self.run_id, self.progress, self.world = generator, run_id, progress, world
        self.saved_step = saved_step  # step of the newest last.pt on disk; None until one exists
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._error: BaseException | None = None
        self._weights: tuple[int, dict] | None = None  # (step, CPU copy of the weights) of the newest checkpoint

    def payload(self, metrics: dict, with_training_state: bool, epoch_loss_sum: torch.Tensor | None = None,
                weights: dict | None = None) -> dict:
        """A checkpoint dict: weights, config and code version always; the full training state for ``last.pt``.

        ``epoch_loss_sum`` is the running loss sum of the unfinished epoch as every rank count sees it (the
        mean of the ranks' sums); it defaults to this process's own. ``weights``: the model's state dict, if
        the caller already has it. Tensors stay on the training device: :func:`snapshot` copies them off.
        """
        state, progress = self.state, self.progress
        code = dict(code_version())
        payload = {
            "model": unwrap_model(state.model).state_dict() if weights is None else weights,
            **self.header,
            "epoch": state.epoch,
            "step": state.step,
            "metrics": plain({k: v for k, v in metrics.items() if isinstance(v, (int, float))}),
            "history": plain(state.history),
            "bench_version": code["bench_version"],
            "run_id": self.run_id,
            "code": code,
            "world_size": self.world.size,  # ranks that trained it; config batch_size is per rank
            # CPU kernels split their work by it: a resume at another count is not bit-exact (see resume_threads_note)
            "torch_threads": torch.get_num_threads(),
            # as resolved on the device ("auto" is bf16, fp16 or fp32 by device): a resume elsewhere keeps it
            "precision": precision_name(state.autocast_dtype),
        }
        if with_training_state:
            epoch = progress.epoch
            payload.update(
                format=FORMAT,
                optimizer=state.optimizer.state_dict(),
                scheduler=state.scheduler.state_dict() if state.scheduler is not None else None,
                scaler=state.scaler.state_dict() if state.scaler is not None else None,
                rng=capture_rng(self.generator),
                compact_embedding=_compact_state(state.model),
                lookahead=state.lookahead.state_dict() if state.lookahead is not None else None,
                progress=plain({
                    "train_seconds": progress.train_seconds, "train_images": progress.train_images,
                    "best": progress.best, "metrics": progress.metrics, "resumes": progress.resumes,
                    "step_in_epoch": epoch.steps if epoch else 0,
                    "epoch_loss_sum": (epoch.loss_sum if epoch_loss_sum is None else epoch_loss_sum).detach()
                    if epoch else None,
                    # every rank trains as many images a step: the run's count, whatever the number of ranks
                    "epoch_images": epoch.images * self.world.size if epoch else 0,
                    "epoch_seconds": epoch.seconds if epoch else 0.0,
                    "order": progress.order if epoch is not None and progress.order is not None else None,
                    # the loss log as of this step: a run killed after a later epoch end wrote train_log.csv rows
                    # past this checkpoint, and rows of an unfinished epoch are not on disk yet
                    "loss_log": progress.loss_log, "loss_window": list(progress.loss_window),
                }),
            )
        return payload

    def save_last(self, row: dict | None = None):
        if not self.enabled:
            return
        epoch = self.progress.epoch
        loss_sum = None
        if epoch is not None and self.world.distributed:  # rank-count independent: the mean of the ranks' sums
            loss_sum = mean_over_ranks(epoch.loss_sum, self.world)
        if not self.world.is_main:
            self.saved_step = self.state.step
            return
        row = row if row is not None else (self.state.history[-1] if self.state.history else {})
        self._reap(keep=1)
        payload, copied = self._snapshot_once(lambda weights: self.payload(row, True, loss_sum, weights=weights))
        self._submit(payload, copied, self.run_dir / "last.pt", self.state.step)

    def save_best(self, row: dict):
        if not (self.enabled and self.world.is_main):
            return
        self._reap(keep=1)
        payload, copied = self._snapshot_once(lambda weights: self.payload(row, False, weights=weights))
        self._submit(payload, copied, self.run_dir / "best.pt")

    def _snapshot_once(self, build):
        """The CPU copy of ``build(weights)``'s payload, its weights copied off the device once per step: best.pt
        and last.pt of one step share them, without building the dense token embedding and copying it twice
        (the one writer thread writes the first file, after its copy completed, before the second)."""
        weights = self._weights[1] if self._weights and self._weights[0] == self.state.step else None
        payload = build(weights)
        if weights is None:
            payload, copied = self._snapshot(payload)
            self._weights = (self.state.step, payload["model"])
            return payload, copied
        rest, copied = self._snapshot({k: v for k, v in payload.items() if k != "model"})
        return {**rest, "model": weights}, copied

    def _snapshot(self, payload: dict):
        """(CPU copy, CUDA event that marks it complete or None): on a GPU the copy does not stop training."""
        if not self.state.prompt_tokens.is_cuda:
            return snapshot(payload), None
        copy = snapshot(payload, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()  # after every copy above, on the stream that training continues on
        return copy, copied

    def _submit(self, payload: dict, copied, path, step: int | None = None):
        if self._pool is None:  # one worker: files are written in the order they were saved
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-checkpoint")
        self._pending.append(self._pool.submit(self._save, payload, copied, path, step))

    def _save(self, payload: dict, copied, path, step: int | None):
        if copied is not None:
            copied.synchronize()
        save_checkpoint(payload, path)
        if step is not None:
            self.saved_step = step

    def _reap(self, keep: int = 0, raise_error: bool = True):
        """Wait until at most ``keep`` writes are pending; then raise the first failure, if asked."""
        while len(self._pending) > keep:
            error = self._pending.pop(0).exception()  # blocks until that write ends
            if error is not None and self._error is None:
                self._error = error
        if self._error is not None and raise_error:
            error, self._error = self._error, None
            raise BenchError(f"could not write a checkpoint in {self.run_dir}: {error}; free disk space or pass "
                             f"--no-checkpoints") from error

    def wait(self, raise_error: bool = True):
        """Block until every checkpoint asked for is on disk; re-raise a failure."""
        self._reap(0, raise_error)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.wait(raise_error=exc_type is None)  # an error already on its way out is the one to report
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def describe(self) -> str:
        """Where the last good state is, for messages."""
        self.wait(raise_error=False)
        if not self.enabled:
            return "no checkpoint was kept (--no-checkpoints)"
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint is {self.run_dir / 'last.pt'} (step {self.saved_step})"
