"""The training data order: a permutation and one augmentation seed per item, both drawn
from the loader's generator at the start of each epoch.

Seeding every item's augmentation from the order (not from the RNG of whichever process
loads it) makes an epoch the same with 0 or 4 DataLoader workers, persistent or not, and
lets a resumed run replay an epoch exactly from the generator state saved at its start,
skipping the batches already trained.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from headstart.data import MISSING
from headstart.training.distributed import shard, world


def balanced_weights(
    targets: Sequence[int | dict[str, int]], task: str | None = None
) -> torch.Tensor:
    """Sampling weights that give every class of ``task`` (the first, by default) the same
    expected share of an epoch: 1 / (images of its class); unlabelled rows get the mean."""
    labels = [t if isinstance(t, int) else t[task or next(iter(t))] for t in targets]
    counts: dict[int, int] = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    w = torch.tensor([0.0 if y == MISSING else 1.0 / counts[y] for y in labels])
    labelled = w > 0
    if not labelled.all():
        w[~labelled] = w[labelled].mean() if labelled.any() else 1.0
    return w


SEED_BITS = 62


class SeededOrder(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)`` for ``n`` items in a fresh random order each epoch; the
    first ``skip`` items of the next epoch are left out (then ``skip`` resets to 0).

    With ``weights`` (a balanced sampler) an epoch is ``n`` draws with replacement, item
    ``i`` drawn with probability proportional to ``weights[i]``.

    Under ``torchrun`` every process draws the same order from an identically seeded
    generator and keeps its strided, padded shard (``distributed.shard``)."""

    def __init__(
        self, n: int, generator: torch.Generator, weights: torch.Tensor | None = None
    ) -> None:
        self.n = n
        self.generator = generator
        self.weights = weights
        self.skip = 0
        self.world = world()

    def __len__(self) -> int:
        return -(-self.n // self.world.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.weights is None:
            order = torch.randperm(self.n, generator=self.generator).tolist()
        else:
            order = torch.multinomial(
                self.weights, self.n, replacement=True, generator=self.generator
            ).tolist()
        seeds = torch.randint(0, 2**SEED_BITS, (self.n,), generator=self.generator).tolist()
        skip, self.skip = self.skip, 0
        return iter(shard(list(zip(order, seeds)), self.world)[skip:])
