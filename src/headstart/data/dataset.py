"""A torch Dataset over scanned samples."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from headstart.data.images import load_rgb
from headstart.data.scan import Sample
from headstart.data.transforms import Transform


class ImageDataset(Dataset):
    """Yields ``(image_tensor, target)`` for each sample, loading with :func:`load_rgb`."""

    def __init__(self, samples: Sequence[Sample], transform: Transform) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        return self.transform(load_rgb(sample.path)), sample.target
