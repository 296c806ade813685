"""Backbones: the registry, weight sources and the preprocessing that travels with weights.

The registry and preprocessing import without torch (the command line's parser and the
config read them); the factory's names load torch when first used."""

from typing import TYPE_CHECKING, Any

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    get_spec,
    list_backbones,
    register,
)

if TYPE_CHECKING:  # type checkers see the factory's real signatures
    from headstart.backbones.factory import Backbone, count_parameters, create_backbone

_FACTORY = ("Backbone", "count_parameters", "create_backbone")


def __getattr__(name: str) -> Any:
    """The factory's names, imported (with torch) on first use."""
    if name in _FACTORY:
        from headstart.backbones import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
