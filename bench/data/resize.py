"""Images brought to a model's input size once, when an evaluation split is loaded (not per batch).

A model trained by bench takes square images at its ``--image-size``; a dataset evaluated zero-shot may hold
images of another size (STL-10's 96 px, an image folder's photos). Each image is centre-cropped to a square
on its short side, then resized with PIL's bicubic filter, which averages over the source pixels when it
shrinks (antialiased), as CLIP's own preprocessing does. ``bench predict`` resizes image files the same way.
"""
from __future__ import annotations

import numpy as np

from .datasets import ArrayDataset


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` -> uint8 ``(N, size, size, 3)``: centre crop to a square, then bicubic resize.

    Images already square at ``size`` are returned as they are (no copy).
    """
    n, height, width = images.shape[:3]
    if height == width == size:
        return images
    from PIL import Image

    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        square = images[i, top:top + side, left:left + side]
        out[i] = np.asarray(Image.fromarray(square).resize((size, size), Image.BICUBIC), dtype=np.uint8)
    return out


def at_size(data: ArrayDataset, size: int) -> ArrayDataset:
    """``data`` with its images at ``size`` x ``size`` (:func:`resize_images`); labels, classes and name kept."""
    images = resize_images(data.images, size)
    return data if images is data.images else ArrayDataset(images, data.labels, data.classes, data.name)
