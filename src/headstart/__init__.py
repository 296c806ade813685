"""headstart: transfer learning for image classification with PyTorch.

>>> from headstart import TrainConfig, train
>>> cfg = TrainConfig().with_overrides({"data.root": "data/hymenoptera", "optim.epochs": 5})
>>> result = train(cfg)  # doctest: +SKIP
"""

__version__ = "0.1.0"

from headstart.backbones import create_backbone, list_backbones
from headstart.config import TrainConfig, load_config
from headstart.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HeadstartError,
    UnknownBackbone,
    WeightsUnavailable,
)
from headstart.model import Classifier
from headstart.training import load_run, train

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
]
