"""Reading images the way a user means them: EXIF-rotated, any mode converted to RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB without surprises.

    Transparent pixels are composited on white (a plain ``convert("RGB")`` exposes whatever
    colour hides under alpha 0, often black); 16-bit and 32-bit greyscale are scaled to 8 bits
    instead of clipped; CMYK goes through PIL's converter.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode.startswith("I") or image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file, apply its EXIF orientation, and return it as RGB."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))
