"""BatchNorm re-estimation (AdaBN, Li et al. 2016): the policy ``--bn adapt``.

A pretrained network's BatchNorm layers normalise with ImageNet's statistics. On images from
another domain (electroluminescence, microscopy, X-ray) the activations have other means and
variances, and every layer normalises them wrongly. Re-estimating the running statistics on
the user's training images (forward passes in train mode, no gradients, a cumulative average
over batches), then keeping them fixed, adapts the normalisation and nothing else.

The adapted statistics are cached by the weights they start from, the preprocessing and the
training images' content, so a second run skips the passes; and the shift they make
(how far the data sits from ImageNet) is reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

BatchNorm = nn.modules.batchnorm._BatchNorm


def batchnorms(module: nn.Module) -> list[BatchNorm]:
    """Every BatchNorm layer of ``module``, in order."""
    return [m for m in module.modules() if isinstance(m, BatchNorm)]


@dataclass(frozen=True)
class BNShift:
    """How far re-estimation moved the statistics: the mean over layers of
    |new mean - old mean| / old std, and of |log(new var / old var)|."""

    layers: int
    mean_shift: float
    log_var_ratio: float
    images: int = 0  # training images the statistics come from
    cached: bool = False  # taken from the cache rather than computed

    def line(self) -> str:
        """The console line."""
        how = f"on {self.images:,} training images" + (" (cached)" if self.cached else "")
        ratio = math.exp(self.log_var_ratio)
        return (
            f"bn: statistics of {self.layers} BatchNorm layers re-estimated {how}; shift from "
            f"the pretrained ones: means by {self.mean_shift:.2f} std, variances by a factor "
            f"of {ratio:.2f} (averages over layers)"
        )


def statistics(module: nn.Module) -> torch.Tensor:
    """Every BatchNorm layer's running mean and variance, concatenated (float32, CPU)."""
    parts = [t for m in batchnorms(module) for t in (m.running_mean, m.running_var)]
    return torch.cat([t.detach().float().cpu().flatten() for t in parts])


def load_statistics(module: nn.Module, flat: torch.Tensor) -> None:
    """Inverse of :func:`statistics`."""
    offset = 0
    for m in batchnorms(module):
        m.num_batches_tracked.zero_()
        for t in (m.running_mean, m.running_var):
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t).to(t))
            offset += n


def shift(before: torch.Tensor, module: nn.Module) -> BNShift:
    """The shift between ``before`` (from :func:`statistics`) and the module's statistics."""
    means, logs = [], []
    offset = 0
    for m in batchnorms(module):
        n = m.running_mean.numel()
        old_mean, old_var = before[offset : offset + n], before[offset + n : offset + 2 * n]
        new_mean = m.running_mean.detach().float().cpu().flatten()
        new_var = m.running_var.detach().float().cpu().flatten()
        means.append(((new_mean - old_mean).abs() / old_var.clamp_min(1e-5).sqrt()).mean())
        logs.append((new_var.clamp_min(1e-8) / old_var.clamp_min(1e-8)).log().abs().mean())
        offset += 2 * n
    if not means:
        return BNShift(0, 0.0, 0.0)
    return BNShift(len(means), float(torch.stack(means).mean()), float(torch.stack(logs).mean()))


@torch.no_grad()
def adapt_batchnorm(
    module: nn.Module,
    batches: Iterable[torch.Tensor],
    total: int | None = None,
    progress: bool = True,
) -> None:
    """Recompute every BatchNorm layer's running statistics over ``batches`` of images
    (train-mode BatchNorm, everything else in eval mode, a cumulative average), then leave
    all of them in eval mode with the new statistics fixed."""
    layers = batchnorms(module)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    module.eval()
    for m in layers:
        m.train()
    bar = tqdm(total=total, desc="bn adapt", unit="img", disable=not progress or None)
    for images in batches:
        module(images)
        bar.update(len(images))
    bar.close()
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
        m.num_batches_tracked.zero_()  # as after load_statistics: one state, one cache key
        m.eval()
