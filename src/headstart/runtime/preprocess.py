"""The evaluation preprocessing in NumPy and Pillow, from an export's metadata: resize the
shorter side with the recorded interpolation, centre-crop, scale to [0, 1], normalise. It
follows torchvision's ``Resize``/``CenterCrop``/``ToTensor``/``Normalize`` on PIL images step
for step (the same PIL resize, the same rounding of the crop box), so the pixels match the
training code's to float32 rounding (tested on real images).

The test-time views live here too, the one implementation every engine and command uses
(``predict --tta``, ``evaluate --tta``, and :func:`headstart.data.tta_transform`):
torchvision's ten crops (the four corners and the centre, and the same of the mirrored
image) for photos, and the eight symmetries of the square of the centre crop for
orientation-free images (``--augment aerial|texture``)."""

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


TEN_CROP = "ten crops"  # photos: corners and centre, plain and mirrored
DIHEDRAL = "eight symmetries"  # orientation-free images: rotations and flips of the centre


def views_for(augment: str | None) -> str:
    """The test-time views that suit a run trained with ``--augment augment``."""
    return DIHEDRAL if augment in ("aerial", "texture") else TEN_CROP


def _resized(image: Image.Image, prep: dict[str, Any]) -> Image.Image:
    size = resized_size(image.width, image.height, int(prep["resize_size"]))
    return image if size == image.size else image.resize(size, _FILTERS[prep["interpolation"]])


def _crop(image: Image.Image, top: int, left: int, size: int) -> Image.Image:
    return image.crop((left, top, left + size, top + size))


def _centre(image: Image.Image, size: int) -> Image.Image:
    return _crop(image, round((image.height - size) / 2.0), round((image.width - size) / 2.0), size)


def _normalised(image: Image.Image, prep: dict[str, Any]) -> np.ndarray:
    x = np.asarray(image, dtype=np.float32) / 255.0
    mean = np.asarray(prep["mean"], dtype=np.float32)
    std = np.asarray(prep["std"], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1).astype(np.float32)


def preprocess(image: Image.Image, prep: dict[str, Any]) -> np.ndarray:
    """An RGB image as the float32 (3, H, W) array the export takes; ``prep`` is the
    metadata's ``preprocessing`` record."""
    return _normalised(_centre(_resized(image, prep), int(prep["input_size"])), prep)


def tta_views(image: Image.Image, prep: dict[str, Any], kind: str = TEN_CROP) -> np.ndarray:
    """The (V, 3, H, W) test-time views of an RGB image: :data:`TEN_CROP` (torchvision's
    ``TenCrop`` order) or :data:`DIHEDRAL`."""
    size = int(prep["input_size"])
    image = _resized(image, prep)
    if kind == DIHEDRAL:
        turns = [_centre(image, size).rotate(90 * k, expand=True) for k in range(4)]
        crops = turns + [t.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for t in turns]
    else:
        crops = []
        for im in (image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
            h, w = im.height - size, im.width - size
            corners = [(0, 0), (0, w), (h, 0), (h, w)]
            crops += [_crop(im, top, left, size) for top, left in corners] + [_centre(im, size)]
    return np.stack([_normalised(c, prep) for c in crops])
