"""Train and eval transforms, both derived from the backbone's preprocessing record."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from PIL import Image
from torchvision import transforms as T

from headstart.backbones.preprocessing import Preprocessing

Transform = Callable[[Image.Image], torch.Tensor]

_MODES = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def interpolation_mode(name: str) -> T.InterpolationMode:
    """torchvision's interpolation for a preprocessing record's name."""
    return _MODES[name]


def eval_transform(prep: Preprocessing) -> Transform:
    """Resize the shorter side, centre-crop, normalise: exactly what the weights expect."""
    return T.Compose(
        [
            T.Resize(prep.resize_size, interpolation=_MODES[prep.interpolation]),
            T.CenterCrop(prep.input_size),
            T.ToTensor(),
            T.Normalize(prep.mean, prep.std),
        ]
    )


TTA_VIEWS = (
    "ten crops: the four corners and the centre of the resized image, and their mirror images"
)


def tta_transform(prep: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """Test-time augmentation: torchvision's TenCrop of the resized image, each crop
    normalised as at evaluation; returns a (10, C, H, W) tensor per image."""
    normalise = T.Compose([T.ToTensor(), T.Normalize(prep.mean, prep.std)])
    crops = T.Compose(
        [
            T.Resize(prep.resize_size, interpolation=_MODES[prep.interpolation]),
            T.TenCrop(prep.input_size),
        ]
    )
    return partial(_stack_views, crops, normalise)


def _stack_views(crops: Callable, normalise: Transform, image: Image.Image) -> torch.Tensor:
    return torch.stack([normalise(c) for c in crops(image)])


TRAIN_SCALE = (0.25, 1.0)  # RandomResizedCrop area range (see train_transform)


def train_transform(
    prep: Preprocessing, *, scale: tuple[float, float] = TRAIN_SCALE, color_jitter: float = 0.0
) -> Transform:
    """RandomResizedCrop to the input size, horizontal flip, optional colour jitter.

    ``scale`` defaults to (0.25, 1): ImageNet's (0.08, 1) crops away the object too often
    on a few hundred photos.
    """
    ops: list[Callable] = [
        T.RandomResizedCrop(prep.input_size, scale=scale, interpolation=_MODES[prep.interpolation]),
        T.RandomHorizontalFlip(),
    ]
    if color_jitter > 0:
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    ops += [T.ToTensor(), T.Normalize(prep.mean, prep.std)]
    return T.Compose(ops)
