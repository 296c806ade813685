"""Mixup and CutMix: train on blends of two samples and of their labels.

Mixup (Zhang et al., ICLR 2018) blends whole inputs, ``lam * x + (1 - lam) * x[perm]``;
CutMix (Yun et al., ICCV 2019) pastes a box of the partner image into each image, ``lam``
being the area left uncovered. The loss is the same blend of the two labels' losses, so
class weights, label smoothing, blank labels and several tasks carry over unchanged. With
both on, each batch is one or the other at even odds (timm's switch). ``lam`` is drawn from
Beta(alpha, alpha); the draws come from a generator seeded by the run's seed and the step,
so a resumed run mixes exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

Loss = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Mixed:
    """One mixed batch: the inputs, the partner of each sample, and the weight of its own."""

    inputs: torch.Tensor
    partner: torch.Tensor  # index of each sample's partner in the batch
    lam: float  # weight of the sample's own label; 1 - lam goes to its partner's

    def loss(
        self, loss: Loss, logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """``lam`` x the loss on the own labels + ``1 - lam`` x the loss on the partners'."""
        theirs = self._partners(targets)
        return self.lam * loss(logits, targets) + (1.0 - self.lam) * loss(logits, theirs)

    def dominant(self, targets: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """The labels with the larger share (the own ones at ``lam >= 0.5``): what the
        training accuracy is counted against."""
        return targets if self.lam >= 0.5 else self._partners(targets)

    def _partners(self, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {task: y[self.partner] for task, y in targets.items()}


@dataclass(frozen=True)
class Mixing:
    """Beta concentrations of mixup and CutMix (0: off) and the run's seed."""

    mixup: float = 0.0
    cutmix: float = 0.0
    seed: int = 0

    @property
    def active(self) -> bool:
        """Whether any batch is mixed."""
        return self.mixup > 0 or self.cutmix > 0

    def __call__(self, inputs: torch.Tensor, step: int) -> Mixed:
        """Mix the batch ``inputs`` of optimizer step ``step`` (CutMix needs image-shaped
        inputs, ``(N, C, H, W)``)."""
        rng = np.random.default_rng([self.seed, step])
        cut = self.cutmix > 0 and (self.mixup <= 0 or rng.random() < 0.5)
        partner = torch.from_numpy(rng.permutation(inputs.shape[0])).to(inputs.device)
        alpha = self.cutmix if cut else self.mixup
        lam = float(rng.beta(alpha, alpha))
        if not cut:
            return Mixed(inputs.lerp(inputs[partner], 1.0 - lam), partner, lam)
        (y0, y1), (x0, x1) = (_span(rng, n, math.sqrt(1.0 - lam)) for n in inputs.shape[-2:])
        mixed = inputs.clone()
        mixed[..., y0:y1, x0:x1] = inputs[partner][..., y0:y1, x0:x1]
        height, width = inputs.shape[-2:]
        return Mixed(mixed, partner, 1.0 - (y1 - y0) * (x1 - x0) / (height * width))


def _span(rng: np.random.Generator, size: int, fraction: float) -> tuple[int, int]:
    """A box side of about ``fraction * size`` around a uniform centre, clipped to the image
    (the clipping is why CutMix's ``lam`` is recomputed from the box's area)."""
    centre, half = int(rng.integers(size)), int(size * fraction) // 2
    return max(centre - half, 0), min(centre + half, size)
