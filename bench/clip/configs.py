"""The CLIP architecture as frozen dataclasses, torch-free, so a run configuration can hold one."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TextCfg:
    context_length: int = 77  # tokens per text, start and end tokens included
    vocab_size: int = 49408  # rows of the token embedding (CLIP BPE: 49408)
    width: int = 512  # Transformer width
    heads: int = 8  # attention heads
    layers: int = 6  # residual attention blocks



@dataclass(frozen=True)
class ModelCfg:
    encoder: str = "modified_resnet"  # registered vision encoder name; it alone fixes the vision tower
    embed_dim: int = 512  # width of the joint image-text embedding
    image_resolution: int = 32  # input side in pixels
    text: TextCfg = field(default_factory=TextCfg)
    encoder_opts: tuple = ()  # (key, value) pairs passed to the encoder factory (``--encoder-opt``)

    def to_dict(self):
        d = asdict(self)
        d["encoder_opts"] = dict(self.encoder_opts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCfg":
        d = dict(d)
        d["text"] = TextCfg(**d.get("text", {}))
        d["encoder_opts"] = tuple(sorted(dict(d.get("encoder_opts", {})).items()))
        return cls(**d)
