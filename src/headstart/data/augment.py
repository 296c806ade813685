"""Augmentation presets by domain, and the test-time views that match each.

Photos have an up and a down: a flipped-left ant is still an ant, an upside-down one is a
strange photo, and colour is a cue worth perturbing. Solar cells, microscopy, textures and
satellite tiles have no orientation: every rotation by 90 degrees and every flip is the same
kind of image, and colour (often a grey level that means something physical) must not be
jittered. Each preset names an augmentation and a symmetry group; test-time augmentation
averages over the same group.

* ``photo``: random resized crop (25-100% of the area), horizontal flip; TTA: ten crops.
* ``aerial``: random resized crop (35-100%), flips both ways, 90-degree rotations, a little
  brightness and contrast jitter; TTA: the eight symmetries of the square.
* ``texture``: a gentle random resized crop (60-100%, near-square), flips both ways,
  90-degree rotations, small affine jitter (translation, scale), no colour change; TTA: the
  eight symmetries of the square.
* ``none``: the evaluation transform (resize, centre crop); TTA: ten crops.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import get_args

import torch
from PIL import Image
from torchvision import transforms as T

from headstart.backbones.preprocessing import Preprocessing
from headstart.config import AugmentPreset
from headstart.data.transforms import Transform, eval_transform, interpolation_mode
from headstart.runtime.preprocess import tta_views, views_for

PRESETS: tuple[str, ...] = get_args(AugmentPreset)
SYMMETRIC = ("aerial", "texture")  # presets whose images have no orientation
TRAIN_SCALE = (0.25, 1.0)  # photo's RandomResizedCrop area range (see train_transform)
SCALES = {"photo": TRAIN_SCALE, "aerial": (0.35, 1.0), "texture": (0.6, 1.0)}


class RandomRot90:
    """Rotate a PIL image by 0, 90, 180 or 270 degrees, uniformly (torch's RNG)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        k = int(torch.randint(4, ()))
        return image if k == 0 else image.rotate(90 * k, expand=True)

    def __repr__(self) -> str:
        return "RandomRot90()"


def train_transform(
    prep: Preprocessing,
    *,
    preset: str = "photo",
    scale: tuple[float, float] | None = None,
    color_jitter: float = 0.0,
) -> Transform:
    """The training augmentation of ``preset`` (see the module docstring), ending in the
    weights' normalisation; ``color_jitter`` adds colour jitter of that strength (photo and
    aerial). ``scale`` overrides the preset's crop area range.

    Photo's crop area starts at 25%: ImageNet's (0.08, 1) crops the object away too often
    on a few hundred photos.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; expected one of {PRESETS}")
    if preset == "none":
        return eval_transform(prep)
    interpolation = interpolation_mode(prep.interpolation)
    ratio = (0.9, 1.1) if preset == "texture" else (3 / 4, 4 / 3)
    ops: list[Callable] = [
        T.RandomResizedCrop(
            prep.input_size, scale=scale or SCALES[preset], ratio=ratio, interpolation=interpolation
        ),
        T.RandomHorizontalFlip(),
    ]
    if preset in SYMMETRIC:
        ops += [T.RandomVerticalFlip(), RandomRot90()]
    if preset == "texture":
        ops.append(T.RandomAffine(0, translate=(0.04, 0.04), scale=(0.95, 1.05),
                                  interpolation=interpolation))  # fmt: skip
    if preset == "aerial":
        ops.append(T.ColorJitter(brightness=0.1, contrast=0.1))
    if color_jitter > 0 and preset != "texture":
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    ops += [T.ToTensor(), T.Normalize(prep.mean, prep.std)]
    return T.Compose(ops)


TTA_VIEWS = {
    "photo": "ten crops: the four corners and the centre of the resized image, and their "
    "mirror images",
    "aerial": "the eight symmetries of the square (four rotations, each also flipped) of the "
    "centre crop",
}
TTA_VIEWS["texture"] = TTA_VIEWS["aerial"]
TTA_VIEWS["none"] = TTA_VIEWS["photo"]


def tta_transform(
    prep: Preprocessing, preset: str = "photo"
) -> Callable[[Image.Image], torch.Tensor]:
    """Test-time views for ``preset`` as a (V, C, H, W) tensor: torchvision's TenCrop order
    for photos, the dihedral group of the centre crop for orientation-free images (the one
    implementation, :func:`headstart.runtime.preprocess.tta_views`)."""
    return partial(_tta_tensor, prep.to_dict(), views_for(preset))


def _tta_tensor(prep: dict, kind: str, image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(tta_views(image, prep, kind))
