"""Data: datasets as uint8 arrays (``datasets``), the device-resident training loader (``loader``), the offline
CIFAR-10 reader (``cifar_xz``) and generated corruptions (``corruptions``). Imports clip (templates and the
tokenizer of the spec's per-sample dataset) and the base modules.

The names plugins use (``bench.data.ArrayDataset``, ``load_cifar10``, ``make_synthetic``, ...) resolve here
lazily, so importing ``bench.data.corruptions`` does not import torch.
"""

_LAZY = {
    **dict.fromkeys(["ArrayDataset", "CIFAR10_CLASSES", "SYNTHETIC_CLASSES", "SYNTHETIC_SIZES", "default_data_dir",
                     "load_cifar10", "make_synthetic", "reference_transform", "CIFARCLIPDataset", "collate_fn"],
                    "datasets"),
    **dict.fromkeys(["to_device_uint8", "normalize", "batch_flip_crop", "cutout_masks", "Batch", "DeviceLoader"],
                    "loader"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bench.data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
