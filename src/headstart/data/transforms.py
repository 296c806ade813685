"""The evaluation transform, derived from the backbone's preprocessing record (training
augmentation and test-time views by domain live in ``data.augment``)."""

from __future__ import annotations

from collections.abc import Callable

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
