"""A torch Dataset over scanned samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from headstart.data.scan import Sample
from headstart.data.transforms import Transform
from headstart.imaging import load_rgb


class ImageDataset(Dataset):
    """Yields ``(image_tensor, target)`` for each sample, read by ``loader`` (default
    :func:`load_rgb`; the decoded-image cache passes its own)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform,
        loader: Callable[[Path], Image.Image] = load_rgb,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """The transformed image and target of ``item``: an index, or ``(index, seed)`` from
        a seeded order, whose seed then fixes the random augmentation."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        sample = self.samples[index]
        image = self.loader(sample.path)
        if seed is None:
            return self.transform(image), sample.target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), sample.target


def pass_generator() -> torch.Generator:
    """The generator for a DataLoader that reads its images in order (features, validation,
    BatchNorm re-estimation, evaluation). DataLoader draws a worker seed from its generator
    on every pass, from torch's global one when it has none: a pass without a generator of
    its own would move the RNG that dropout draws from, so a warm cache (no pass) would train
    other weights than a cold one, and a validation pass would move the training order."""
    return torch.Generator().manual_seed(0)
