"""Data: datasets as uint8 arrays (``datasets``), torchvision's published sets read from their files
(``torchvision_sets``), their downloads one at a time per folder (``download``), image folders with their decoded
cache (``imagefolder``), the one resize at load (``resize``), classes held out of training (``class_split``), the
device-resident training loader (``loader``), the offline CIFAR-10 reader (``cifar_xz``) and generated corruptions
(``corruptions``). Imports clip (templates, CLIP's class names, and the tokenizer of the spec's per-sample
dataset) and the base modules.

The names plugins use (``bench.data.ArrayDataset``, ``load_cifar10``, ``make_synthetic``, ...) resolve here
lazily, so importing ``bench.data.corruptions`` does not import torch.
"""
from .. import lazy_attributes

_LAZY = {
    **dict.fromkeys(["ArrayDataset", "CIFAR10_CLASSES", "SYNTHETIC_CLASSES", "SYNTHETIC_SIZES", "default_data_dir",
                     "load_cifar10", "make_synthetic", "reference_transform", "CIFARCLIPDataset", "collate_fn"],
                    "datasets"),
    **dict.fromkeys(["to_device_uint8", "normalize", "batch_flip_crop", "cutout_masks", "Batch", "DeviceLoader"],
                    "loader"),
}

__all__ = list(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
