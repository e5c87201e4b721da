"""bench: train CLIP models on CIFAR-10 and evaluate them zero-shot, with encoders, tokenizers, template sets
and datasets as pluggy plugins."""

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (plugins import only ``bench``)

_LAZY = {
    "create_model": "model", "build_model": "model", "convert_weights": "model", "CLIP": "model",
    "ModelCfg": "model", "TextCfg": "model",
    "tokenize": "tokenizer", "SimpleTokenizer": "tokenizer",
    "contrastive_loss": "loss", "multipositive_loss": "loss", "ClipLoss": "loss",
    "train_epoch": "api", "validate": "api",
    "CIFARCLIPDataset": "data", "collate_fn": "data", "ArrayDataset": "data",
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
