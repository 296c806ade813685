"""Multi-layer features: the pooled output of every backbone stage, not only the last.

On images far from ImageNet (solar cells, microscopy, textures) the last stage's features
are the wrong abstraction, while earlier stages still describe edges, blobs and textures
well. Head2Toe (Evci et al., ICML 2022) showed that a linear head over features taken from
every layer matches fine-tuning on average across VTAB, and beats it on tasks far from
ImageNet. Here each stage's output is pooled over space by its mean and standard deviation,
every feature is standardised with the training images' mean and standard deviation (so
stages of 16 and of 1,280 channels speak on one scale), and the stages are concatenated.

Which stages the head reads is chosen on the training data (``training.regularise``): on
photos like ImageNet's the last stage alone is the better abstraction and the others only
add ways to overfit a few hundred images, so :meth:`StageTaps.use_top` zeroes the features
of all but the last k stages (the head's weights on them then stay zero).

The taps hold only the standardisation buffers; the backbone's modules stay where they are,
so parameter names and checkpoints keep their shape (``backbone.*``, ``heads.*``, and
``taps.mean`` / ``taps.std`` / ``taps.keep``).
"""

from __future__ import annotations

import torch
from torch import nn

from headstart.backbones.split import Part, forward_parts, part_stages, probe_images
from headstart.errors import ConfigError

LAYERS = ("last", "all")


class StageTaps(nn.Module):
    """``backbone`` run as its chain of parts, with the output of each stage's last part
    average-pooled and kept; ``forward`` returns them standardised and concatenated."""

    def __init__(self, backbone: nn.Module, family: str, name: str = "this backbone") -> None:
        super().__init__()
        parts = forward_parts(backbone)
        if parts is None:
            raise ConfigError(
                f"ConfigError: --layers all needs a backbone whose stages can be tapped; "
                f"{name} cannot. Use a CNN (EfficientNet, MobileNet, ResNet, ConvNeXt) or "
                "--layers last."
            )
        stages = part_stages(backbone, family, parts)
        self._parts: list[Part] = parts  # a plain list: the modules stay registered in place
        self._ends = {
            i for i in range(len(parts)) if i + 1 == len(parts) or stages[i + 1] != stages[i]
        }
        self.stage_names = [stages[i] for i in sorted(self._ends)]
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():  # where the backbone is: recommend taps one already on a GPU
            dims = [t.shape[1] for t in self._pooled(probe_images(backbone))]
        backbone.train(was_training)
        self.dims = dims  # features per stage, in order
        self.register_buffer("mean", torch.zeros(sum(dims)))
        self.register_buffer("std", torch.ones(sum(dims)))
        self.register_buffer("keep", torch.ones(sum(dims)))  # 1: the stage is read, 0: not

    @property
    def stages_used(self) -> list[str]:
        """The names of the stages whose features the head reads."""
        out, offset = [], 0
        for name, d in zip(self.stage_names, self.dims, strict=True):
            if bool(self.keep[offset : offset + d].any()):
                out.append(name)
            offset += d
        return out

    def use_top(self, k: int) -> None:
        """Read only the last ``k`` stages (all of them when ``k`` is their number)."""
        first = sum(self.dims[: max(0, len(self.dims) - k)])
        self.keep.zero_()
        self.keep[first:] = 1.0

    @property
    def num_features(self) -> int:
        """Length of the concatenated feature vector."""
        return int(self.mean.numel())

    def _pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, (_, fn) in enumerate(self._parts):
            x = fn(x)
            if i in self._ends and x.ndim == 4:
                std, mean = torch.std_mean(x.float(), dim=(2, 3))
                out.append(torch.cat([mean, std], dim=1))
            elif i in self._ends:
                out.append(x.float().flatten(1))
        return out

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled stage outputs, concatenated, before standardisation (what the cache keeps)."""
        return torch.cat(self._pooled(images), dim=1)

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Standardise raw concatenated features with the stored training statistics; the
        features of stages not read are zero."""
        return (features - self.mean) / self.std * self.keep

    def fit_statistics(self, features: torch.Tensor) -> None:
        """Set the standardisation from raw training features (N, D); constant features
        keep a scale of 1 so they stay finite."""
        self.mean.copy_(features.mean(0))
        std = features.std(0)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised multi-layer features of an image batch."""
        return self.normalize(self.raw(images))
