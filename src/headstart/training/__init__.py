"""Training: the loop, schedule, early stopping, checkpoints and the run folder."""

from headstart.training.checkpoint import LoadedRun, load_run, read_manifest, save_checkpoint
from headstart.training.early_stopping import EarlyStopping
from headstart.training.loop import EpochStats, FitResult, collect_logits, fit
from headstart.training.schedule import warmup_cosine
from headstart.training.train import TrainResult, resolve_config, train

__all__ = [
    "EarlyStopping",
    "EpochStats",
    "FitResult",
    "LoadedRun",
    "TrainResult",
    "collect_logits",
    "fit",
    "load_run",
    "read_manifest",
    "resolve_config",
    "save_checkpoint",
    "train",
    "warmup_cosine",
]
