"""Decoded-image cache: each image decoded, EXIF-rotated and resized once, kept as uint8.

For strategies that run the backbone every epoch, JPEG decoding (and the resize of a
multi-megapixel photo) stops being paid every epoch. Images are stored with their shorter
side at the preprocessing's resize size, which is exactly what evaluation starts from, so
evaluation through the cache is bit-identical; training crops come from the resized image.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from PIL import Image
from torchvision.transforms import functional as F

from headstart.backbones.preprocessing import Preprocessing
from headstart.cache import Cache, digest_of
from headstart.data.transforms import interpolation_mode
from headstart.imaging import load_rgb


class DecodedImages:
    """``load(path)`` returns the image as :func:`load_rgb` would, resized; decoding happens
    on the first request for a file's content, anywhere (DataLoader workers included)."""

    def __init__(self, cache: Cache, prep: Preprocessing) -> None:
        self.cache = cache
        self.size = prep.resize_size
        self.interpolation = prep.interpolation
        self.white = prep.white_level
        deep = [] if self.white is None else [self.white]  # 8-bit data keeps its key
        self.store = cache.store(
            "decoded", digest_of(["decoded", self.size, self.interpolation, *deep])
        )

    def load(self, path: str | Path) -> Image.Image:
        """The decoded, resized RGB image of ``path``."""
        key = self.cache.digest(path)
        array = self.store.get(key)
        if array is None:
            image = F.resize(
                load_rgb(path, self.white),
                self.size,
                interpolation=interpolation_mode(self.interpolation),
            )
            self.store.put(key, F.pil_to_tensor(image).permute(1, 2, 0).numpy())
            return image
        return Image.fromarray(array)


def image_reader(prep: Preprocessing, cache: Cache | None) -> Callable[[Path], Image.Image]:
    """How a run reads its images: through the decoded-image cache when there is one, else
    from disk; either way with the preprocessing's white level."""
    if cache is not None:
        return DecodedImages(cache, prep).load
    return partial(load_rgb, white_level=prep.white_level)
