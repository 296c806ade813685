"""A backbone's forward pass as a chain of parts, so it can be cut at a stage boundary.

The frozen prefix of a ``partial`` model is a fixed function of the image: its outputs can
be computed once and cached, and only the rest (the tail) has to run while training. That
needs the forward pass as an explicit sequence, which each architecture class gives here;
a contract test checks, for every registered backbone, that the chain computes exactly what
``module(x)`` computes. Architectures without a chain (ViT) cache only the probe's pooled
features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from headstart.backbones.stages import stage_name

Part = tuple[str, Callable[[torch.Tensor], torch.Tensor]]  # (module path, function)


class Chain:
    """Parts applied in order. A plain callable, not a module: its parts stay registered
    only where they already are, so parameter names and state dicts do not change."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts = list(parts)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for _, fn in self.parts:
            x = fn(x)
        return x


def _expand(module: nn.Module, names: Sequence[str]) -> list[Part]:
    """Named submodules; ``name*`` stands for each child of a Sequential in turn."""
    parts: list[Part] = []
    for name in names:
        if name.endswith("*"):
            seq = module.get_submodule(name[:-1])
            parts += [(f"{name[:-1]}.{i}", child) for i, child in enumerate(seq)]
        else:
            parts.append((name, module.get_submodule(name)))
    return parts


def forward_parts(module: nn.Module) -> list[Part] | None:
    """The forward pass of ``module`` (a backbone with its classifier replaced by Identity)
    as parts, or None when its class has no known chain."""
    import timm.models as tm
    import torchvision.models as tv

    if isinstance(module, tm.efficientnet.EfficientNet):
        return [*_expand(module, ["conv_stem", "bn1", "blocks*", "conv_head", "bn2"]),
                ("", module.forward_head)]  # fmt: skip
    if isinstance(module, tm.mobilenetv3.MobileNetV3):  # its conv_head runs after pooling
        return [*_expand(module, ["conv_stem", "bn1", "blocks*"]),
                ("conv_head", module.forward_head)]  # fmt: skip
    if isinstance(module, tm.resnet.ResNet):
        names = ["conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return [*_expand(module, names), ("", module.forward_head)]
    if isinstance(module, tm.convnext.ConvNeXt):
        return [*_expand(module, ["stem", "stages*", "norm_pre"]), ("head", module.forward_head)]
    if isinstance(module, tv.ResNet):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return [*_expand(module, [*names, "avgpool"]), ("fc", _flatten_then(module.fc))]
    if isinstance(module, tv.EfficientNet | tv.MobileNetV3):
        return [*_expand(module, ["features*", "avgpool"]),
                ("classifier", _flatten_then(module.classifier))]  # fmt: skip
    if isinstance(module, tv.ConvNeXt):  # its classifier starts with a norm and flattens itself
        return _expand(module, ["features*", "avgpool", "classifier"])
    return None


def _flatten_then(fn: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: fn(torch.flatten(x, 1))


def part_stages(module: nn.Module, family: str, parts: Sequence[Part]) -> list[str]:
    """The stage of each part: the stage of its first parameter; a part without parameters
    (an activation, a pooling) belongs to the stage before it."""
    stages: list[str] = []
    for path, _ in parts:
        params = list(module.get_submodule(path).named_parameters()) if path else []
        if params:
            stages.append(stage_name(family, f"{path}.{params[0][0]}"))
        else:
            stages.append(stages[-1] if stages else "")
    return stages


@dataclass
class Cut:
    """A backbone cut before its first trainable stage: the frozen ``prefix`` and the
    ``tail`` that trains; ``boundary`` names the first stage of the tail (``pooled`` when the
    whole backbone is the prefix)."""

    prefix: Callable[[torch.Tensor], torch.Tensor]
    tail: Chain
    boundary: str


def cut_backbone(module: nn.Module, family: str, first_trainable: str | None) -> Cut | None:
    """Cut before stage ``first_trainable`` (None: the whole backbone is frozen).
    None when the architecture has no chain, or the stage starts no part."""
    if first_trainable is None:
        return Cut(module, Chain([]), "pooled")
    parts = forward_parts(module)
    if parts is None:
        return None
    stages = part_stages(module, family, parts)
    if first_trainable not in stages:
        return None
    i = stages.index(first_trainable)
    if i == 0:
        return None  # nothing frozen in front
    return Cut(Chain(parts[:i]), Chain(parts[i:]), first_trainable)


PROBE_SIZE = 64  # pixels of a probe image: enough for every stage of a CNN to run


def probe_images(module: nn.Module) -> torch.Tensor | None:
    """A small random image batch (2 x 3 x 64 x 64) where ``module`` is: on its device, in
    its dtype and in channels-last layout, drawn from a generator of its own (the global
    random state, which resumed runs replay, is not touched); None for a module without
    parameters. What a network is run on to learn its shapes (``StageTaps``) or to check
    a rewrite of it (``training.fold``)."""
    param = next(module.parameters(), None)
    if param is None:
        return None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, PROBE_SIZE, PROBE_SIZE, generator=gen)
    return x.to(param.device, param.dtype, memory_format=torch.channels_last)
