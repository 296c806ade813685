"""Named stages of each backbone family, found by parameter-name patterns (never by position).

A stage is a contiguous part of the network that strategies freeze, unfreeze and give a
learning rate as one unit (timm's ``group_matcher`` is the model). Each family lists
``(pattern, name)`` rules; the first rule whose pattern matches a parameter name decides its
stage, and ``{0}``/``{1}`` in the name are filled from the pattern's groups (a callable name
receives the match). Stages come out in the order the parameters are registered, which for
every supported family is forward order (a contract test checks it with forward hooks).

The new classifier is always the last stage, ``head``; the backbone's own last convolution
(EfficientNet's and MobileNet's ``conv_head``) is named ``conv_head`` so the two never clash.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from headstart.errors import HeadstartError

HEAD = "head"
Namer = str | Callable[[re.Match[str]], str]


def _shift(offset: int, template: str) -> Callable[[re.Match[str]], str]:
    """Name numbered blocks from 0 when the container numbers them from ``-offset``."""
    return lambda m: template.format(int(m.group(1)) - offset)


def _convnext_tv(m: re.Match[str]) -> str:
    # torchvision ConvNeXt: features.0 stem, then (downsample, stage) pairs: 1 | 2,3 | 4,5 | 6,7
    n = int(m.group(1))
    return "stem" if n == 0 else f"stages.{n // 2}"


FAMILIES: dict[str, list[tuple[str, Namer]]] = {
    # one stage for the whole backbone: any module, used when nothing finer is known
    "generic": [(r"", "backbone")],
    # timm EfficientNet / EfficientNet-Lite / MobileNetV3 (conv_stem, bn1, blocks.N, conv_head)
    "timm_efficientnet": [
        (r"^(conv_stem|bn1)\.", "stem"),
        (r"^blocks\.(\d+)\.", "blocks.{0}"),
        (r"^(conv_head|bn2)\.", "conv_head"),
    ],
    # ResNets, torchvision and timm (timm's deep stem is conv1.N)
    "resnet": [(r"^(conv1|bn1)\.", "stem"), (r"^layer(\d)\.", "layer{0}")],
    "tv_efficientnet": [
        (r"^features\.0\.", "stem"),
        (r"^features\.8\.", "conv_head"),
        (r"^features\.(\d)\.", _shift(1, "blocks.{0}")),
    ],
    "tv_mobilenet_v3": [
        (r"^features\.0\.", "stem"),
        (r"^(features\.16|classifier\.0)\.", "conv_head"),
        (r"^features\.(\d+)\.", _shift(1, "blocks.{0}")),
    ],
    "tv_convnext": [(r"^features\.(\d)\.", _convnext_tv), (r"^classifier\.0\.", "norm")],
    "timm_convnext": [
        (r"^stem\.", "stem"),
        (r"^stages\.(\d)\.", "stages.{0}"),
        (r"^(head\.norm|norm_pre)\.", "norm"),
    ],
    "tv_vit": [
        (r"^(class_token|conv_proj\.|encoder\.pos_embedding)", "embed"),
        (r"^encoder\.layers\.encoder_layer_(\d+)\.", "blocks.{0}"),
        (r"^encoder\.ln\.", "norm"),
    ],
    "timm_vit": [
        (r"^(cls_token|reg_token|pos_embed|patch_embed\.)", "embed"),
        (r"^blocks\.(\d+)\.", "blocks.{0}"),
        (r"^(norm|fc_norm)\.", "norm"),
    ],
}

# Where `partial` starts unfreezing when the user does not say: the last block group and
# whatever follows it (ResNet layer4 is the textbook choice; the others match it in spirit;
# EfficientNet-Lite0's blocks.6 + conv_head are 1.0M of its 3.4M parameters).
DEFAULT_UNFREEZE_FROM: dict[str, str] = {
    "generic": "backbone",
    "timm_efficientnet": "blocks.6",
    "resnet": "layer4",
    "tv_efficientnet": "blocks.6",
    "tv_mobilenet_v3": "blocks.14",
    "tv_convnext": "stages.3",
    "timm_convnext": "stages.3",
    "tv_vit": "blocks.11",
    "timm_vit": "blocks.11",
}


class StageError(HeadstartError):
    """A stage name or stage rule that does not fit the model."""


def stage_name(family: str, param_name: str) -> str:
    """The stage of one backbone parameter (name relative to the backbone module)."""
    for pattern, namer in FAMILIES[family]:
        m = re.match(pattern, param_name)
        if m:
            return namer(m) if callable(namer) else namer.format(*m.groups())
    raise StageError(
        f"StageError: parameter {param_name!r} matches no stage rule of family {family!r}; "
        "add a rule in headstart/backbones/stages.py."
    )


def group_by_stage(family: str, names: Iterable[str]) -> dict[str, list[str]]:
    """Backbone parameter names grouped by stage, stages in first-appearance order."""
    stages: dict[str, list[str]] = {}
    for name in names:
        stages.setdefault(stage_name(family, name), []).append(name)
    return stages
