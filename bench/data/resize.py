"""A dataset's images brought to the model's input size once, at load: never per training step.

Datasets keep their images at their own size (STL-10 96 px, MNIST 28 px); a run whose ``--image-size`` differs
resizes every image once here, with one named interpolation that the run's row records.
"""
from __future__ import annotations

import numpy as np

from ..errors import BenchError
from .datasets import ArrayDataset

# torch's bilinear interpolation with antialiasing (a triangle filter widened by the scale when shrinking, as PIL's
# BILINEAR), rounded to the nearest uint8: the name the row's resize_interpolation column shows
INTERPOLATION = "bilinear_antialias"
# enlarging further than this invents detail and multiplies memory (the whole training split lives on the device)
MAX_UPSCALE = 8
_CHUNK = 2048  # images per interpolation call: bounds the float copy (2048 x 3 x 224 x 224 x 4 bytes = 1.2 GB)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` -> uint8 ``(N, size, size, 3)`` by :data:`INTERPOLATION`; deterministic on the CPU."""
    import torch
    import torch.nn.functional as F

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for start in range(0, len(images), _CHUNK):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + _CHUNK])).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + _CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def check_resizable(data: ArrayDataset, size: int, dataset: str):
    """The split's images are square and ``size`` is within :data:`MAX_UPSCALE` of them: one line otherwise."""
    height, width = data.images.shape[1:3]
    if height != width:
        raise BenchError(f"dataset {dataset!r} has {height}x{width} images; bench trains on square images")
    if size > height * MAX_UPSCALE:
        raise BenchError(f"dataset {dataset!r} stores {height}x{height} images, which --image-size {size} would "
                         f"enlarge more than {MAX_UPSCALE}-fold; use --image-size {height} (their own size), or at "
                         f"most {height * MAX_UPSCALE}")


def fit_to_size(data: ArrayDataset, size: int, dataset: str | None = None) -> ArrayDataset:
    """``data`` itself when its images are ``size`` px already, else a resized copy whose ``info`` names the
    interpolation and the images' own size."""
    check_resizable(data, size, dataset or data.name)
    own = data.images.shape[1]
    if own == size:
        return data
    info = {**data.info, "resize_interpolation": INTERPOLATION, "source_image_size": own}
    return ArrayDataset(resize_images(data.images, size), data.labels, data.classes, data.name, info)
