"""Reading images the way a user means them: EXIF-rotated, any mode converted to RGB, and
never larger in memory than a classifier needs.

Memory is bounded before any pixel is converted or resized: an image whose sides differ by
more than :data:`MAX_ASPECT` is refused (resizing a 1x3000 strip's short side to 256 px
would make a 590 MB image), and an image with a short side over :data:`DECODE_SHORT_SIDE`
is decoded at reduced scale (JPEG's DCT scaling) or box-reduced before its mode is converted,
so a 40-megapixel upload costs a fraction of its full-size copies. Every path (the scan, the
caches, training, evaluation, predict and the server) reads through :func:`open_rgb`, so they
all see the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import headstart.dicom  # noqa: F401  (registers DICOM with Pillow for every reader)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".dcm"}
    | {".dicom"}
)


MAX_ASPECT = 10.0  # longest side / shortest side; beyond this an image is refused
DECODE_SHORT_SIDE = 1024  # images with a longer short side are reduced while decoding
_NO_REDUCE = ("P", "1", "I;16", "I;16B", "I;16L", "I;16N")  # modes Image.reduce refuses


class ImageRefused(ValueError):
    """An image whose shape headstart will not decode (see :data:`MAX_ASPECT`)."""


def shape_problem(width: int, height: int) -> str | None:
    """Why an image of this size is refused, or None."""
    if width < 1 or height < 1:
        return f"{width}x{height} pixels: no pixels"
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT:
        return (
            f"{width}x{height} pixels, an aspect ratio of {ratio:.0f}:1 (the limit is "
            f"{MAX_ASPECT:.0f}:1): a strip, not a picture of one thing; crop it to the object"
        )
    return None


def reduce_for_decoding(image: Image.Image) -> Image.Image:
    """``image`` (opened, not yet loaded) decoded with its short side cut to at most about
    2 x :data:`DECODE_SHORT_SIDE` (at least :data:`DECODE_SHORT_SIDE`); smaller images
    load as they are. Raises :class:`ImageRefused` for an extreme aspect ratio."""
    problem = shape_problem(*image.size)
    if problem:
        raise ImageRefused(problem)
    short = min(image.size)
    if short > DECODE_SHORT_SIDE and image.format == "JPEG":
        scale = DECODE_SHORT_SIDE / short  # draft keeps the size at or above the request
        image.draft(image.mode, (round(image.size[0] * scale), round(image.size[1] * scale)))
    image.load()
    factor = min(image.size) // DECODE_SHORT_SIDE
    if factor < 2:
        return image
    w, h = image.size
    if image.mode in _NO_REDUCE:
        return image.resize((w // factor, h // factor), Image.Resampling.NEAREST)
    # Box-reduce a band of rows at a time: Image.reduce on RGBA makes a full-size
    # premultiplied copy first, which doubles the peak for a large transparent PNG.
    out = Image.new(image.mode, (w // factor, h // factor))
    rows = 64 * factor
    for top in range(0, h // factor * factor, rows):
        band = image.crop((0, top, w // factor * factor, min(top + rows, h // factor * factor)))
        out.paste(band.reduce(factor), (0, top // factor))
    out.info = image.info  # keeps EXIF orientation and transparency for what follows
    return out


def open_rgb(image: Image.Image, white_level: int | None = None) -> Image.Image:
    """An opened image as upright RGB within the memory bound (see the module docstring);
    ``white_level``: see :func:`to_rgb`."""
    return to_rgb(ImageOps.exif_transpose(reduce_for_decoding(image)), white_level)


def white_level_of(paths: Sequence[str | Path]) -> tuple[int, float, str] | None:
    """For images that store grey in more than 8 bits (16-bit PNG or TIFF, as microscopy,
    X-ray and industrial cameras write them, or 32-bit floating-point TIFF), the white level
    their values imply, the brightest value seen and the storage (``"integer"`` or
    ``"float"``): ``(4095, 3998, "integer")`` for a 12-bit camera's. None for 8-bit images,
    and for 16-bit ones that use all 16 bits (65535 is the default).

    Read as 0-65535, 12-bit images keep 16 of their 4,096 grey levels; read as 0-4095, all of
    them. The level is rounded up to a whole number of bits so that an image darker than the
    ones looked at still scales as they do; floating-point images up to 1 are read as 0-1
    (per image, their scale used to depend on their own maximum, and 0-1 read as black)."""
    brightest, kinds = 0.0, set()
    for path in paths:
        try:
            with Image.open(path) as image:
                if not (image.mode.startswith("I") or image.mode == "F"):
                    continue
                stored = "float" if image.mode == "F" else "integer"
                values = np.asarray(reduce_for_decoding(image))
                top = float(np.nanmax(values)) if values.size else 0.0
        except (OSError, ValueError):  # unreadable files are the scan's to report
            continue
        kinds.add(stored)
        if math.isfinite(top):
            brightest = max(brightest, top)
    if not kinds:
        return None
    kind = "float" if kinds == {"float"} else "integer"
    if kind == "float" and brightest <= 1.0:
        return 1, brightest, kind
    level = 2 ** max(8, math.ceil(brightest).bit_length()) - 1
    return None if level == 65535 else (level, brightest, kind)


def _deep_colour(image: Image.Image) -> bool:
    """Whether an opened RGB(A) image stores 16 bits a channel: a TIFF's BitsPerSample, or
    the raw mode a PNG's decoder unpacks from (``RGB;16B``)."""
    if image.mode not in ("RGB", "RGBA"):
        return False
    if image.format == "TIFF":
        return any(b > 8 for b in image.tag_v2.get(258, ()))
    return image.format == "PNG" and any(str(t.args).endswith(";16B") for t in image.tile)


def deep_colour_of(paths: Sequence[str | Path]) -> tuple[int, int] | None:
    """How many of ``paths`` are colour TIFFs or PNGs of 16 bits a channel, and the
    brightest value Pillow reads from them (it keeps each channel's top 8 bits, so a camera
    that stores 12 bits in 16 reads nearly black); None when there are none."""
    count, brightest = 0, 0
    for path in paths:
        try:
            with Image.open(path) as image:
                if not _deep_colour(image):
                    continue
                count += 1
                brightest = max(brightest, int(np.asarray(reduce_for_decoding(image)).max()))
        except (OSError, ValueError):  # unreadable files are the scan's to report
            continue
    return (count, brightest) if count else None


def is_grayscale(path: str | Path) -> bool:
    """True when the file holds no colour: a grey-level mode, or RGB whose three channels
    agree on a small thumbnail (JPEG chroma noise of a few levels tolerated)."""
    with Image.open(path) as image:
        if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
            return True
        image.draft("RGB", (64, 64))
        small = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.int16)
    return bool(np.abs(small - small.mean(2, keepdims=True)).max() <= 4)


def to_rgb(image: Image.Image, white_level: int | None = None) -> Image.Image:
    """Convert any PIL mode to RGB without surprises.

    Transparent pixels are composited on white (a plain ``convert("RGB")`` exposes whatever
    colour hides under alpha 0, often black); 16-bit and 32-bit greyscale are scaled to 8 bits
    instead of clipped, with ``white_level`` as white when given (a 12-bit camera's 4095,
    1 for floating point in 0-1: see :func:`white_level_of`), else 65535 (255 for an
    image whose values stay under 256); CMYK goes through PIL's converter.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode.startswith("I") or image.mode == "F":
        arr = np.array(image, dtype=np.float32)  # a copy: F images give read-only views
        if white_level is not None:
            top = float(white_level)
        else:
            top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr *= 255.0 / top  # in place: a 40-megapixel image holds one float copy, not three
        np.clip(arr, 0, 255, out=arr)
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path, white_level: int | None = None) -> Image.Image:
    """Open an image file, apply its EXIF orientation, and return it as RGB (reduced while
    decoding when it is far larger than any classifier input; see :func:`open_rgb`)."""
    with Image.open(path) as image:
        return open_rgb(image, white_level)
