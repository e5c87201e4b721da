"""Pretrained CLIPs under bench's protocol: open_clip models (a pretrained tag or a local weights file) and
OpenAI-format state dicts, each evaluated with its own image preprocessing.

bench evaluates a model through ``encode_image`` / ``encode_text`` on images it holds as uint8 and on trimmed
token tables (:func:`bench.clip.tokenizer.trim_tokens`). :class:`Preprocessed` adapts a pretrained CLIP to that:

- ``preprocess_uint8`` turns bench's uint8 test images into what the model was trained on, image by image through
  the model's own PIL transform (open_clip's: its image size, interpolation, crop and normalisation), as
  CLIP_benchmark and open_clip's zero-shot code do; :func:`bench.evaluation.zero_shot.image_features` calls it in
  place of bench's [-1, 1] normalisation;
- ``encode_text`` pads the trimmed tokens back to the model's context with 0, which undoes the trim exactly (an
  open_clip CLIP adds its whole positional table, so it needs the full context). An OpenAI state dict is loaded
  as bench's own CLIP, which takes trimmed tokens as they are: no padding there.
"""
from __future__ import annotations

import difflib
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BenchError, one_line_cause

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
HUB_SCHEMES = ("hf-hub:", "local-dir:")  # open_clip names whose config (and tags) live outside open_clip


class Preprocessed(torch.nn.Module):
    """A pretrained CLIP with its own preprocessing; ``transform`` maps one RGB PIL image to a CHW tensor.
    ``pad_text``: pad trimmed tokens back to ``context_length`` (a model that needs its whole context)."""

    def __init__(self, model: torch.nn.Module, transform, context_length: int, pad_text: bool = True):
        super().__init__()
        self.model, self.transform, self.context_length = model, transform, context_length
        self.pad_text = pad_text

    def preprocess_uint8(self, images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        arrays = images.permute(0, 2, 3, 1).cpu().numpy()
        return torch.stack([self.transform(Image.fromarray(a)) for a in arrays]).to(images.device)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pad_text and tokens.shape[1] < self.context_length:
            tokens = F.pad(tokens, (0, self.context_length - tokens.shape[1]))
        return self.model.encode_text(tokens)


def openai_transform(size: int):
    """OpenAI CLIP's evaluation preprocessing: bicubic resize of the short side, centre crop, its mean and std."""
    from PIL import Image

    mean, std = np.asarray(OPENAI_MEAN, np.float32), np.asarray(OPENAI_STD, np.float32)

    def transform(img):
        w, h = img.size
        scale = size / min(w, h)
        img = img.convert("RGB").resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
        x = np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255.0
        return torch.from_numpy(((x - mean) / std).transpose(2, 0, 1).copy())

    return transform


def is_openai_state_dict(obj) -> bool:
    """An OpenAI-layout CLIP state dict (what :func:`bench.build_model` loads): its text tower's tables at the top."""
    return isinstance(obj, dict) and all(k in obj for k in ("positional_embedding", "text_projection",
                                                            "token_embedding.weight"))


def load_openai_state_dict(state_dict: dict, device) -> tuple[Preprocessed, dict]:
    """An OpenAI-format checkpoint as a bench CLIP, with OpenAI's preprocessing at its image size."""
    from .model import build_model

    try:
        model = build_model(state_dict).float()
    except (KeyError, RuntimeError, ValueError, IndexError, TypeError) as exc:  # a tensor of another shape
        raise BenchError(f"the state dict is OpenAI-format but build_model cannot load it "
                         f"({_misfit(exc, state_dict)})") from None
    size = int(model.visual.input_resolution)
    context = int(state_dict["positional_embedding"].shape[0])
    info = {"image_size": size, "interpolation": "bicubic", "normalization": _normalization(OPENAI_MEAN, OPENAI_STD),
            "context_length": context}
    # bench's CLIP reads as much of its positional table as the tokens are long (exact under the causal mask)
    return Preprocessed(model, openai_transform(size), context, pad_text=False).to(device).eval(), info


def _misfit(exc: BaseException, state_dict: dict, model: torch.nn.Module | None = None) -> str:
    """What in ``state_dict`` did not fit, for the one-line error of a load that raised ``exc``: the first tensor of
    another shape, missing or unexpected key, as :func:`bench.clip.model.state_dict_mismatch` names them.

    torch's own message puts them on the lines after a header ("Error(s) in loading state_dict for CLIP:"), and a
    KeyError's may be a bare key, so neither is the detail. ``model``: the one ``state_dict`` was loaded into;
    default the CLIP an OpenAI-layout dict's shapes describe. Asked only once a load failed: torch's load tolerates
    some keys the comparison would name (batch norm's ``num_batches_tracked`` in an old file)."""
    from .model import CLIP, infer_config, openai_weights, state_dict_mismatch

    if model is None:
        state_dict = openai_weights(state_dict)  # as build_model reads it
        try:
            model = CLIP(**infer_config(state_dict))
        except Exception as built:  # noqa: BLE001 - the shapes describe no CLIP; the load's error says why
            if isinstance(built, KeyError) and built.args:
                return f"it has no {built.args[0]!r}, which an OpenAI-layout CLIP has"
            model = None
    problem = state_dict_mismatch(model, state_dict) if model is not None else None
    return problem or one_line_cause(exc)


def _normalization(mean, std) -> str:
    return "mean=" + ",".join(f"{m:.4g}" for m in mean) + " std=" + ",".join(f"{s:.4g}" for s in std)


def resolve_open_clip_name(name: str) -> str:
    """An open_clip model name, or a model-config JSON file (open_clip's format) registered under its stem."""
    import open_clip  # here, not at the top: it takes seconds, and only --open-clip needs it
    path = Path(name).expanduser()
    if name.endswith(".json"):
        if not path.is_file():
            raise BenchError(f"--open-clip {name}: no such model config file")
        open_clip.add_model_config(path)
        return path.stem
    if name.startswith(HUB_SCHEMES) or name in open_clip.list_models():
        return name
    close = difflib.get_close_matches(name, open_clip.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise BenchError(f"unknown open_clip model {name!r}; {hint}open_clip.list_models() names them, or pass a model "
                     f"config file (.json)")


def load_open_clip(name: str, pretrained: str | None, device) -> tuple[Preprocessed, object, dict]:
    """The open_clip model ``name`` with weights from a pretrained tag (downloaded by open_clip) or a local file
    (a state dict, or an open_clip training checkpoint); returns the adapted model, its tokenizer and what the
    protocol records (its name, image size, interpolation, normalisation, weights file)."""
    import open_clip
    name = resolve_open_clip_name(name)
    weights_file = _weights_file(pretrained)
    if weights_file is None and pretrained is not None and not name.startswith(HUB_SCHEMES):
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            have = f"its tags: {', '.join(tags)}" if tags else "it has no pretrained tags"
            raise BenchError(f"open_clip has no pretrained tag {pretrained!r} for {name} ({have}); "
                             f"or pass a weights file with --pretrained FILE")
    # open_clip and huggingface_hub log (a model built without a tag "initialised randomly", each failed download
    # try); bench says what matters in one line, so their records are held back while the model is built
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None if weights_file is not None else pretrained, device="cpu")
    except Exception as exc:  # noqa: BLE001 - a download or config failure, said in one line
        if pretrained is not None and weights_file is None:
            raise BenchError(f"could not fetch open_clip weights {name}/{pretrained} ({one_line_cause(exc)}); "
                             f"offline, pass a local weights file with --pretrained FILE") from None
        raise BenchError(f"open_clip cannot build {name} ({one_line_cause(exc)})") from None
    finally:
        logging.disable(previous)
    if weights_file is not None:
        _load_weights_file(model, weights_file, name)
    tokenizer = open_clip.get_tokenizer(name)
    context = int(getattr(tokenizer, "context_length", None) or model.context_length)
    size, interpolation, mean, std = _transform_facts(preprocess)
    info = {"name": name, "image_size": size, "interpolation": interpolation,
            "normalization": _normalization(mean, std), "context_length": context,
            "weights_file": None if weights_file is None else str(weights_file)}
    return Preprocessed(model, preprocess, context).to(device).eval(), tokenizer, info


def _weights_file(pretrained: str | None) -> Path | None:
    """``pretrained`` as a local file, None for a tag; a path to nothing is an error, not a tag to download."""
    if pretrained is None:
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    if path.suffix in WEIGHT_SUFFIXES or "/" in pretrained or path.is_dir():
        raise BenchError(f"--pretrained {pretrained}: no such weights file; pass a file or an open_clip tag")
    return None


def _load_weights_file(model, path: Path, name: str):
    from ..safe_load import load_checkpoint

    if path.suffix == ".safetensors":  # open_clip's Hub weights (open_clip_model.safetensors): tensors only, no pickle
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file, said in one line
            raise BenchError(f"{path} is not a readable safetensors file ({one_line_cause(exc)}); it may be "
                             f"truncated") from None
    else:
        state = load_checkpoint(path)  # weights_only: a planted pickle is refused
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # open_clip's training checkpoints
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise BenchError(f"{path} holds no state dict; pass a file saved from model.state_dict()")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BenchError(f"{path} does not fit open_clip {name} ({_misfit(exc, state, model)}); pass this model's "
                         f"own weights or the model they were saved from") from None


def _transform_facts(preprocess) -> tuple[int, str, tuple, tuple]:
    """Image size, interpolation, mean and std of an open_clip evaluation transform (a torchvision Compose)."""
    size, interpolation, mean, std = None, "", OPENAI_MEAN, OPENAI_STD
    for t in getattr(preprocess, "transforms", []):
        kind = type(t).__name__
        if kind in ("Resize", "ResizeKeepRatio"):
            interpolation = str(getattr(t.interpolation, "value", t.interpolation))
            if kind == "Resize" and isinstance(t.size, (tuple, list)) and len(t.size) == 2:  # "squash": no crop after
                size = int(t.size[0])
        if kind in ("CenterCrop", "CenterCropOrPad"):
            size = int(t.size[0]) if isinstance(t.size, (tuple, list)) else int(t.size)
        if type(t).__name__ == "Normalize":
            mean, std = tuple(t.mean), tuple(t.std)
    return size, interpolation, mean, std
