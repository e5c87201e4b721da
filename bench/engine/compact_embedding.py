"""Train only the token-embedding rows that the prompts use; decay the other rows exactly, lazily.

Why: the reference text tower has a 49408 x 512 token embedding (25.3M of the model's 51.7M parameters),
but CIFAR-10 training prompts use about twenty distinct token ids. Every other row gets a gradient of
exactly zero at every step, so AdamW's moments of that row stay exactly zero and its update reduces to
pure decoupled weight decay, ``p <- p * (1 - lr_t * wd)``. Dense AdamW still reads and writes all 25M
rows (weight, grad, two moments) each step, and autograd materialises a dense 25M-row gradient: on a CPU
that is most of a training step.

:class:`CompactTokenEmbedding` replaces ``model.token_embedding``: the K rows used by the prompt table
are an ordinary trainable parameter (``active``, updated by the same AdamW step as before, so their
values are those of dense training); the other rows stay in a frozen buffer together with one scalar,
the product of every step's ``(1 - lr_t * wd)`` so far, kept in float64. Any read (forward with any
token ids, ``state_dict``) sees ``frozen * decay`` for inactive rows: equal to the dense run in exact
arithmetic, and in floating point closer to it than the per-step fp32 multiplications dense AdamW does
(one rounding instead of one per step). The state dict keeps OpenAI's single ``token_embedding.weight``.

Exactness needs: AdamW (or Adam) over the embedding, moments starting at zero (a fresh optimizer), and
no other loss term touching inactive rows. :func:`install` checks the optimizer; the step hook reads the
learning rate as the optimizer used it, as a float or as a device tensor (CUDA graphs), without a sync.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CompactTokenEmbedding(nn.Module):
    """A token embedding whose rows ``active_ids`` train and whose other rows only decay (see module doc)."""

    def __init__(self, weight: torch.Tensor, active_ids: torch.Tensor):
        super().__init__()
        active_ids = torch.unique(active_ids.to(weight.device, torch.long))  # sorted
        self.num_embeddings, self.embedding_dim = weight.shape
        self.active = nn.Parameter(weight.detach()[active_ids].clone())
        self.register_buffer("frozen", weight.detach().clone(), persistent=False)
        self.register_buffer("active_ids", active_ids, persistent=False)
        # row id -> index into ``active`` (0 for inactive rows; masked out by ``is_active``)
        slot = torch.zeros(self.num_embeddings, dtype=torch.long, device=weight.device)
        slot[active_ids] = torch.arange(len(active_ids), device=weight.device)
        self.register_buffer("slot", slot, persistent=False)
        is_active = torch.zeros(self.num_embeddings, dtype=torch.bool, device=weight.device)
        is_active[active_ids] = True
        self.register_buffer("is_active", is_active, persistent=False)
        # product of (1 - lr_t * wd) over the steps since ``frozen`` was last written; float64 on purpose
        self.register_buffer("decay", torch.ones((), dtype=torch.float64, device=weight.device), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """The full ``(num_embeddings, dim)`` table as dense training would hold it now (a new tensor)."""
        full = (self.frozen.double() * self.decay).to(self.frozen.dtype)
        full[self.active_ids] = self.active.detach().to(full.dtype)
        return full

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        trained = F.embedding(self.slot[ids], self.active)
        # inactive ids occur only outside training (other templates at evaluation); no host sync to test it
        decayed = F.embedding(ids, self.frozen) * self.decay.to(self.frozen.dtype)
        return torch.where(self.is_active[ids].unsqueeze(-1), trained, decayed.to(trained.dtype))

    @torch.no_grad()
    def apply_decay(self, lr, weight_decay: float, found_inf=None):
        """Account for one AdamW step of the inactive rows: ``lr`` is a float or a 0-dim device tensor.
        ``found_inf``: fp16's overflow flag of the step (a device tensor); a skipped step decays nothing."""
        if weight_decay:
            factor = 1 - lr * weight_decay
            if found_inf is not None:  # no host read: the choice is made on the device (CUDA graphs)
                factor = torch.where(found_inf.to(self.decay.device) > 0, torch.ones_like(self.decay),
                                     torch.as_tensor(factor, dtype=self.decay.dtype, device=self.decay.device))
            self.decay.mul_(factor)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        # OpenAI layout: one dense ``weight``, so checkpoints load into a plain CLIP
        destination[prefix + "weight"] = self.weight

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        value = state_dict[key]
        if tuple(value.shape) != (self.num_embeddings, self.embedding_dim):
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)}, the "
                              f"shape in current model is {(self.num_embeddings, self.embedding_dim)}")
            return
        with torch.no_grad():
            self.frozen.copy_(value)
            self.active.copy_(value[self.active_ids.to(value.device)])
            self.decay.fill_(1.0)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, trained rows={len(self.active_ids)}"


def install(model: nn.Module, token_ids: torch.Tensor) -> CompactTokenEmbedding:
    """Replace ``model.token_embedding`` by a :class:`CompactTokenEmbedding` training the rows in ``token_ids``.

    Call before building the optimizer (it must see ``active`` instead of the dense weight), then
    :func:`attach` the optimizer.
    """
    current = model.token_embedding
    if isinstance(current, CompactTokenEmbedding):
        return current
    compact = CompactTokenEmbedding(current.weight, token_ids.reshape(-1))
    model.token_embedding = compact
    return compact


def attach(compact: CompactTokenEmbedding, optimizer: torch.optim.Optimizer):
    """Decay the inactive rows after every ``optimizer.step()`` with the lr and wd that step used.

    Raises:
        TypeError: the optimizer is not Adam/AdamW, for which a zero-gradient row is not pure decay.
    """
    index = next((i for i, g in enumerate(optimizer.param_groups) if any(p is compact.active for p in g["params"])),
                 None)
    if index is None:
        raise ValueError("the optimizer does not hold the compact embedding's rows; build it after install()")
    group = optimizer.param_groups[index]
    decoupled = isinstance(optimizer, torch.optim.AdamW) or group.get("decoupled_weight_decay", False)
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) or (group["weight_decay"] and not decoupled):
        # SGD momentum or Adam's L2 decay feed the weight into the update, so zero-gradient rows are not pure decay
        raise TypeError(f"the compact token embedding is exact only under AdamW (or Adam without weight decay); "
                        f"got {type(optimizer).__name__}")

    def hook(opt, args, kwargs):
        # look the group up at each step: optimizer.load_state_dict (a resume) replaces the group dicts
        current = opt.param_groups[index]
        # under fp16 a fused optimizer is called even for a step it skips; torch's GradScaler sets found_inf
        compact.apply_decay(current["lr"], current["weight_decay"], getattr(opt, "found_inf", None))

    return optimizer.register_step_post_hook(hook)
