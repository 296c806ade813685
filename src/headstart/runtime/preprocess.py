"""The evaluation preprocessing in NumPy and Pillow, from an export's metadata: resize the
shorter side with the recorded interpolation, centre-crop, scale to [0, 1], normalise. It
follows torchvision's ``Resize``/``CenterCrop``/``ToTensor``/``Normalize`` on PIL images step
for step (the same PIL resize, the same rounding of the crop box), so the pixels match the
training code's to float32 rounding (tested on real images)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``short`` and the aspect ratio kept (the
    longer side truncated, as torchvision does).

    >>> resized_size(640, 480, 256)
    (341, 256)
    """
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def preprocess(image: Image.Image, prep: dict[str, Any]) -> np.ndarray:
    """An RGB image as the float32 (3, H, W) array the export takes; ``prep`` is the
    metadata's ``preprocessing`` record."""
    size = resized_size(image.width, image.height, int(prep["resize_size"]))
    if size != image.size:
        image = image.resize(size, _FILTERS[prep["interpolation"]])
    crop = int(prep["input_size"])
    top = round((image.height - crop) / 2.0)
    left = round((image.width - crop) / 2.0)
    image = image.crop((left, top, left + crop, top + crop))
    x = np.asarray(image, dtype=np.float32) / 255.0
    mean = np.asarray(prep["mean"], dtype=np.float32)
    std = np.asarray(prep["std"], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1).astype(np.float32)
