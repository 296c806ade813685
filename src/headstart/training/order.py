"""The training data order: a permutation and one augmentation seed per item, both drawn
from the loader's generator at the start of each epoch.

Seeding every item's augmentation from the order (not from the RNG of whichever process
loads it) makes an epoch the same with 0 or 4 DataLoader workers, persistent or not, and
lets a resumed run replay an epoch exactly from the generator state saved at its start,
skipping the batches already trained.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

SEED_BITS = 62


class SeededOrder(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)`` for ``n`` items in a fresh random order each epoch; the
    first ``skip`` items of the next epoch are left out (then ``skip`` resets to 0)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n = n
        self.generator = generator
        self.skip = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**SEED_BITS, (self.n,), generator=self.generator).tolist()
        skip, self.skip = self.skip, 0
        return iter(list(zip(order, seeds))[skip:])
