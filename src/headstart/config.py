"""Run configuration: frozen dataclasses in sections, read from and written to YAML.

Precedence: built-in defaults < ``--config FILE.yaml`` < command-line options. The resolved
config is saved as ``config.yaml`` in the run folder, so a run can be repeated with
``headstart train --config runs/NAME/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from headstart.backbones.registry import DEFAULT_BACKBONE
from headstart.errors import ConfigError

# Every choice an option offers is a Literal field type, read by the command line's parser
# (:func:`choices`) and the modules that act on it, and checked by :func:`check_fields`.
BnPolicy = Literal["frozen", "train", "eval", "adapt"]  # see finetune.freeze
AugmentPreset = Literal["photo", "aerial", "texture", "none"]  # see data.augment
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]  # see training.precision


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are split and augmented."""

    root: str = ""
    val_fraction: float = 0.2
    color_jitter: float = 0.0
    augment: AugmentPreset = "photo"  # augmentation preset and TTA symmetry
    sampler: Literal["shuffle", "balanced"] = "shuffle"  # balanced: classes equally often
    num_workers: int | None = None  # None: chosen from the core count
    cache: bool = True  # feature, decoded-image and audit caches (see headstart.cache)
    cache_dir: str | None = None  # None: $HEADSTART_CACHE, else the user cache folder
    cached_views: int = 0  # augmented views cached per training image besides the clean one
    labels: str | None = None  # a labels CSV (image column + one column per task) instead of root
    images_root: str | None = None  # folder the CSV's image paths are relative to
    tasks: list[str] | None = None  # CSV columns to learn (None: all but the image column)
    group: str | None = None  # CSV column naming each image's subject: split by whole groups


@dataclass(frozen=True)
class ModelConfig:
    """Backbone, weight source and head."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None  # None: the strategy's default (pretrained, or none for scratch)
    dropout: float = 0.0
    drop_path: float | None = None  # stochastic depth; None: the architecture's own (timm's 0)
    layers: Literal["last", "all"] = "last"  # all: the heads read every stage's pooled output
    image_size: int | None = None  # None: the weights' own input size
    crop_pct: float | None = None  # None: the weights' own crop fraction


@dataclass(frozen=True)
class StrategyConfig:
    """Which strategy and its learning rates; None means the strategy's own default."""

    name: str = "probe"
    lr: float | Literal["auto"] | None = None  # "auto": the range test's pick
    head_lr_mult: float | None = None
    bn: BnPolicy | None = None
    unfreeze_from: str | None = None  # partial: first trainable stage
    lr_decay: float | None = None  # finetune/gradual: each earlier stage's LR x this
    stage_lr: dict[str, float] | None = None  # finetune: LR multiplier per stage
    unfreeze_every: int | None = None  # gradual: epochs between unfreezing steps
    probe_epochs: int | None = None  # lp-ft: epochs of the probe phase
    warm_head: bool = True  # backbone-training strategies: fit the head on cached features first


DEFAULT_WEIGHT_DECAY = 0.01


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, warmup + cosine schedule, regularisation and early stopping."""

    epochs: int = 10
    batch_size: int = 32
    accumulate: int = 1  # batches whose gradients sum to one optimizer step (training.accumulation)
    weight_decay: float | None = None  # None: 0.01, or chosen by CV for a multi-layer probe
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.0
    grad_clip: float | None = 1.0
    patience: int | None = 5  # epochs without val-accuracy improvement; None disables
    task_weights: dict[str, float] | None = None  # loss weight per task (None: 1 each)
    class_weights: Literal["balanced"] | None = None  # per-task class weights n / (k * n_c)
    monitor: str = "mean"  # best epoch by the mean task accuracy, or by one task's
    keep: Literal["best", "last"] = "best"  # weights kept: the best validated epoch's, or the last
    ema: float | None = None  # epochs a moving average of the weights spans (None: off)
    mixup: float = 0.0  # Beta(a, a) of mixup's blend weight (0: off); see training.mixing
    cutmix: float = 0.0  # Beta(a, a) of CutMix's kept area (0: off); both: half the batches each

    @property
    def mixes(self) -> bool:
        """Whether batches are blended (``--mixup`` or ``--cutmix``)."""
        return bool(self.mixup or self.cutmix)

    @property
    def decay(self) -> float:
        """The weight decay in force (:data:`DEFAULT_WEIGHT_DECAY` unless set or chosen)."""
        return DEFAULT_WEIGHT_DECAY if self.weight_decay is None else self.weight_decay


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as the run's ``config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"
    precision: PrecisionName = "auto"  # see training.precision
    compile: bool = False  # torch.compile the training forward pass (see training.loop.fit)
    grad_checkpointing: bool = False  # recompute activations in backward (training.memory)
    log: Literal["tensorboard"] | None = None  # also write RUN/tb/ (training.tensorboard)
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for YAML and the manifest)."""
        return dataclasses.asdict(self)

    def value(self, key: str) -> Any:
        """The value at a dotted key, e.g. ``"optim.epochs"`` (as ``with_overrides`` takes)."""
        section, _, name = key.rpartition(".")
        return getattr(getattr(self, section) if section else self, name)

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with dotted keys replaced, e.g. ``{"optim.epochs": 3}``."""
        cfg = self
        for key, value in overrides.items():
            section, _, name = key.rpartition(".")
            if section:
                sub = getattr(cfg, section)
                cfg = replace(cfg, **{section: replace(sub, **{name: value})})
            else:
                cfg = replace(cfg, **{name: value})
        return cfg


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "strategy": StrategyConfig,
    "optim": OptimConfig,
}


def config_from_dict(d: dict[str, Any], origin: str = "config") -> TrainConfig:
    """Build a TrainConfig from a nested dict, refusing unknown keys with the valid ones."""
    top = {f.name for f in fields(TrainConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in (d or {}).items():
        if key not in top:
            raise ConfigError(f"ConfigError: {origin}: unknown key {key!r}; valid: {sorted(top)}.")
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"ConfigError: {origin}: {key!r} must be a mapping.")
            valid = {f.name for f in fields(_SECTIONS[key])}
            bad = sorted(set(value) - valid)
            if bad:
                raise ConfigError(
                    f"ConfigError: {origin}: unknown key(s) {bad} in {key!r}; "
                    f"valid: {sorted(valid)}."
                )
            _check_types(_SECTIONS[key], value, f"{origin}: {key}.")
            kwargs[key] = _SECTIONS[key](**value)
        else:
            _check_types(TrainConfig, {key: value}, f"{origin}: ")
            kwargs[key] = value
    return TrainConfig(**kwargs)


def choices(cls: type, name: str) -> list[str]:
    """The values a ``Literal`` field of ``cls`` takes (for the command line's ``choices``)."""
    hint = get_type_hints(cls)[name]
    parts = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    return [str(o) for part in parts if get_origin(part) is Literal for o in get_args(part)]


def check_fields(cfg: TrainConfig) -> None:
    """Refuse a field whose value its type does not take (a config built in Python is not
    checked by the command line's parser or the YAML reader)."""
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name in _SECTIONS:
            _check_types(_SECTIONS[f.name], dataclasses.asdict(value), f"{f.name}.")
        else:
            _check_types(TrainConfig, {f.name: value}, "")


def _check_types(cls: type, values: dict[str, Any], where: str) -> None:
    """Refuse a value whose type the field of ``cls`` does not take (a YAML file is typed by
    its author, not by the command line's parser)."""
    hints = get_type_hints(cls)
    for name, value in values.items():
        if not _fits(value, hints[name]):
            raise ConfigError(
                f"ConfigError: {where}{name} is {value!r}; expected {_describe(hints[name])}."
            )


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
          type(None): "null"}  # fmt: skip


def _fits(value: Any, hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, h) for h in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items()
        )
    if hint is float:  # an integer is a number; a bool is not
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(h) for h in args)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is list:
        return f"a list ({_describe(args[0])} each)"
    if origin is dict:
        return f"a mapping ({_describe(args[0])} to {_describe(args[1])})"
    return _KINDS.get(hint, hint.__name__)


# the numbers each option takes: (dotted key, option, test, what it takes); None is "unset"
RANGES: tuple[tuple[str, str, Callable[[float], bool], str], ...] = (
    ("optim.epochs", "--epochs", lambda v: v >= 1, "at least 1"),
    ("optim.batch_size", "--batch-size", lambda v: v >= 1, "at least 1"),
    ("optim.accumulate", "--accumulate", lambda v: v >= 1, "at least 1"),
    ("strategy.lr", "--lr", lambda v: v >= 0, "a number >= 0 or auto"),
    ("strategy.head_lr_mult", "--head-lr-mult", lambda v: v > 0, "a multiplier above 0"),
    ("strategy.lr_decay", "--lr-decay", lambda v: v > 0, "a factor above 0"),
    ("strategy.unfreeze_every", "--unfreeze-every", lambda v: v >= 1, "at least 1 epoch"),
    ("strategy.probe_epochs", "--probe-epochs", lambda v: v >= 1, "at least 1 epoch"),
    ("strategy.stage_lr", "--stage-lr", lambda v: v >= 0, "multipliers of 0 or more"),
    ("optim.task_weights", "--task-weights", lambda v: v >= 0, "weights of 0 or more"),
    ("model.dropout", "--dropout", lambda v: 0 <= v < 1, "a rate from 0 to below 1"),
    ("model.drop_path", "--drop-path", lambda v: 0 <= v < 1, "a rate from 0 to below 1"),
    ("model.image_size", "--image-size", lambda v: 32 <= v <= 1024, "32 to 1024 pixels"),
    ("model.crop_pct", "--crop-pct", lambda v: 0.3 <= v <= 1, "0.3 to 1.0"),
    ("optim.weight_decay", "--weight-decay", lambda v: v >= 0, "0 or more"),
    ("optim.warmup_epochs", "--warmup-epochs", lambda v: v >= 0, "0 or more epochs"),
    ("optim.min_lr_ratio", "optim.min_lr_ratio", lambda v: 0 <= v <= 1, "0 to 1"),
    ("optim.label_smoothing", "--label-smoothing", lambda v: 0 <= v < 1, "0 to below 1"),
    ("optim.grad_clip", "--grad-clip", lambda v: v >= 0, "a norm above 0 (0 disables)"),
    ("optim.patience", "--patience", lambda v: v >= 1, "at least 1 epoch"),
    ("optim.ema", "--ema", lambda v: v > 0, "a span in epochs > 0"),
    ("optim.mixup", "--mixup", lambda v: v >= 0, "a Beta alpha > 0 (0: off)"),
    ("optim.cutmix", "--cutmix", lambda v: v >= 0, "a Beta alpha > 0 (0: off)"),
    ("data.val_fraction", "--val-fraction", lambda v: 0 < v < 1, "a fraction between 0 and 1"),
    ("data.color_jitter", "--color-jitter", lambda v: v >= 0, "0 (off) or more"),
    ("data.num_workers", "--workers", lambda v: v >= 0, "0 (the main process) or more"),
    ("data.cached_views", "--cached-views", lambda v: v >= 0, "0 or more"),
)


def check_ranges(cfg: TrainConfig) -> None:
    """Refuse a number outside what its option takes (NaN included), naming the option; for
    ``NAME=number`` options, each number."""
    for key, option, test, what in RANGES:
        value = cfg.value(key)
        if value is None or isinstance(value, str):  # unset, or --lr auto
            continue
        named = value.items() if isinstance(value, dict) else [("", value)]  # NAME=number,...
        for item, number in named:
            if not test(number):
                shown = f"{item}={number}" if item else f"{number}"
                raise ConfigError(f"ConfigError: {option} {shown}; expected {what}.")


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML config file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"ConfigError: --config {path}: no such file.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"ConfigError: --config {path} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"ConfigError: --config {path} must hold a mapping of sections.")
    return config_from_dict(data or {}, origin=str(path))


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
