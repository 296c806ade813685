"""Everything a run needs before its loop: the config resolved, the backbone at its input
size, the plan, the data split and objective (:func:`prepare_data`), then the model with its
BatchNorm statistics, warm-started head and inputs (:func:`build_model`). ``train`` and
``lr-find`` share them, so the range test sees exactly what the run will train on."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import torch

from headstart.backbones import Backbone, count_parameters, create_backbone
from headstart.backbones.stages import DEFAULT_UNFREEZE_FROM
from headstart.cache import Cache
from headstart.config import DEFAULT_WEIGHT_DECAY, TrainConfig, check_fields, check_ranges
from headstart.data import DataSplit, load_split, load_table_split
from headstart.data.near_duplicates import NEAR_DUPLICATES
from headstart.data.split import grayscale_note, white_level
from headstart.errors import ConfigError
from headstart.finetune import (
    DEFAULTS,
    STRATEGIES,
    Plan,
    StrategyOptions,
    make_plan,
    trainable_per_phase,
)
from headstart.finetune.scaling import head_mult, rule_line, scaled_lr
from headstart.model import Classifier
from headstart.multilayer import StageTaps
from headstart.training.accumulation import accumulation_line
from headstart.training.device import resolve_device, seed_everything
from headstart.training.inputs import Inputs, adapt_backbone, make_inputs
from headstart.training.lr_find import RangeTest, range_test
from headstart.training.memory import check_checkpointing, checkpoint_activations
from headstart.training.objective import Objective, balanced_class_weights, check_monitor
from headstart.training.precision import Precision, for_layers, resolve_precision
from headstart.training.unfreeze import AUTO_STAGE, StageChoice, multilayer_choice, unfreeze_stage
from headstart.training.warm_head import STRATEGIES as WARM_STRATEGIES
from headstart.training.warm_head import WarmHead, warm_start


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill strategy defaults (LR, weights, BN policy) and validate options once, here."""
    s = cfg.strategy
    if s.name not in STRATEGIES:
        raise ConfigError(
            f"ConfigError: --strategy {s.name!r} is not known; "
            f"expected one of {', '.join(STRATEGIES)}."
        )
    check_fields(cfg)  # every choice and type, then the numbers' ranges
    check_ranges(cfg)
    resolve_precision(cfg.precision, resolve_device(cfg.device))  # fails before any work
    if cfg.model.layers == "all" and (s.name != "probe" or not cfg.data.cache):
        raise ConfigError(
            "ConfigError: --layers all is a probe option (a frozen backbone read at every "
            "stage, from the feature cache): use it with --strategy probe and without "
            f"--no-cache (got --strategy {s.name}{', --no-cache' if not cfg.data.cache else ''})."
        )
    if cfg.model.layers == "all" and s.lr == "auto":
        raise ConfigError(
            "ConfigError: --layers all fits its head by L-BFGS, with no learning rate to "
            "find; leave out --lr auto."
        )
    if cfg.model.layers == "all" and cfg.optim.weight_decay is not None:
        raise ConfigError(
            "ConfigError: --layers all fits its head to convergence with an L2 penalty chosen "
            "by cross-validation on the training features; leave out --weight-decay."
        )
    if cfg.model.layers == "all" and cfg.optim.ema is not None:
        raise ConfigError(
            "ConfigError: --layers all solves its head exactly (L-BFGS), with no steps whose "
            "weights could be averaged; leave out --ema."
        )
    if cfg.model.layers == "all" and cfg.optim.mixes:
        raise ConfigError(
            "ConfigError: --layers all solves its head exactly (L-BFGS) on the cached "
            "features as they are; leave out --mixup and --cutmix."
        )
    if cfg.optim.cutmix and s.name == "probe" and cfg.data.cache:
        raise ConfigError(
            "ConfigError: --cutmix pastes a box of one image into another, and a cached probe "
            "trains on pooled feature vectors, which have no area; use --mixup, or --no-cache."
        )
    if cfg.model.drop_path and s.name == "probe":
        raise ConfigError(
            "ConfigError: --drop-path regularises a backbone that trains, and a probe's is "
            "frozen (its features read once, every block run); leave it out, or use it with "
            "--strategy partial, finetune, gradual, lp-ft or scratch."
        )
    if s.unfreeze_from == AUTO_STAGE and not cfg.data.cache:
        raise ConfigError(
            "ConfigError: --unfreeze-from auto chooses the stage from every stage's cached "
            "features; leave out --no-cache, or name the stage (see `headstart inspect "
            "BACKBONE`)."
        )
    if not cfg.data.root and not cfg.data.labels:
        raise ConfigError(
            "ConfigError: no data given; pass DATA_DIR, or --labels CSV (with --images-root)."
        )
    if cfg.data.root and cfg.data.labels:
        raise ConfigError(
            "ConfigError: pass either DATA_DIR or --labels CSV, not both (the CSV's image paths "
            "are relative to --images-root)."
        )
    d = DEFAULTS[s.name]
    warm = s.name in WARM_STRATEGIES and s.warm_head and cfg.data.cache
    out = cfg.out or f"runs/{s.name}-{datetime.now():%Y%m%d-%H%M%S}"
    chosen_later = cfg.model.layers == "all"  # by cross-validation (training.regularise)
    return cfg.with_overrides(
        {
            "optim.weight_decay": cfg.optim.weight_decay
            if cfg.optim.weight_decay is not None or chosen_later
            else DEFAULT_WEIGHT_DECAY,
            "strategy.lr": s.lr if s.lr is not None else d.lr,  # None: see scale_lr
            "strategy.bn": s.bn or d.bn,
            "strategy.head_lr_mult": s.head_lr_mult
            if s.head_lr_mult is not None
            else d.head_lr_mult
            if d.head_lr_mult is not None
            else head_mult(bool(warm)),
            "model.weights": cfg.model.weights or d.weights,
            "out": out,
        }
    )


def strategy_options(cfg: TrainConfig) -> StrategyOptions:
    """The strategy section of a config as plan options."""
    s = cfg.strategy
    return StrategyOptions(
        name=s.name,
        head_lr_mult=s.head_lr_mult,
        bn=s.bn,  # type: ignore[arg-type]
        unfreeze_from=s.unfreeze_from,
        lr_decay=s.lr_decay,
        stage_lr=s.stage_lr,
        unfreeze_every=s.unfreeze_every,
        probe_epochs=s.probe_epochs,
    )


def plan_for(cfg: TrainConfig, backbone: Backbone) -> Plan:
    """The strategy plan of ``cfg`` over the backbone's stages (``--unfreeze-from auto``:
    the default stage until :func:`prepare_data` has chosen one)."""
    opts = strategy_options(cfg)
    if opts.unfreeze_from == AUTO_STAGE:
        opts = replace(opts, unfreeze_from=None)
    return make_plan(
        opts,
        list(backbone.stages()),
        cfg.optim.epochs,
        DEFAULT_UNFREEZE_FROM.get(backbone.spec.family),
    )


def load_data(cfg: TrainConfig, cache: Cache | None = None, progress: bool = False) -> DataSplit:
    """The split ``cfg`` describes: a labels CSV, or a folder (train/val, or split);
    ``progress``: a bar while a cold audit of the images runs long."""
    if cfg.data.labels:
        return load_table_split(
            cfg.data.labels, cfg.data.images_root, cfg.data.tasks, cfg.data.val_fraction,
            cfg.seed, cache, group=cfg.data.group, progress=progress,
        )  # fmt: skip
    for option, value in (("--tasks", cfg.data.tasks), ("--images-root", cfg.data.images_root)):
        if value:
            raise ConfigError(
                f"ConfigError: {option} is an option of a labels CSV (--labels); a folder of "
                "class subfolders has one task, its folder names, and no image column. Pass "
                f"--labels CSV, or drop {option}."
            )
    if cfg.data.group not in (None, NEAR_DUPLICATES):
        raise ConfigError(
            f"ConfigError: --group {cfg.data.group} names a column of a labels CSV; a folder "
            f"of class subfolders has none (--group {NEAR_DUPLICATES} groups look-alike "
            "images). Pass --labels CSV, or drop --group."
        )
    return load_split(
        cfg.data.root, cfg.data.val_fraction, cfg.seed, cache, cfg.data.group, progress
    )


def make_objective(cfg: TrainConfig, split: DataSplit) -> Objective:
    """The loss and selection metric for ``split``'s tasks, checked against them."""
    tasks = list(split.tasks)
    weights = cfg.optim.task_weights or {}
    unknown = sorted(set(weights) - set(tasks))
    if unknown:
        raise ConfigError(
            f"ConfigError: --task-weights names {', '.join(unknown)}, not a task here; "
            f"tasks: {', '.join(tasks)}."
        )
    check_monitor(cfg.optim.monitor, tasks)
    class_weights = {}
    if cfg.optim.class_weights == "balanced":
        class_weights = {
            t: balanced_class_weights(split.labels(split.train, t), len(c))
            for t, c in split.tasks.items()
        }
    return Objective(weights, class_weights, cfg.optim.label_smoothing, cfg.optim.monitor)


@dataclass
class Ready:
    """What :func:`prepare_data` sets up: no model yet, nothing computed per image."""

    backbone: Backbone
    plan: Plan
    cache: Cache | None
    split: DataSplit
    objective: Objective
    device: torch.device
    generator: torch.Generator
    precision: Precision
    unfreeze: StageChoice | None = None  # --unfreeze-from auto's choice


def build_backbone(cfg: TrainConfig, white: int | None = None) -> Backbone:
    """``cfg``'s backbone with its weights, at ``--image-size`` / ``--crop-pct`` if given,
    reading images with the data's white level ``white`` (see :func:`prepare_data`)."""
    backbone = create_backbone(cfg.model.backbone, cfg.model.weights, drop_path=cfg.model.drop_path)
    if cfg.model.image_size or cfg.model.crop_pct:
        backbone.preprocessing = backbone.preprocessing.at_size(
            cfg.model.image_size or backbone.preprocessing.input_size, cfg.model.crop_pct
        )
    backbone.preprocessing = replace(backbone.preprocessing, white_level=white)
    return backbone


def prepare_data(
    cfg: TrainConfig,
    split: DataSplit | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = False,
) -> Ready:
    """Seed everything, create the backbone at the configured input size, make the plan,
    load and describe the split (``split`` replaces the one ``cfg`` describes; ``progress``:
    a bar while a cold audit of the images runs long)."""
    gen = seed_everything(cfg.seed)
    backbone = build_backbone(cfg)  # fails fast on a bad name
    plan = plan_for(cfg, backbone)  # and on bad strategy options
    cache = Cache(cfg.data.cache_dir) if cfg.data.cache else None
    split = split or load_data(cfg, cache, progress)
    objective = make_objective(cfg, split)
    level, deep = white_level(split)  # 16-bit images: the backbone reads them at their depth
    backbone.preprocessing = replace(backbone.preprocessing, white_level=level)
    for note in (grayscale_note(split), deep):
        if note and note not in split.notes:
            split.notes.append(note)
    echo(split.summary())
    device = resolve_device(cfg.device)
    precision = resolve_precision(for_layers(cfg.precision, cfg.model.layers), device)
    ready = Ready(backbone, plan, cache, split, objective, device, gen, precision)
    if plan.name == "partial" and cfg.strategy.unfreeze_from == AUTO_STAGE:
        try:
            _, _, choice = multilayer_choice(cfg, ready, progress)
        except ConfigError as e:  # a backbone whose stages cannot be tapped
            raise ConfigError(f"{e} (--unfreeze-from auto reads every stage: name one.)") from None
        unfreeze = unfreeze_stage(choice, backbone.stages(), plan.first_trainable)
        echo(unfreeze.line())
        plan = plan_for(cfg.with_overrides({"strategy.unfreeze_from": unfreeze.stage}), backbone)
        ready = replace(ready, plan=plan, unfreeze=unfreeze)
    return ready


@dataclass
class Built:
    """The model and what it reads, from :func:`build_model`."""

    model: Classifier
    inputs: Inputs
    warm: WarmHead | None
    taps: StageTaps | None
    per_phase: list[int]
    total: int


def build_model(
    cfg: TrainConfig, ready: Ready, echo: Callable[[str], None] = print, progress: bool = True
) -> Built:
    """The classifier, its BatchNorm statistics (``--bn adapt``), its warm-started head
    (strategies that train the backbone) and the loaders it trains on."""
    backbone, plan, cache, split = ready.backbone, ready.plan, ready.cache, ready.split
    objective, device, gen = ready.objective, ready.device, ready.generator
    model = Classifier(
        backbone.module,
        backbone.num_features,
        {task: len(classes) for task, classes in split.tasks.items()},
        cfg.model.dropout,
        backbone.spec.family,
        cfg.model.layers,
    )
    if cfg.grad_checkpointing:  # refused before any work, not after the features
        check_checkpointing(backbone.module, cfg.model.backbone, plan.bn)
    per_phase = trainable_per_phase(model, plan)
    total = count_parameters(model)
    later = f" (then {', '.join(f'{n:,}' for n in per_phase[1:])})" if len(per_phase) > 1 else ""
    echo(
        f"model: {cfg.model.backbone} (weights: {backbone.weights}), strategy {plan.name}, "
        f"trains {per_phase[0]:,}{later} of {total:,} parameters, "
        + ("" if plan.name == "probe" else f"lr {lr_text(cfg)}, ")  # a probe is solved
        + f"bn {plan.bn}, "
        + (f"drop path {cfg.model.drop_path:g}, " if cfg.model.drop_path is not None else "")
        + f"input {backbone.preprocessing.input_size} px "
        f"(resized to {backbone.preprocessing.resize_size}), device {device}, precision "
        f"{ready.precision.name}{', compiled' if cfg.compile else ''}"
        + (
            "; heads " + ", ".join(f"{t} ({len(c)} classes)" for t, c in split.tasks.items())
            if split.multitask
            else ""
        )
    )

    if plan.bn == "adapt":  # before any feature is cached: the key includes the new stats
        adapted = adapt_backbone(cfg, backbone, split, device, cache, progress)
        echo(adapted.line())
    warm = None
    if plan.name in WARM_STRATEGIES and cfg.strategy.warm_head:
        if cache is None:
            echo("head: not warm-started (it fits on cached features; --no-cache is given)")
        else:
            warm = warm_start(cfg, model, backbone, split, device, gen, cache, objective,
                              progress)  # fmt: skip
            echo(warm.line())
    taps = model.taps if cfg.model.layers == "all" else None
    inputs = make_inputs(cfg, backbone, plan, split, device, gen, cache, progress, taps)
    echo(inputs.line())
    if cfg.grad_checkpointing:
        echo(checkpoint_activations(backbone.module, inputs.tail is not None))
    solved = plan.name == "probe" and inputs.tail is not None  # no steps (training.lbfgs)
    line = accumulation_line(cfg.optim.accumulate, cfg.optim.batch_size, solved)
    if line:
        echo(line)
    return Built(model, inputs, warm, taps, per_phase, total)


AUTO = "auto"  # --lr auto: the range test picks the base LR


def scale_lr(
    cfg: TrainConfig, split: DataSplit, echo: Callable[[str], None] = print
) -> TrainConfig:
    """``cfg`` with the data-scaled backbone LR filled in where the user gave none (the
    strategies that train the backbone; :mod:`headstart.finetune.scaling`). The saved
    ``config.yaml`` keeps ``lr: null``: the rule, not its value, so a repeat on other data
    scales again."""
    if cfg.strategy.lr is not None:
        return cfg
    echo(f"lr: {rule_line(len(split.train))}")
    return cfg.with_overrides({"strategy.lr": default_lr(cfg, split)})


def default_lr(cfg: TrainConfig, split: DataSplit) -> float:
    """The strategy's default base LR on ``split``: fixed, or scaled with its training images."""
    fixed = DEFAULTS[cfg.strategy.name].lr
    return fixed if fixed is not None else scaled_lr(len(split.train))


def lr_text(cfg: TrainConfig) -> str:
    """The base LR as the console shows it (``auto`` until the range test has run)."""
    lr = cfg.strategy.lr
    return lr if isinstance(lr, str) else f"{lr:.2g}"


def find_lr(
    cfg: TrainConfig,
    ready: Ready,
    built: Built,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    out: Path | None = None,
) -> RangeTest:
    """The range test for this run (``lr-find``, ``train --lr auto``); writes
    ``lr_find.png`` into ``out`` when given."""
    from headstart.plots import plot_lr_find

    weight_decay = cfg.optim.decay
    lr = cfg.strategy.lr
    default = float(lr) if isinstance(lr, (int, float)) else default_lr(cfg, ready.split)
    with built.model.reading_features(built.inputs.tail) if built.inputs.tail else nullcontext():
        test = range_test(built.model, ready.plan, built.inputs.train, weight_decay,
                          ready.device, ready.objective, default, cfg.seed, progress,
                          precision=ready.precision, batch_size=cfg.optim.batch_size,
                          accumulate=cfg.optim.accumulate)  # fmt: skip
    echo(test.line())
    for note in test.notes:
        echo(f"  note: {note}")
    if out is not None:
        plot_lr_find(test, out / "lr_find.png", f"{cfg.model.backbone} {ready.plan.name}")
    return test
