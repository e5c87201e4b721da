"""A timm image model as a CLIP vision tower: trunk, then pool, then projection (after open_clip's ``TimmModel``).

Departures from open_clip's adapter:

- weights are never pretrained: bench has no network, and ``pretrained=True`` is refused with a
  :class:`~bench.errors.BenchError` instead of a download attempt;
- ``image_size`` is passed to timm as ``img_size`` for models whose constructor takes it (ViT, Swin, ...),
  so position embeddings match 32 px inputs instead of 224 px;
- the ``stem`` hook lets a caller adapt the trunk to small inputs after timm built it (see
  ``bench_plugins.timm_encoders``), and unknown pool or projection names are user errors, not asserts.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import timm
import torch
from torch import nn

from ..errors import BenchError
from ..factory_options import boolean, number

POOLS = ("avg", "max", "avgmax", "token", "abs_attn", "rot_attn", "")  # "" = the trunk's own default pooling
PROJS = ("linear", "mlp", "none")


def _create_trunk(model_name: str, image_size: int, timm_kwargs: dict) -> nn.Module:
    if timm_kwargs.pop("pretrained", False):
        raise BenchError(f"timm model {model_name!r}: pretrained weights are never loaded (bench runs offline); "
                         f"drop --encoder-opt pretrained=...")
    if "img_size" not in timm_kwargs:
        try:
            return timm.create_model(model_name, pretrained=False, img_size=image_size, **timm_kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):  # a CNN that has no img_size argument: build it at its default
                raise _bad_option(model_name, exc) from None
    try:
        return timm.create_model(model_name, pretrained=False, **timm_kwargs)
    except TypeError as exc:
        raise _bad_option(model_name, exc) from None


def _check_timm_kwargs(owner: str, trunk: nn.Module, timm_kwargs: dict):
    """timm keeps many options (``drop_rate``, ``drop_path_rate``) until a training forward reads them, so a wrong
    type would fail mid-run: check each against the type of its default in the built model's constructor."""
    import inspect

    try:
        parameters = inspect.signature(type(trunk).__init__).parameters
    except (TypeError, ValueError):
        return
    for key, value in timm_kwargs.items():
        default = parameters[key].default if key in parameters else None
        if isinstance(default, bool):
            boolean(owner, key, value)
        elif isinstance(default, (int, float)) and (key.endswith("_rate") or key.startswith("drop")):
            number(owner, key, value, 0, 1, "a probability, e.g. 0.1", high_open=True)
        elif isinstance(default, (int, float)) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                                   or not math.isfinite(value)):
            raise BenchError(f"{owner}: --encoder-opt {key}={value!r} must be a number (timm's default is {default!r})")


def _bad_option(model_name: str, exc: Exception) -> BenchError:
    return BenchError(f"timm model {model_name!r} rejected an --encoder-opt ({exc}); "
                      f"see timm's documentation of {model_name} for its keyword arguments")


class TimmModel(nn.Module):
    """A timm trunk with its classifier removed, a pooling choice and a projection to ``embed_dim``.

    Args:
        model_name: a timm model name (``timm.list_models()``).
        embed_dim: width of the CLIP embedding the tower outputs.
        image_size: input side in pixels; passed to timm as ``img_size`` where the model takes one.
        pool: ``"avg"`` (default, as open_clip), ``"max"``, ``"avgmax"``, ``"token"`` (a ViT's class token),
            ``""`` (the trunk's own default), or an attention pool over the final feature map: ``"abs_attn"``
            (learned absolute position embedding, like OpenAI's ModifiedResNet) or ``"rot_attn"`` (rotary).
        proj: ``"linear"`` (default, as open_clip), ``"mlp"`` (hidden width ``2 * embed_dim``) or ``"none"``
            (only when the pooled width already equals ``embed_dim``; attention pools project by themselves).
        proj_bias: give the projection a bias (default False, as open_clip).
        drop: dropout before the projection.
        stem: called with the built trunk to adapt it to small inputs (stem stride, pooling); may be None.
        **timm_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``patch_size``, ...).
    """

    def __init__(self, model_name: str, embed_dim: int, image_size: int = 32, pool: str = "avg",
                 proj: str = "linear", proj_bias: bool = False, drop: float = 0.0,
                 stem: Callable[[nn.Module], None] | None = None, **timm_kwargs):
        super().__init__()
        if pool not in POOLS:
            raise BenchError(f"unknown pool {pool!r} for timm model {model_name!r}; choose one of "
                             f"{', '.join(repr(p) for p in POOLS)}")
        if proj not in PROJS:
            raise BenchError(f"unknown proj {proj!r} for timm model {model_name!r}; choose one of {', '.join(PROJS)}")
        owner = f"timm model {model_name!r}"
        drop = number(owner, "drop", drop, 0, 1, "dropout before the projection, e.g. drop=0.1", high_open=True)
        proj_bias = boolean(owner, "proj_bias", proj_bias)
        self.model_name = model_name
        self.image_size = image_size
        self.trunk = _create_trunk(model_name, image_size, dict(timm_kwargs))
        _check_timm_kwargs(owner, self.trunk, timm_kwargs)
        if stem is not None:
            stem(self.trunk)
        attn_pool = self.pool_in_head = pool in ("abs_attn", "rot_attn")
        # Attention pools read the unpooled map; otherwise the trunk pools (and, for MobileNetV3, runs its
        # conv head), so its output width is head_hidden_size rather than num_features.
        try:
            self.trunk.reset_classifier(0, global_pool="" if attn_pool else (pool or None))
        except (AssertionError, ValueError, TypeError, KeyError) as exc:  # timm asserts on pools a model lacks
            raise BenchError(f"timm model {model_name!r} does not support pool={pool!r} ({exc or type(exc).__name__}); "
                             f"try pool=avg") from None
        width = self.trunk.num_features if attn_pool else getattr(self.trunk, "head_hidden_size", None)
        width = width or self.trunk.num_features

        head = OrderedDict()
        if attn_pool:
            head["pool"] = self._attention_pool(pool, width, embed_dim)
            width = embed_dim
        if proj == "linear":
            head["drop"] = nn.Dropout(drop)
            head["proj"] = nn.Linear(width, embed_dim, bias=proj_bias)
        elif proj == "mlp":
            from timm.layers import Mlp

            head["mlp"] = Mlp(width, 2 * embed_dim, embed_dim, drop=(drop, 0.0), bias=(True, proj_bias))
        elif width != embed_dim:
            raise BenchError(f"proj='none' needs the pooled width ({width}) to equal embed_dim ({embed_dim}); "
                             f"use proj=linear or an attention pool")
        self.head = nn.Sequential(head)

    def _attention_pool(self, pool: str, width: int, embed_dim: int) -> nn.Module:
        from timm.layers import AttentionPool2d, RotAttentionPool2d

        # timm's default of 64-wide heads fails for widths like RegNetX-200MF's 368; take the most heads
        # (of 64-wide heads, or 8, 4, 2, 1) that divide the width into a size rotary embeddings accept.
        heads = next((h for h in (width // 64, 8, 4, 2) if h and width % h == 0 and (width // h) % 4 == 0), 1)
        feat_size = self._feature_size(pool)  # also refuses trunks without a 2-d map (ViTs give tokens)
        if pool == "rot_attn":
            return RotAttentionPool2d(width, out_features=embed_dim, num_heads=heads)
        return AttentionPool2d(width, feat_size=feat_size, out_features=embed_dim, num_heads=heads)

    def _feature_size(self, pool: str) -> tuple[int, int]:
        """Height and width of the trunk's final map, from one forward of a zero image (free on the meta device)."""
        device = next(self.trunk.parameters()).device
        was_training = self.trunk.training
        self.trunk.eval()  # BatchNorm in training mode rejects a batch of one 1x1 map
        with torch.no_grad():
            features = self.trunk.forward_features(torch.zeros(1, 3, self.image_size, self.image_size, device=device))
        self.trunk.train(was_training)
        if features.ndim != 4:
            raise BenchError(f"pool={pool!r} needs a feature map (N, C, H, W) but {self.model_name!r} gives "
                             f"{features.ndim}-d features; use pool=avg or pool=token")
        return tuple(features.shape[-2:])

    def forward(self, x):
        if self.pool_in_head:
            return self.head(self.trunk.forward_features(x))
        return self.head(self.trunk(x))
