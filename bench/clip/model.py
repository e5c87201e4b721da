"""CLIP: a vision tower and a causal text Transformer, with OpenAI CLIP's state-dict layout.

``create_model`` builds any registered vision encoder into a CLIP (``create_visual`` the tower alone);
``build_model`` rebuilds the reference model from an OpenAI-layout state dict (inferring the configuration);
``convert_weights`` casts to fp16 the way OpenAI does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..deterministic import take_rows
from .configs import ModelCfg
from .modified_resnet import STEMS, ModifiedResNet
from .text_transformer import LayerNorm, Transformer


class CLIP(nn.Module):
    """OpenAI's CLIP with a ModifiedResNet tower by default, or any ``visual`` module.

    The constructor keeps OpenAI's signature (``vision_patch_size`` must be None: only ResNet towers are
    built here). ``visual`` replaces the vision tower with any module mapping images to ``embed_dim``
    features; ``vision_stem`` picks the ModifiedResNet stem (see :mod:`bench.clip.modified_resnet`).
    """

    def __init__(self, embed_dim=512, image_resolution=32, vision_layers=(2, 2, 2, 2), vision_width=32,
                 vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=512,
                 transformer_heads=8, transformer_layers=6, visual: nn.Module = None, vision_stem="openai"):
        super().__init__()
        if vision_patch_size is not None:
            raise ValueError("vision_patch_size is set: ViT towers are not built by CLIP(); register a ViT encoder instead")
        self.context_length = context_length
        if visual is None:
            vision_heads = vision_width * 32 // 64
            visual = ModifiedResNet(layers=vision_layers, output_dim=embed_dim, heads=vision_heads,
                                    input_resolution=image_resolution, width=vision_width, stem=vision_stem)
        self.visual = visual
        self.transformer = Transformer(width=transformer_width, layers=transformer_layers, heads=transformer_heads)
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        # True above the diagonal = may not attend to later tokens; not part of the state dict
        self.register_buffer("attn_mask", torch.ones(context_length, context_length, dtype=torch.bool).triu_(1),
                             persistent=False)
        self.initialize_parameters()

    def initialize_parameters(self):
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            self.visual.init_parameters()
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    @property
    def dtype(self):
        return self.text_projection.dtype

    def encode_image(self, image):
        return self.visual(image.type(self.dtype))

    def encode_text(self, text):
        """Encode tokens ``(N, L)``; ``L`` may be shorter than ``context_length``.

        A prompt shorter than ``L`` gives the same features as its full 77-token form: the causal mask
        stops every kept position from seeing the cut padding, and pooling reads the end-of-text token.
        """
        length = text.shape[1]
        x = self.token_embedding(text).type(self.dtype) + self.positional_embedding[:length].type(self.dtype)
        x = self.transformer(x, self.attn_mask[:length, :length])
        x = self.ln_final(x).type(self.dtype)
        # the end-of-text token has the largest id, so argmax finds it; a row gather of the flattened states
        # instead of x[arange, eot], whose backward is not deterministic on CPUs (bench.deterministic)
        eot = torch.arange(x.shape[0], device=x.device) * length + text.argmax(dim=-1)
        return take_rows(x.reshape(-1, x.shape[-1]), eot) @ self.text_projection

    def clamped_logit_scale(self):
        return self.logit_scale.exp().clamp(max=100)

    def forward(self, image, text):
        image_features = F.normalize(self.encode_image(image), dim=-1)
        text_features = F.normalize(self.encode_text(text), dim=-1)
        logits_per_image = self.clamped_logit_scale() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def convert_weights(model: nn.Module):
    """Cast the applicable parameters to fp16, as OpenAI CLIP does (LayerNorm, BatchNorm and embeddings stay)."""

    def _convert(module):
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()
        if isinstance(module, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                         "bias_k", "bias_v"):
                tensor = getattr(module, attr)
                if tensor is not None:
                    tensor.data = tensor.data.half()
        for name in ("text_projection", "proj"):
            attr = getattr(module, name, None)
            if isinstance(attr, torch.Tensor):
                attr.data = attr.data.half()

    model.apply(_convert)
    return model


# entries of OpenAI's state dicts that are no weights (its JIT archives' numbers)
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def openai_weights(state_dict: dict) -> dict:
    """An OpenAI-layout state dict without its entries that are no weights (:data:`OPENAI_EXTRA_KEYS`)."""
    return {k: v for k, v in state_dict.items() if k not in OPENAI_EXTRA_KEYS}


def state_dict_mismatch(model: nn.Module, state_dict) -> str | None:
    """One clause naming what in ``state_dict`` does not fit ``model`` (a weight that is no tensor, tensors of other
    shapes, missing and unexpected keys: how many, and the first of each), or None where its keys and shapes fit."""
    if not isinstance(state_dict, dict):
        return f"its weights are {_a(type(state_dict).__name__)}, not a state dict"
    foreign = next((k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)), None)
    if foreign is not None:
        return f"its weight {foreign!r} is {_a(type(state_dict[foreign]).__name__)}, not a tensor"
    own = model.state_dict()
    shaped = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    parts = []
    if shaped:
        key, theirs, ours = shaped[0]
        parts.append(f"{_tensors(len(shaped))} {'differ' if len(shaped) > 1 else 'differs'} in shape (first {key}: "
                     f"{list(theirs)} in the file, {list(ours)} here)")
    if missing:
        parts.append(f"{_tensors(len(missing))} missing (first {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
    return ", ".join(parts) or None


def _tensors(n: int) -> str:
    return f"{n} tensor{'s' if n > 1 else ''}"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def infer_config(state_dict: dict, stem: str = "openai") -> dict:
    """OpenAI's configuration inference for ResNet CLIP checkpoints, as CLIP() keyword arguments."""
    if "visual.layer1.0.conv1.weight" not in state_dict:
        raise ValueError("not an OpenAI-layout ModifiedResNet CLIP state dict (no 'visual.layer1.0.conv1.weight'); "
                         "ViT and timm towers are rebuilt with create_model from the run's config")
    counts = [len({k.split(".")[2] for k in state_dict if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)]
    pos = state_dict["visual.attnpool.positional_embedding"].shape[0]
    output_width = round((pos - 1) ** 0.5)
    if output_width ** 2 + 1 != pos:
        raise ValueError(f"visual.attnpool.positional_embedding has {pos} rows, not a square map plus one")
    transformer_width = state_dict["ln_final.weight"].shape[0]
    return dict(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=output_width * STEMS[stem],
        vision_layers=tuple(counts),
        vision_width=state_dict["visual.layer1.0.conv1.weight"].shape[0],
        vision_patch_size=None,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=transformer_width,
        transformer_heads=transformer_width // 64,
        transformer_layers=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")}),
        vision_stem=stem,
    )


def build_model(state_dict: dict, stem: str = "openai") -> CLIP:
    """Rebuild a ResNet CLIP from an OpenAI-layout state dict and load it strictly.

    The configuration is inferred from the tensors' shapes as OpenAI's ``build_model`` does. Unlike
    OpenAI's, the model is cast to fp16 only when the checkpoint itself is fp16, so fp32 checkpoints train
    and run on CPU. ``stem="cifar"`` rebuilds a ``modified_resnet_cifar`` tower (its state dict has the same
    keys; only the resolution it implies differs).
    """
    state_dict = openai_weights(state_dict)
    model = CLIP(**infer_config(state_dict, stem))
    if state_dict["text_projection"].dtype == torch.float16:
        convert_weights(model)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def create_model(encoder: str = "modified_resnet", embed_dim: int = 512, image_resolution: int = 32,
                 context_length: int = 77, vocab_size: int = 49408, transformer_width: int = 512,
                 transformer_heads: int = 8, transformer_layers: int = 6, encoder_opts: dict | None = None) -> CLIP:
    """Create a CLIP whose vision tower is the registered encoder ``encoder``.

    With no arguments this is the reference configuration of the spec (51,688,753 parameters).

    Args:
        encoder: a name from ``bench list encoders`` (or ``timm:<model>``).
        encoder_opts: keyword arguments for the encoder factory; None values are dropped so the
            encoder's defaults hold.
    """
    visual = create_visual(encoder, embed_dim, image_resolution, encoder_opts)
    return CLIP(embed_dim=embed_dim, image_resolution=image_resolution, context_length=context_length,
                vocab_size=vocab_size, transformer_width=transformer_width, transformer_heads=transformer_heads,
                transformer_layers=transformer_layers, visual=visual)


def create_visual(encoder: str, embed_dim: int, image_resolution: int, encoder_opts: dict | None = None) -> nn.Module:
    """The vision tower :func:`create_model` puts in a CLIP: the registered encoder ``encoder``'s factory called
    with the sizes and ``encoder_opts`` (None values dropped, so the encoder's defaults hold)."""
    from ..host.manager import get_entry

    entry = get_entry("encoders", encoder)
    opts = {k: v for k, v in (encoder_opts or {}).items() if v is not None}
    return entry.create(embed_dim, image_resolution, **opts)


def averages_views(visual: nn.Module) -> bool:
    """Whether the vision tower ``visual`` evaluates with test-time augmentation: its optional
    ``test_time_augmentation`` attribute is True (docs/plugins.md). A run evaluates such a tower once more with the
    attribute False and reports ``zeroshot_top1_no_tta``; :func:`reports_without_tta` asks the same question
    before a run."""
    return getattr(visual, "test_time_augmentation", False) is True


def reports_without_tta(cfg: ModelCfg) -> bool:
    """Whether a run of ``cfg`` reports ``zeroshot_top1_no_tta``, known without training: :func:`averages_views`
    of the tower :func:`create_visual` builds for it, built on PyTorch's meta device (shapes, no storage, init a
    no-op: milliseconds for any built-in tower). A factory that cannot build on the meta device is built for real on
    the CPU, under a forked RNG so the caller's draws do not move: slower, but still the run's own answer; a
    factory that fails there too raises its one-line error, as the run would."""
    args = (cfg.encoder, cfg.embed_dim, cfg.image_resolution, dict(cfg.encoder_opts))
    try:
        with torch.device("meta"):
            return averages_views(create_visual(*args))
    except Exception:  # noqa: BLE001 - a plugin's factory may not support meta tensors: ask the real build
        pass
    with torch.random.fork_rng(devices=[]):
        return averages_views(create_visual(*args))


def create_model_from_cfg(cfg: ModelCfg) -> CLIP:
    t = cfg.text
    return create_model(cfg.encoder, cfg.embed_dim, cfg.image_resolution, t.context_length, t.vocab_size, t.width,
                        t.heads, t.layers, dict(cfg.encoder_opts))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
