"""headstart: transfer learning for image classification with PyTorch.

>>> from headstart import TrainConfig, train
>>> cfg = TrainConfig().with_overrides({"data.root": "data/hymenoptera", "optim.epochs": 5})
>>> result = train(cfg)  # doctest: +SKIP
"""

__version__ = "0.1.0"

from headstart.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HeadstartError,
    UnknownBackbone,
    WeightsUnavailable,
)

# The rest imports torch: loaded on first use (PEP 562), so the torch-free runtime
# (headstart.runtime: predict and serve an ONNX export) can import headstart without it.
_LAZY = {
    "create_backbone": "headstart.backbones",
    "list_backbones": "headstart.backbones",
    "TrainConfig": "headstart.config",
    "load_config": "headstart.config",
    "Classifier": "headstart.model",
    "load_run": "headstart.training",
    "train": "headstart.training",
    "tune_allocator": "headstart.allocator",
}


def __getattr__(name: str) -> object:
    """``headstart.train`` and the other torch-backed names, imported when first used."""
    if name not in _LAZY:
        raise AttributeError(f"module 'headstart' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "CheckpointError",
    "Classifier",
    "ConfigError",
    "DataError",
    "HeadstartError",
    "TrainConfig",
    "UnknownBackbone",
    "WeightsUnavailable",
    "__version__",
    "create_backbone",
    "list_backbones",
    "load_config",
    "load_run",
    "train",
    "tune_allocator",
]
