"""bench: train CLIP models on CIFAR-10 and evaluate them zero-shot, with encoders, tokenizers, template sets
and datasets as pluggy plugins."""

__version__ = "0.1.0"

from .host.hookspecs import hookimpl  # noqa: E402  (plugins import only ``bench``)

_LAZY = {
    "create_model": "clip.model", "build_model": "clip.model", "convert_weights": "clip.model", "CLIP": "clip.model",
    "ModelCfg": "clip.configs", "TextCfg": "clip.configs",
    "ModifiedResNet": "clip.modified_resnet", "Bottleneck": "clip.modified_resnet",
    "AttentionPool2d": "clip.modified_resnet", "Transformer": "clip.text_transformer",
    "ResidualAttentionBlock": "clip.text_transformer", "LayerNorm": "clip.text_transformer",
    "QuickGELU": "clip.text_transformer",
    "tokenize": "clip.tokenizer", "SimpleTokenizer": "clip.tokenizer",
    "contrastive_loss": "clip.loss", "multipositive_loss": "clip.loss", "ClipLoss": "clip.loss",
    "train_epoch": "engine.reference_loop", "validate": "engine.reference_loop",
    "test_model_inference": "app.evaluate",
    "CIFARCLIPDataset": "data.datasets", "collate_fn": "data.datasets", "ArrayDataset": "data.datasets",
    "RunConfig": "config", "make_config": "config",
    "BenchError": "errors",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def lazy_attributes(package: str, table: dict, namespace: dict):
    """A module ``__getattr__`` that imports ``name`` from ``package + "." + table[name]`` on first use."""

    def __getattr__(name):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__


# Lazy, so ``bench plugins`` and ``bench list`` (and plugins importing ``bench.hookimpl``) skip torch.
__getattr__ = lazy_attributes(__name__, _LAZY, globals())
