"""The optimizers and the schedule: fused AdamW (the reference recipe), or for the vision tower airbench's Nesterov
SGD with decoupled hyperparameters (and optionally Muon on its conv filters) beside AdamW for the rest; per-tower
learning rates and weight decays, a larger learning rate for normalisation parameters; linear warm-up then
per-step cosine or linear decay."""
from __future__ import annotations

import inspect
import math
from collections import defaultdict

import torch
from torch import nn

from ..errors import BenchError
from .recipe import TrainRecipe

# the layers whose parameters are per-channel shifts and scales (airbench's "biases" of its bias_scaler)
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def nesterov_sgdw_(params, grads, buffers, lr, momentum: float, weight_decay: float):
    """One Nesterov SGD step whose hyperparameters do not interact (airbench's decoupling), in place::

        p   <- p * (1 - lr * wd)                   # decoupled, as AdamW's: not fed through the momentum
        buf <- m * buf + g                         # buf starts at 0
        p   <- p - lr * (1 - m) * (g + m * buf)    # Nesterov

    Why the ``(1 - m)``: under a constant gradient the Nesterov update tends to ``g / (1 - m)``, so torch's SGD
    takes steps that grow with the momentum; here a step is ``lr * g`` at any momentum, so the momentum can be
    tuned without retuning the learning rate (airbench divides by the same kind of factor). The decay is
    ``lr * wd`` per step, as AdamW's, whatever the momentum. ``lr`` may be a 0-dim device tensor (CUDA graphs):
    nothing here reads a host value. Equals ``torch.optim.SGD(lr=lr * (1 - m), momentum=m, nesterov=True)``
    after the decay (tests/engine/test_optim.py).
    """
    if weight_decay:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_add_(buffers, grads)
    updates = torch._foreach_add(grads, buffers, alpha=momentum)
    torch._foreach_mul_(updates, -lr * (1 - momentum))
    torch._foreach_add_(params, updates)


# Keller Jordan's quintic Newton-Schulz coefficients (Muon; airbench94_muon): fast convergence of the singular
# values towards 1 (into roughly [0.7, 1.2]), not exact orthogonality
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrices: torch.Tensor, steps: int = 3, eps: float = 1e-7, dtype=torch.bfloat16) -> torch.Tensor:
    """Newton-Schulz on a ``(B, m, n)`` stack at once: each matrix scaled to unit Frobenius norm, then ``steps``
    quintic iterations, which map ``U S V^T`` to about ``U V^T`` (airbench94_muon's ``zeropower_via_newtonschulz5``,
    batched over same-shaped matrices). Computed in ``dtype`` (bf16 as airbench; tests use float64)."""
    x = matrices.to(dtype)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    a, b, c = NEWTON_SCHULZ
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def muon_(params, grads, buffers, lr, momentum: float, dtype=torch.bfloat16):
    """One step of airbench94_muon's Muon on conv filters, in place::

        buf <- m * buf + g;   u <- g + m * buf                  # Nesterov
        p   <- p * sqrt(out_channels) / ||p||                    # weight norm held fixed
        p   <- p - lr * orthogonalize(u as out_channels x rest)

    Filters of the same shape are orthogonalised together in one batched call (one set of matmuls for many
    layers). No weight decay: the renormalisation fixes the weight's norm. ``lr`` may be a device tensor.
    ``dtype`` of the Newton-Schulz matmuls: bf16 as airbench, on every device (on the CPU comparison of
    docs/performance.md float32 did no better).
    """
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_add_(buffers, grads)
    updates = torch._foreach_add(grads, buffers, alpha=momentum)
    by_shape = defaultdict(list)
    for i, p in enumerate(params):
        by_shape[tuple(p.shape)].append(i)
    for shape, members in by_shape.items():
        stacked = orthogonalize(torch.stack([updates[i].reshape(shape[0], -1) for i in members]), dtype=dtype)
        for k, i in enumerate(members):
            p = params[i]
            p.mul_(shape[0] ** 0.5 / p.norm())
            p.sub_(stacked[k].view(shape).to(p.dtype) * lr)


# torch wraps an optimizer class's step with its hooks on first use; the bare loop over the groups is below that
_ADAMW_STEP = inspect.unwrap(torch.optim.AdamW.step)


class MixedAdamW(torch.optim.AdamW):
    """AdamW, except that param groups with ``sgd=True`` take :func:`nesterov_sgdw_` steps with their ``momentum``
    and groups with ``muon=True`` :func:`muon_` steps.

    One optimizer, so one schedule, one state dict and one CUDA graph hold all; the AdamW groups are stepped by
    torch's own AdamW (fused when asked), so they equal ``torch.optim.AdamW`` exactly. Why mixed: airbench's SGD
    and Muon suit the convolutional vision tower, and Transformers train badly under SGD (the text tower stays on
    AdamW, as Muon's users keep AdamW for what is not a hidden matrix). An SGD parameter whose gradient has always
    been zero only decays, as under AdamW, so :mod:`bench.engine.compact_embedding` stays exact either way.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        try:  # AdamW's step sees its own groups only; unwrapped, or the step hooks would run twice
            self.param_groups = [g for g in groups if not (g.get("sgd") or g.get("muon"))]
            _ADAMW_STEP(self)
        finally:
            self.param_groups = groups
        # fp16's loss scaling (torch's GradScaler) hands a fused optimizer the scale and an overflow flag; fused AdamW
        # handled its groups above inside its kernel, these groups do it here: skip on an overflow, else unscale
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        if found_inf is not None and bool(found_inf):  # a host read: such steps are not captured (build_engine)
            return loss
        for group in groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params or not (group.get("sgd") or group.get("muon")):
                continue
            grads, buffers = [p.grad for p in params], [self._momentum_buffer(p) for p in params]
            if grad_scale is not None:
                grads = torch._foreach_div(grads, grad_scale)
            if group.get("muon"):
                muon_(params, grads, buffers, group["lr"], group["momentum"])
            else:
                nesterov_sgdw_(params, grads, buffers, group["lr"], group["momentum"], group["weight_decay"])
        return loss

    def _momentum_buffer(self, p):
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = torch.zeros(())  # unused; torch's Adam.load_state_dict expects one in every state
        return state["momentum_buffer"]


def param_groups(model, recipe: TrainRecipe) -> list[dict]:
    """The trainable parameters of a CLIP as optimizer groups, with ``recipe``'s settings.

    - The vision tower (``model.visual``) at ``lr`` and ``weight_decay``; its normalisation-layer parameters
      (:data:`NORM_LAYERS`) at ``lr * norm_lr_scale`` with the decay divided by the scale, so the decay per step
      (``lr * wd``) is unchanged: airbench's bias_scaler scales the step, not the decay.
    - Everything else (text tower, token embedding, projections, temperature) at ``text_lr`` and
      ``text_weight_decay`` (None: the vision tower's values).
    - ``optimizer="sgd"``: the vision groups are marked for :class:`MixedAdamW`'s Nesterov step with ``momentum``.
    - ``optimizer="muon"``: as sgd, and the vision tower's conv filters (4-d weights) move to a Muon group at
      ``muon_lr`` and ``muon_momentum``, without weight decay (airbench94_muon).
    - A vision parameter the encoder lists in ``frozen_after_epochs`` gets a group of its own, with its group's
      hyperparameters and ``train_epochs`` (:func:`build_scheduler` freezes it after that many epochs).

    One group when nothing differs, so the reference recipe's optimizer and checkpoints are as before.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    lr, weight_decay, norm_lr_scale = recipe.lr, recipe.weight_decay, recipe.norm_lr_scale
    text_lr = lr if recipe.text_lr is None else recipe.text_lr
    text_weight_decay = weight_decay if recipe.text_weight_decay is None else recipe.text_weight_decay
    visual = getattr(model, "visual", None)
    spans = frozen_after_epochs(visual)
    sgd = recipe.optimizer in ("sgd", "muon")
    if norm_lr_scale == 1 and (text_lr, text_weight_decay) == (lr, weight_decay) and not sgd and not spans:
        return [dict(params=params)]
    vision = {id(p) for p in visual.parameters()} if visual is not None else set()
    norm = {id(p) for m in visual.modules() if isinstance(m, NORM_LAYERS)
            for p in m.parameters(recurse=False)} if visual is not None else set()
    tower = dict(sgd=True, momentum=recipe.momentum) if sgd else {}
    groups = [dict(params=[p for p in params if id(p) in vision and id(p) not in norm], lr=lr,
                   weight_decay=weight_decay, **tower),
              dict(params=[p for p in params if id(p) in norm], lr=lr * norm_lr_scale,
                   weight_decay=weight_decay / norm_lr_scale, **tower),
              dict(params=[p for p in params if id(p) not in vision], lr=text_lr, weight_decay=text_weight_decay)]
    if recipe.optimizer == "muon":
        filters = {id(p) for p in groups[0]["params"] if p.ndim == 4}
        groups[0]["params"] = [p for p in groups[0]["params"] if id(p) not in filters]
        # second, so the first group is still at --lr (the lr that history.csv records)
        groups.insert(1, dict(params=[p for p in params if id(p) in filters], lr=recipe.muon_lr, weight_decay=0.0,
                              muon=True, momentum=recipe.muon_momentum))
    for group in groups[:-1]:  # a vision parameter with a span leaves its group for one of its own, same settings
        for epochs in sorted({spans[id(p)] for p in group["params"] if id(p) in spans}):
            groups.append({**group, "params": [p for p in group["params"] if spans.get(id(p)) == epochs],
                           "train_epochs": epochs})
        group["params"] = [p for p in group["params"] if id(p) not in spans]
    return [g for g in groups if g["params"]]


def frozen_after_epochs(visual) -> dict[int, float]:
    """``id(parameter) -> epochs`` from the vision encoder's optional ``frozen_after_epochs`` attribute, a dict of
    its parameter names (as in ``visual.named_parameters()``) to the number of epochs each trains before it is
    frozen (airbench's whitening bias: 3). The contract is in docs/plugins.md.

    Raises:
        BenchError: a name the encoder does not have, or a negative number of epochs.
    """
    declared = getattr(visual, "frozen_after_epochs", None) or {}
    if not declared:
        return {}
    named = dict(visual.named_parameters())
    spans = {}
    for name, epochs in declared.items():
        if name not in named:
            raise BenchError(f"the encoder's frozen_after_epochs names {name!r}, which is not one of its parameters "
                             f"(e.g. {next(iter(named), 'none')!r}); use the names of visual.named_parameters()")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs < 0:
            raise BenchError(f"the encoder's frozen_after_epochs[{name!r}] must be a number of epochs >= 0, "
                             f"got {epochs!r}")
        if named[name].requires_grad:
            spans[id(named[name])] = float(epochs)
    return spans


def build_optimizer(model, recipe: TrainRecipe, device: torch.device,
                    capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW over all trainable parameters, as the reference recipe, with the fused kernel (one pass over each
    tensor); ``recipe.optimizer="sgd"``: :class:`MixedAdamW`, Nesterov SGD on the vision tower; ``"muon"``: the same
    with its conv filters on Muon. The groups are :func:`param_groups`'.

    Fused AdamW exists on CPU since torch 2.4 and is several times faster there than foreach (measured
    in docs/performance.md); older torch falls back to foreach. ``capturable`` (CUDA graphs) keeps the
    step count and the learning rates as device tensors, so a replayed graph reads the current lr.
    ``recipe.fused=False`` asks for foreach (for measuring the difference).
    """
    kind, lr, weight_decay = recipe.optimizer, recipe.lr, recipe.weight_decay
    if kind not in ("adamw", "sgd", "muon"):
        raise ValueError(f"unknown optimizer {kind!r}; adamw, sgd or muon")
    groups = param_groups(model, recipe)
    cls = torch.optim.AdamW if kind == "adamw" else MixedAdamW
    if capturable:  # one lr tensor per group: the scheduler writes each in place
        for group in groups:
            group["lr"] = torch.tensor(group.get("lr", lr), device=device)
        return cls(groups, lr=groups[0]["lr"], weight_decay=weight_decay, fused=True, capturable=True)
    try:
        if recipe.fused:
            return cls(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # pragma: no cover - torch < 2.4 has no fused CPU kernel
        pass
    return cls(groups, lr=lr, weight_decay=weight_decay, foreach=True)


def build_scheduler(optimizer, total_steps: int, warmup_steps: int = 0, kind: str = "cosine",
                    steps_per_epoch: int | None = None):
    """Linear warm-up, then ``kind`` decay to zero over the remaining steps (per step, not per epoch):
    ``cosine`` (the reference recipe) or ``linear`` (with the warm-up, airbench's triangular schedule).

    A group with ``train_epochs`` (:func:`frozen_after_epochs`) follows the same schedule for that many epochs of
    ``steps_per_epoch`` steps, then has lr 0: under AdamW and :func:`nesterov_sgdw_` alike (decoupled decay is
    lr x wd) it no longer changes, which freezes it without touching ``requires_grad`` (a CUDA graph replays on).
    """

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - progress if kind == "linear" else 0.5 * (1 + math.cos(math.pi * progress))

    def until(last_step):
        return lambda step: factor(step) if step < last_step else 0.0

    spans = [g.get("train_epochs") for g in optimizer.param_groups]
    if any(s is not None for s in spans) and steps_per_epoch is None:
        raise ValueError("a param group has train_epochs: build_scheduler needs steps_per_epoch")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [factor if s is None else until(round(s * steps_per_epoch)) for s in spans])
