"""bench: train CLIP models on CIFAR-10 and evaluate them zero-shot, with encoders, tokenizers, template sets
and datasets as pluggy plugins."""

__version__ = "0.1.0"

from .host.hookspecs import hookimpl  # noqa: E402  (plugins import only ``bench``)

_LAZY = {
    "create_model": "clip.model", "build_model": "clip.model", "convert_weights": "clip.model", "CLIP": "clip.model",
    "ModelCfg": "clip.configs", "TextCfg": "clip.configs",
    "tokenize": "clip.tokenizer", "SimpleTokenizer": "clip.tokenizer",
    "contrastive_loss": "clip.loss", "multipositive_loss": "clip.loss", "ClipLoss": "clip.loss",
    "train_epoch": "engine.reference_loop", "validate": "engine.reference_loop",
    "CIFARCLIPDataset": "data.datasets", "collate_fn": "data.datasets", "ArrayDataset": "data.datasets",
    "RunConfig": "config", "make_config": "config",
    "BenchError": "errors",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name):
    # Lazy, so ``bench plugins`` and ``bench list`` (and plugins importing ``bench.hookimpl``) skip torch.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
