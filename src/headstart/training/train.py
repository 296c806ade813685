"""``train(config)``: data -> backbone -> model -> plan -> loop -> run folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from headstart.backbones import Backbone, count_parameters, create_backbone
from headstart.backbones.stages import DEFAULT_UNFREEZE_FROM
from headstart.cache import Cache
from headstart.config import TrainConfig, save_config
from headstart.data import DataSplit, load_split, load_table_split
from headstart.errors import ConfigError
from headstart.finetune import (
    BN_POLICIES,
    DEFAULTS,
    STRATEGIES,
    Plan,
    StrategyOptions,
    make_plan,
    trainable_per_phase,
)
from headstart.model import Classifier
from headstart.plots import plot_training_curves
from headstart.training.checkpoint import MANIFEST, save_checkpoint
from headstart.training.device import resolve_device, seed_everything
from headstart.training.inputs import Inputs, make_inputs
from headstart.training.loop import EpochStats, FitResult, fit
from headstart.training.objective import (
    Objective,
    balanced_class_weights,
    check_monitor,
)


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    config: TrainConfig
    split: DataSplit
    fit: FitResult
    trainable_per_phase: list[int]
    total_params: int

    @property
    def trainable_params(self) -> int:
        """The most parameters any phase trains (the last phase, for growing plans)."""
        return max(self.trainable_per_phase)


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill strategy defaults (LR, weights, BN policy) and validate options once, here."""
    s = cfg.strategy
    if s.name not in STRATEGIES:
        raise ConfigError(
            f"ConfigError: --strategy {s.name!r} is not known; "
            f"expected one of {', '.join(STRATEGIES)}."
        )
    if s.bn is not None and s.bn not in BN_POLICIES:
        raise ConfigError(f"ConfigError: --bn {s.bn!r}; expected one of {', '.join(BN_POLICIES)}.")
    if cfg.optim.epochs < 1 or cfg.optim.batch_size < 1:
        raise ConfigError("ConfigError: --epochs and --batch-size must be at least 1.")
    if cfg.data.cached_views < 0:
        raise ConfigError("ConfigError: --cached-views must be 0 or more.")
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
    out = cfg.out or f"runs/{s.name}-{datetime.now():%Y%m%d-%H%M%S}"
    return cfg.with_overrides(
        {
            "strategy.lr": s.lr if s.lr is not None else d.lr,
            "strategy.bn": s.bn or d.bn,
            "strategy.head_lr_mult": s.head_lr_mult
            if s.head_lr_mult is not None
            else d.head_lr_mult,
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
    """The strategy plan of ``cfg`` over the backbone's stages."""
    return make_plan(
        strategy_options(cfg),
        list(backbone.stages()),
        cfg.optim.epochs,
        DEFAULT_UNFREEZE_FROM.get(backbone.spec.family),
    )


def load_data(cfg: TrainConfig, cache: Cache | None = None) -> DataSplit:
    """The split ``cfg`` describes: a labels CSV, or a folder (train/val, or split)."""
    if cfg.data.labels:
        return load_table_split(
            cfg.data.labels, cfg.data.images_root, cfg.data.tasks, cfg.data.val_fraction,
            cfg.seed, cache,
        )  # fmt: skip
    return load_split(cfg.data.root, cfg.data.val_fraction, cfg.seed, cache)


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
    elif cfg.optim.class_weights is not None:
        raise ConfigError(
            f"ConfigError: --class-weights {cfg.optim.class_weights!r}; expected balanced."
        )
    return Objective(weights, class_weights, cfg.optim.label_smoothing, cfg.optim.monitor)


def prepare_run_dir(out: str | Path, overwrite: bool) -> Path:
    """Create the run folder; refuse to replace a finished run unless ``overwrite``."""
    run_dir = Path(out)
    if (run_dir / MANIFEST).exists() and not overwrite:
        raise ConfigError(
            f"ConfigError: {run_dir} already holds a finished run. Choose another --out, "
            "or pass --overwrite to replace it."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    # The manifest marks a finished run: drop the old one first, so a run that fails midway
    # never leaves an old checkpoint posing as the result of the new config.
    (run_dir / MANIFEST).unlink(missing_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return run_dir


def _manifest(
    cfg: TrainConfig,
    backbone: Backbone,
    split: DataSplit,
    plan: Plan,
    result: FitResult,
    per_phase: list[int],
    total: int,
    inputs: Inputs,
    objective: Objective,
) -> dict:
    """Everything a checkpoint needs to describe itself (see ``training.checkpoint``)."""
    best = result.best
    return {
        "backbone": cfg.model.backbone,
        "weights": backbone.weights,
        "num_features": backbone.num_features,
        "family": backbone.spec.family,
        "dropout": cfg.model.dropout,
        "tasks": split.tasks,
        "class_to_idx": {c: i for i, c in enumerate(split.classes)},
        "task_weights": {t: objective.task_weights.get(t, 1.0) for t in split.tasks},
        "class_weights": cfg.optim.class_weights,
        "monitor": objective.monitor,
        "preprocessing": backbone.preprocessing.to_dict(),
        "strategy": {
            "name": cfg.strategy.name,
            "lr": cfg.strategy.lr,
            "bn": cfg.strategy.bn,
            "head_lr_mult": cfg.strategy.head_lr_mult,
            "phases": [
                {"start_epoch": p.start_epoch + 1, "lr_mult": p.lr_mult} for p in plan.phases
            ],
        },
        "best_epoch": result.best_epoch,
        "metrics": {
            "val_acc": best.val_acc,
            "val_acc_ci": list(best.val_acc_ci) if best.val_acc_ci else None,
            "val_acc_ci_method": "Wilson score interval, 95%",
            "val_n": best.val_n,
            "val_acc_per_task": best.val_acc_per_task,
            "val_loss": best.val_loss,
            "train_acc": best.train_acc,
            "train_loss": best.train_loss,
        },
        "stop_reason": result.stop_reason,
        "seed": cfg.seed,
        "data": {
            "root": str(Path(split.root).resolve()),
            "labels": str(Path(cfg.data.labels).resolve()) if cfg.data.labels else None,
            "layout": split.layout,
            "train": len(split.train),
            "val": len(split.val),
            "skipped": len(split.skipped),
        },
        "inputs": inputs.info,
        "trainable_params": max(per_phase),
        "trainable_params_per_phase": per_phase,
        "total_params": total,
    }


def train(
    cfg: TrainConfig,
    *,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    split: DataSplit | None = None,
    plots: bool = True,
) -> TrainResult:
    """Train a classifier as ``cfg`` says and save the run folder; returns the result.
    ``split`` replaces the one ``cfg`` describes (cross-validation passes each fold);
    ``plots=False`` skips ``curves.png`` (0.7 s a run, most of a warm fold's time)."""
    cfg = resolve_config(cfg)
    gen = seed_everything(cfg.seed)
    backbone = create_backbone(cfg.model.backbone, cfg.model.weights)  # fails fast on a bad name
    plan = plan_for(cfg, backbone)  # and on bad strategy options
    cache = Cache(cfg.data.cache_dir) if cfg.data.cache else None
    split = split or load_data(cfg, cache)
    objective = make_objective(cfg, split)
    echo(split.summary())
    device = resolve_device(cfg.device)
    run_dir = prepare_run_dir(cfg.out, overwrite)  # type: ignore[arg-type]
    save_config(cfg, run_dir / "config.yaml")
    split.save(run_dir / "split.json")

    model = Classifier(
        backbone.module,
        backbone.num_features,
        {task: len(classes) for task, classes in split.tasks.items()},
        cfg.model.dropout,
        backbone.spec.family,
    )
    per_phase = trainable_per_phase(model, plan)
    total = count_parameters(model)
    later = f" (then {', '.join(f'{n:,}' for n in per_phase[1:])})" if len(per_phase) > 1 else ""
    echo(
        f"model: {cfg.model.backbone} (weights: {backbone.weights}), strategy {plan.name}, "
        f"trains {per_phase[0]:,}{later} of {total:,} parameters, lr {cfg.strategy.lr:g}, "
        f"bn {plan.bn}, device {device}"
        + (
            "; heads " + ", ".join(f"{t} ({len(c)} classes)" for t, c in split.tasks.items())
            if split.multitask
            else ""
        )
    )

    inputs = make_inputs(cfg, backbone, plan, split, device, gen, cache, progress)
    echo(inputs.line())
    metrics_path = run_dir / "metrics.jsonl"

    def on_epoch(stats: EpochStats) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps(stats.to_dict()) + "\n")
        echo(stats.line(cfg.optim.epochs))

    with model.reading_features(inputs.tail) if inputs.tail else nullcontext():
        result = fit(
            model,
            plan,
            inputs.train,
            inputs.val,
            cfg.optim,
            cfg.strategy.lr,  # type: ignore[arg-type]
            device,
            on_epoch=on_epoch,
            progress=progress,
            objective=objective,
        )
    model.cpu()
    save_checkpoint(
        run_dir,
        model,
        _manifest(cfg, backbone, split, plan, result, per_phase, total, inputs, objective),
    )
    if plots:
        plot_training_curves(
            [h.to_dict() for h in result.history],
            run_dir / "curves.png",
            result.best_epoch,
            f"{cfg.model.backbone} {plan.name}",
        )
    best = result.best
    ci = best.val_acc_ci
    interval = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f} on {best.val_n} images)" if ci else ""
    echo(
        f"best val_acc {best.val_acc:.4f}{interval} at epoch {result.best_epoch} "
        f"({result.stop_reason}); saved {run_dir}/"
    )
    return TrainResult(run_dir, cfg, split, result, per_phase, total)
