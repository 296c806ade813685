"""Build a backbone by name: architecture, weights and the preprocessing those weights need."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import BackboneSpec, get_spec
from headstart.backbones.stages import group_by_stage
from headstart.backbones.weights import (
    download_torchvision,
    load_into,
    package_weights_file,
    read_weights_file,
    resolve_source,
)
from headstart.errors import ConfigError, WeightsUnavailable


@dataclass
class Backbone:
    """A feature extractor: ``module(x)`` returns pooled features of shape (N, num_features).

    With ``imagenet_head=True`` at creation the original classifier is kept and ``module(x)``
    returns ImageNet logits instead (used to check that pretrained weights are real).
    """

    spec: BackboneSpec
    module: nn.Module
    num_features: int
    preprocessing: Preprocessing
    weights: str

    def stages(self) -> dict[str, list[str]]:
        """Parameter names by stage, in forward order (see ``backbones.stages``)."""
        return group_by_stage(self.spec.family, (n for n, _ in self.module.named_parameters()))


def create_backbone(
    name: str,
    weights: str | None = "default",
    *,
    imagenet_head: bool = False,
    drop_path: float | None = None,
) -> Backbone:
    """Create a registered backbone with weights from ``weights`` (see ``backbones.weights``)
    and, if ``drop_path`` is given, that stochastic-depth rate (see :func:`drop_path_kwargs`).

    >>> bb = create_backbone("tf_efficientnet_lite0")  # offline package weights
    >>> bb.num_features, bb.preprocessing.mean
    (1280, (0.5, 0.5, 0.5))
    """
    spec = get_spec(name)
    source = resolve_source(spec, weights)
    extra = drop_path_kwargs(spec, drop_path)
    if spec.library == "timm":
        model, prep, classifier = _build_timm(spec, source, extra)
    else:
        model, prep, classifier = _build_torchvision(spec, source, extra)
    linear = model.get_submodule(classifier)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{spec.name}: {classifier!r} is {type(linear).__name__}, not Linear")
    if not imagenet_head:
        model.set_submodule(classifier, nn.Identity())
    return Backbone(spec, model, linear.in_features, prep, source)


# torchvision families whose constructors take a stochastic-depth rate (their own default:
# EfficientNet 0.2, ConvNeXt 0.1); the others (ResNet, MobileNetV3, ViT) have no such layer
TORCHVISION_STOCHASTIC_DEPTH = ("tv_efficientnet", "tv_convnext")


def drop_path_kwargs(spec: BackboneSpec, rate: float | None) -> dict[str, float]:
    """The constructor argument that sets stochastic depth (Huang et al. 2016) to ``rate``.

    Every residual branch is skipped at random while training, the survivors scaled up, with
    a probability growing linearly with depth to ``rate``; evaluation runs every branch. The
    rate changes no parameter, so a run's weights load into the architecture built without it.
    ``None`` keeps the architecture's own rate.
    """
    if rate is None:
        return {}
    if spec.library == "timm":
        return {"drop_path_rate": rate}
    if spec.family in TORCHVISION_STOCHASTIC_DEPTH:
        return {"stochastic_depth_prob": rate}
    raise ConfigError(
        f"ConfigError: --drop-path: torchvision's {spec.name} has no stochastic depth to set. "
        "Leave out --drop-path, or pick a backbone that has it (timm's, or efficientnet_b0 "
        "and convnext_tiny from torchvision; `headstart backbones` lists them)."
    )


def _build_timm(
    spec: BackboneSpec, source: str, extra: dict[str, float]
) -> tuple[nn.Module, Preprocessing, str]:
    import timm

    kind, _, tag = source.partition(":")
    if kind == "timm":
        arch = f"{spec.arch}.{tag}" if tag else spec.arch
        try:
            model = timm.create_model(arch, pretrained=True, **extra)
        except Exception as e:  # hub errors come in many types; all mean "not available"
            raise WeightsUnavailable(
                f"WeightsUnavailable: timm could not load pretrained weights for {arch!r} "
                f"({type(e).__name__}: {str(e)[:200]}). Offline? Run once with internet to fill "
                "the Hugging Face cache (~/.cache/huggingface), or pass --weights PATH to a "
                "weights file, or --weights none for random init."
            ) from None
    else:
        model = timm.create_model(spec.arch, pretrained=False, **extra)
    classifier = model.pretrained_cfg["classifier"]
    if kind == "package":
        path = package_weights_file(spec)
        load_into(model, read_weights_file(path), f"package {spec.package}", classifier)
    elif kind != "timm" and kind != "none":
        load_into(model, read_weights_file(source), source, classifier)
    return model, Preprocessing.from_timm(model), classifier


def _build_torchvision(
    spec: BackboneSpec, source: str, extra: dict[str, float]
) -> tuple[nn.Module, Preprocessing, str]:
    import torchvision

    assert spec.classifier is not None
    enum = torchvision.models.get_model_weights(spec.arch)
    kind, _, member = source.partition(":")
    if kind == "torchvision" and member:
        try:
            weights = enum[member]
        except KeyError:
            raise ConfigError(
                f"--weights {source}: {spec.arch} has no weights {member!r}. "
                f"Available: {', '.join(w.name for w in enum)}."
            ) from None
    else:
        weights = enum.DEFAULT  # for `none` and files: the preprocessing they were meant for
    model = torchvision.models.get_model(spec.arch, weights=None, **extra)
    if kind == "torchvision":
        load_into(model, download_torchvision(weights), str(weights), spec.classifier)
    elif kind != "none":
        load_into(model, read_weights_file(source), source, spec.classifier)
    return model, Preprocessing.from_torchvision(weights), spec.classifier


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = ["Backbone", "count_parameters", "create_backbone", "drop_path_kwargs"]
