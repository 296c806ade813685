"""Feature cache: a frozen prefix's output computed once per image (and view), kept on disk.

An entry is keyed by everything its numbers depend on: the backbone, a digest of its weights
as loaded, the preprocessing, the stage boundary, the view (clean, or augmented view *i*
under a given augmentation recipe) and the image file's content digest. Change any of them
and the entry is computed afresh; entries are written one by one, atomically, so a run
interrupted halfway keeps everything finished so far and nothing half-written.

Augmented view *i* of an image is drawn from a random generator seeded by the image's
digest and the view's key: the same view every time, whichever run computes it first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from headstart.cache import Cache, digest_of
from headstart.data.dataset import pass_generator
from headstart.data.scan import Sample
from headstart.data.transforms import Transform
from headstart.imaging import load_rgb


@dataclass(frozen=True)
class FeatureSource:
    """Identity of a frozen prefix: what its outputs depend on, apart from the image."""

    backbone: str
    weights_digest: str
    preprocessing: dict[str, Any]
    boundary: str
    precision: str = "fp32"  # the forward pass's (training.precision); bf16 features differ

    def key(self, view: Any) -> str:
        """Store key for one view (``"clean"`` or ``["aug", i, recipe]``); fp32 keeps the key
        it always had."""
        parts = [self.backbone, self.weights_digest, self.preprocessing, self.boundary, view]
        return digest_of(parts if self.precision == "fp32" else [*parts, self.precision])


class _Missing(Dataset):
    """The (image, view) pairs not yet cached, loaded and transformed for the prefix."""

    def __init__(
        self, jobs: list[tuple[int, int]], samples: Sequence[Sample], digests: list[str],
        transforms: Sequence[Transform], seeds: Sequence[int | None], white: int | None,
    ) -> None:  # fmt: skip
        self.jobs, self.samples, self.digests = jobs, samples, digests
        self.transforms, self.seeds, self.white = transforms, seeds, white

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        i, view = self.jobs[j]
        image = load_rgb(self.samples[i].path, self.white)
        seed = self.seeds[view]
        if seed is None:
            return self.transforms[view](image), j
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed ^ int(self.digests[i][:15], 16))
            return self.transforms[view](image), j


def cached_features(
    cache: Cache,
    source: FeatureSource,
    prefix: Callable[[torch.Tensor], torch.Tensor],
    samples: Sequence[Sample],
    transforms: Sequence[Transform],
    views: Sequence[Any],
    *,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    to_input: Callable[[torch.Tensor, torch.device], torch.Tensor] = lambda x, d: x.to(d),
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[torch.Tensor, int]:
    """Outputs of ``prefix`` for every sample and view: a tensor (N, V, ...) on the CPU, and
    how many entries had to be computed (the rest came from the cache).

    ``transforms[v]`` makes the input of view ``v``; ``views[v]`` names it in the key, and
    every view but ``"clean"`` is drawn with a generator seeded by its key and the image's
    digest. Only missing entries run through ``prefix``, in eval mode and
    inference mode (under ``autocast()``: the precision the source names); each is stored
    as soon as its batch is done.
    """
    digests = [cache.digest(s.path) for s in samples]
    keys = [source.key(v) for v in views]
    stores = [cache.store("features", k) for k in keys]
    seeds = [None if v == "clean" else int(k[:15], 16) for v, k in zip(views, keys)]
    found: dict[tuple[int, int], np.ndarray] = {}
    jobs: list[tuple[int, int]] = []
    for i, d in enumerate(digests):
        for v, store in enumerate(stores):
            array = store.get(d)
            if array is None:
                jobs.append((i, v))
            else:
                found[i, v] = array
    if jobs:
        loader = DataLoader(
            _Missing(
                jobs, samples, digests, transforms, seeds, source.preprocessing.get("white_level")
            ),
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            generator=pass_generator(),
        )
        bar = tqdm(total=len(jobs), desc="features", unit="img", disable=not progress or None)
        with torch.inference_mode(), autocast():
            for images, index in loader:
                out = prefix(to_input(images, device)).float().cpu().numpy()
                for row, j in zip(out, index.tolist()):
                    i, v = jobs[j]
                    stores[v].put(digests[i], row)
                    found[i, v] = row
                bar.update(len(index))
        bar.close()
    first = found[0, 0]
    result = torch.empty((len(samples), len(views), *first.shape), dtype=torch.float32)
    for (i, v), array in found.items():
        result[i, v] = torch.from_numpy(np.asarray(array))
    return result, len(jobs)


class FeatureViews(Dataset):
    """Cached features as a dataset: a random view per item when training, view 0 otherwise.
    Targets are class indices, or a dict of them per task."""

    def __init__(self, features: torch.Tensor, samples: Sequence[Sample], train: bool) -> None:
        self.features = features
        self.targets = [s.target for s in samples]
        self.train = train

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int | dict[str, int]]:
        """Features and target of ``item``: an index, or ``(index, seed)`` from a seeded
        order, whose seed then picks the view."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        views = self.features.shape[1]
        if not self.train or views == 1:
            view = 0
        elif seed is None:
            view = int(torch.randint(views, ()))
        else:
            view = seed % views
        return self.features[i, view], self.targets[i]
