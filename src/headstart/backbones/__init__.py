"""Backbones: the registry, weight sources and the preprocessing that travels with weights."""

from headstart.backbones.factory import Backbone, count_parameters, create_backbone
from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    get_spec,
    list_backbones,
    register,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneSpec",
    "Preprocessing",
    "count_parameters",
    "create_backbone",
    "get_spec",
    "list_backbones",
    "register",
]
