"""Gradient accumulation (``--accumulate N``): the optimizer step of a batch N times larger,
in the memory of one batch.

The gradients of N consecutive batches of ``--batch-size`` are summed before each
optimizer step, each batch's mean loss weighted by its share of the images in the step, so
that the step is the one a single batch of all of them would take (the last step of an
epoch takes what is left). The schedule, warm-up, ``--ema`` and gradient clipping count
optimizer steps, as for that larger batch. What accumulation cannot give is BatchNorm's
statistics over the larger batch: under ``--bn train`` each batch is normalised by its own
images (the frozen and adapted policies do not read the batch). Under ``torchrun`` the
processes exchange gradients once per optimizer step (``DistributedDataParallel.no_sync``
for the batches before it).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Accumulation:
    """Which of an epoch's ``batches`` batches (``size`` images each, the last maybe fewer;
    ``images`` in all on this process) end an optimizer step of ``every`` batches."""

    every: int
    batches: int
    size: int
    images: int

    @property
    def steps(self) -> int:
        """Optimizer steps in an epoch.

        >>> Accumulation(every=2, batches=5, size=4, images=18).steps
        3
        """
        return -(-self.batches // self.every)

    def ends_step(self, batch: int) -> bool:
        """Whether batch ``batch`` (0-based, in the epoch) is the last of its step."""
        return (batch + 1) % self.every == 0 or batch + 1 == self.batches

    def share(self, batch: int, n: int) -> float:
        """The weight of batch ``batch``'s mean loss (``n`` images) in its step: its share of
        the step's images.

        >>> a = Accumulation(every=2, batches=5, size=4, images=18)
        >>> [a.share(b, n) for b, n in enumerate([4, 4, 4, 4, 2])]
        [0.5, 0.5, 0.5, 0.5, 1.0]
        >>> Accumulation(every=3, batches=2, size=4, images=6).share(1, 2)
        0.3333333333333333
        """
        first = batch - batch % self.every
        in_step = min(self.every * self.size, self.images - first * self.size)
        return n / in_step

    def syncing(self, module: nn.Module, batch: int) -> AbstractContextManager:
        """Where ``module`` is DistributedDataParallel, hold its gradient exchange for
        every batch but the step's last (the forward and backward pass run inside)."""
        if self.ends_step(batch) or not hasattr(module, "no_sync"):
            return nullcontext()
        return module.no_sync()  # type: ignore[operator]


def accumulation_line(every: int, batch_size: int, solved: bool) -> str | None:
    """The console line of ``--accumulate``, or None when it is off.

    >>> accumulation_line(4, 8, solved=False)
    'accumulate: 4 batches of 8 per optimizer step (the step of a batch of 32)'
    """
    if every == 1:
        return None
    if solved:
        return (
            "note: --accumulate changes nothing here: the probe's head is solved on every "
            "training image at once"
        )
    return (
        f"accumulate: {every} batches of {batch_size} per optimizer step "
        f"(the step of a batch of {every * batch_size})"
    )
