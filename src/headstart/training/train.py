"""``train(config)``: data -> backbone -> model -> plan -> loop -> run folder."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from headstart.backbones import Backbone
from headstart.cache import Cache, digest_of, file_digest, module_digest
from headstart.config import TrainConfig, load_config, save_config
from headstart.data import DataSplit
from headstart.errors import CheckpointError, ConfigError, Interrupted
from headstart.finetune import (
    Plan,
)
from headstart.finetune.scaling import rule_line
from headstart.model import Classifier
from headstart.plots import plot_penalty_path, plot_training_curves
from headstart.training.checkpoint import MANIFEST, read_manifest, save_checkpoint
from headstart.training.distributed import barrier, from_main, world
from headstart.training.history import EpochStats, FitResult
from headstart.training.inputs import Inputs
from headstart.training.loop import Checkpoints, fit
from headstart.training.objective import (
    Objective,
)
from headstart.training.regularise import fit_probe_head
from headstart.training.run_dir import (
    check_run_dir,
    find_resumable,
    prepare_run_dir,
    publish,
    resume_hint,
)
from headstart.training.setup import (
    AUTO,
    build_model,
    find_lr,
    load_data,
    make_objective,
    prepare_data,
    resolve_config,
    scale_lr,
)
from headstart.training.state import (
    STATE_DIR,
    LoopState,
    load_state,
    read_state_info,
    save_state,
)
from headstart.training.tensorboard import TB_DIR, TensorBoardLog, log_final
from headstart.training.verdict import below_probe


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    config: TrainConfig
    split: DataSplit
    fit: FitResult
    trainable_per_phase: list[int]
    total_params: int
    seconds: float = 0.0  # wall time of the call that finished it (kept runs: from the manifest)

    @property
    def trainable_params(self) -> int:
        """The most parameters any phase trains (the last phase, for growing plans)."""
        return max(self.trainable_per_phase)


def _manifest(
    cfg: TrainConfig,
    model: Classifier,
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
        "num_features": model.num_features,
        "layers": cfg.model.layers,
        "family": backbone.spec.family,
        "dropout": cfg.model.dropout,
        "tasks": split.tasks,
        "class_to_idx": {c: i for i, c in enumerate(split.classes)},
        "task_weights": {t: objective.task_weights.get(t, 1.0) for t in split.tasks},
        "class_weights": cfg.optim.class_weights,
        "monitor": objective.monitor,
        "ema": cfg.optim.ema,
        "mixing": {"mixup": cfg.optim.mixup, "cutmix": cfg.optim.cutmix},
        "preprocessing": backbone.preprocessing.to_dict(),
        "augment": cfg.data.augment,
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
            "val_recall": best.val_recall,
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


def _fingerprint(split: DataSplit, backbone: Backbone, cache: Cache | None) -> dict[str, Any]:
    """What a run's numbers depend on besides its config: the images (paths, labels and
    content, the keys of every cache entry) and the pretrained weights as loaded."""
    digest = cache.digest if cache is not None else file_digest
    images = [[str(s.path), s.target, digest(s.path)] for s in (*split.train, *split.val)]
    return {
        "data": digest_of([images, len(split.train)]),
        "weights": module_digest(backbone.module),
    }


def train(
    cfg: TrainConfig,
    *,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    split: DataSplit | None = None,
    plots: bool = True,
    resume: bool = False,
    extra: dict | None = None,
) -> TrainResult:
    """Train a classifier as ``cfg`` says and save the run folder; returns the result.
    ``extra`` joins the manifest (``train --strategy auto``: the recommendation).
    ``split`` replaces the one ``cfg`` describes (cross-validation passes each fold);
    ``plots=False`` skips ``curves.png`` (0.7 s a run, most of a warm fold's time).

    ``resume=True`` (``compare``/``cv --resume``, and :func:`resume_run`): an unfinished run
    meant for ``cfg.out`` continues from its saved state, else a finished one with this
    config is returned as it is, and only a missing one starts afresh.

    Under ``torchrun`` every process trains its shard (:mod:`headstart.training.distributed`)
    and only rank 0 prints, shows progress and writes."""
    started = time.perf_counter()
    cfg = resolve_config(cfg)
    final = Path(cfg.out)  # type: ignore[arg-type]
    w = world()
    if not w.main:
        echo, progress, plots = _quiet, False, False
    saved_dir = _resumable(final) if resume and not overwrite else None
    if saved_dir is None and resume and not overwrite and (final / MANIFEST).exists():
        return finished_result(final, cfg, split, echo)
    if saved_dir is None:
        check_run_dir(final, overwrite)  # before the data scan: refuse at once
    barrier()  # every process has looked before rank 0 creates anything
    ready = prepare_data(cfg, split, echo, progress)
    backbone, plan, cache, split, objective, device = (
        ready.backbone,
        ready.plan,
        ready.cache,
        ready.split,
        ready.objective,
        ready.device,
    )
    fingerprint = _fingerprint(split, backbone, cache)
    saved = None
    if saved_dir is not None:
        run_dir = saved_dir
        saved = load_state(run_dir)
        assert saved is not None
        _check_same(saved.fingerprint, fingerprint, run_dir, _saved_config(run_dir), cfg)
    elif w.main:
        run_dir = prepare_run_dir(final, overwrite, echo)
        save_config(cfg, run_dir / "config.yaml")
        split.save(run_dir / "split.json")
    else:
        run_dir = final  # never written by this process

    scaled = cfg.strategy.lr is None
    cfg = scale_lr(cfg, split, echo)
    built = build_model(cfg, ready, echo, progress)
    model, inputs, warm, taps = built.model, built.inputs, built.warm, built.taps
    per_phase, total = built.per_phase, built.total
    found = None
    if cfg.strategy.lr == AUTO:  # the range test, on what the run trains on; nothing moves
        # under torchrun: one test, at the global batch, on the main process; all train at its pick
        if w.main:
            found = find_lr(cfg, ready, built, echo, progress, run_dir if plots else None)
        cfg = cfg.with_overrides({"strategy.lr": from_main(found.pick if found else 0.0)})
    if w.active:
        echo(w.describe(cfg.optim.batch_size, plan.bn))
    metrics_path = run_dir / "metrics.jsonl"
    if saved is not None:  # the saved history, not lines written after the state was saved
        history = saved.info["history"]
        if w.main:
            metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))
        echo(
            f"resuming {run_dir}: {saved.info['epoch']} of {cfg.optim.epochs} epochs done"
            + (f", {saved.info['batch']} step(s) into the next" if saved.info["batch"] else "")
        )
        for h in history:
            echo(EpochStats.from_dict(h).line(cfg.optim.epochs))

    tb = None
    if cfg.log == "tensorboard" and w.main:
        done = saved.info["epoch"] if saved is not None else None
        tb = TensorBoardLog(run_dir, resume_from=None if done is None else done + 1)

    def on_epoch(stats: EpochStats, epochs: int = cfg.optim.epochs) -> None:
        if w.main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(stats.to_dict()) + "\n")
        if tb is not None:
            tb.epoch(stats)
        echo(stats.line(epochs) + (f"  (probe {warm.probe_val_acc:.4f})" if warm else ""))

    def save(st: LoopState, model: nn.Module, optimizer: Any, scaler: Any) -> None:
        if w.main:
            save_state(run_dir, st, model, optimizer, scaler, fingerprint)

    choice = None
    if plan.name == "probe" and inputs.tail is not None:  # cached features: seconds, no epochs
        if cfg.data.sampler == "balanced" and not objective.class_weights:
            echo(
                "note: --sampler balanced: the head is fitted on every image at once, with "
                "balanced class weights (the loss a balanced sampler draws in expectation)"
            )
            balanced = make_objective(
                cfg.with_overrides({"optim.class_weights": "balanced"}), split
            )
            objective = replace(objective, class_weights=balanced.class_weights)
        result, choice = fit_probe_head(
            model, taps, inputs.train.dataset, inputs.val, inputs.tail,  # type: ignore[arg-type]
            objective, device, cfg.seed,
            split.group_codes("train"),
        )  # fmt: skip
        echo(choice.line())
        on_epoch(result.history[0], 1)
    else:
        with model.reading_features(inputs.tail) if inputs.tail else nullcontext():
            try:
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
                    checkpoints=Checkpoints(save, saved),
                    precision=ready.precision,
                    compile=cfg.compile,
                    seed=cfg.seed,
                )
            except Interrupted as e:
                hint = f"{e}; saved in {run_dir}. Continue with: {resume_hint(final)}"
                raise Interrupted(hint) from None
            except Exception as e:  # out of memory or disk, or a bug: say what is kept
                if w.main and read_state_info(run_dir) is not None:
                    e.add_note(
                        f"The epochs finished so far are saved in {run_dir}: continue with "
                        f"`{resume_hint(final)}`."
                    )
                raise
            finally:
                if tb is not None:
                    tb.close()
    model.cpu()
    manifest = {
        **_manifest(cfg, model, backbone, split, plan, result, per_phase, total, inputs, objective),
        "weight_decay": None if choice else cfg.optim.weight_decay,
        "precision": ready.precision.name,
        "unfreeze_from": ready.unfreeze.to_dict() if ready.unfreeze else None,
        "distributed": w.to_dict(cfg.optim.batch_size) if w.active else None,
        "head_cv": {**choice.to_dict(), "objective": objective.to_dict()} if choice else None,
        "warm_head": warm.to_dict() if warm else None,
        "lr_find": found.to_dict() if found else None,
        "lr_rule": rule_line(len(split.train)) if scaled else None,
        **(extra or {}),
        "stages_read": taps.stages_used if taps is not None else None,
        "tensorboard": TB_DIR if tb is not None else None,
        "seconds": round(time.perf_counter() - started, 1),  # this call's, up to saving
    }
    if w.main:  # under torchrun, rank 0 writes; the others wait for it
        run_dir = _write_run(run_dir, final, model, manifest)
    barrier()
    title = f"{cfg.model.backbone} {plan.name}"
    if plots and choice is not None:  # solved: no epochs, the penalty's CV is the curve
        chosen = (choice.stages, choice.l2)
        plot_penalty_path(choice.scores, choice.losses, chosen, run_dir / "curves.png",
                          choice.folds, result.best.val_acc, title)  # fmt: skip
    elif plots:
        plot_training_curves(
            [h.to_dict() for h in result.history], run_dir / "curves.png", result.best_epoch,
            title, cfg.optim.keep,
        )  # fmt: skip
    best = result.best
    if tb is not None:
        tb.close()  # the multi-layer probe's one epoch
        log_final(run_dir, best, split.tasks, run_dir / "curves.png" if plots else None,
                  cfg.to_dict())  # fmt: skip
        echo(f"tensorboard: tensorboard --logdir {run_dir / TB_DIR}")
    ci = best.val_acc_ci
    interval = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f} on {best.val_n} images)" if ci else ""
    echo(
        f"{cfg.optim.keep} val_acc {best.val_acc:.4f}{interval} at epoch {result.best_epoch} "
        f"({result.stop_reason}); saved {run_dir}/"
    )
    echo(recall_line(best.val_recall, split.tasks))
    if warm is not None:
        lines = below_probe(plan.name, best.val_acc, warm.probe_val_acc, best.val_n,
                            cfg.strategy.lr, result.history[-1].train_acc,  # type: ignore[arg-type]
                            warm.train_acc, cfg.optim.mixes, len(split.train))  # fmt: skip
        for line in lines:
            echo(line)
    return TrainResult(run_dir, cfg, split, result, per_phase, total, manifest["seconds"])


def _write_run(run_dir: Path, final: Path, model: nn.Module, manifest: dict) -> Path:
    """Save the trained model and its manifest, then publish the run at ``final``; a full
    disk keeps the trained state and says how to save it without training again."""
    try:
        save_checkpoint(run_dir, model, manifest)
    except CheckpointError as e:
        if read_state_info(run_dir) is None:  # a probe fitted in seconds on cached features
            raise CheckpointError(
                f"{e} The features are cached: once there is room, the same command with "
                "--overwrite fits the head again in seconds."
            ) from None
        raise CheckpointError(
            f"{e} The trained state is kept in {run_dir / STATE_DIR}: once there is room, "
            f"`{resume_hint(final)}` saves the model without training again."
        ) from None
    return publish(run_dir, final)


def _quiet(line: str) -> None:
    """The echo of processes other than rank 0."""


def recall_line(
    recall: dict[str, list[float | None]], tasks: dict[str, list[str]], most: int = 12
) -> str:
    """Per-class recall at the best epoch, task by task, with the macro average: what the
    accuracy of an imbalanced set hides. A task of more than ``most`` classes shows its
    ``most`` lowest (the manifest and ``evaluate`` have them all)."""
    parts = []
    for task, values in recall.items():
        pairs = [(c, v) for c, v in zip(tasks[task], values) if v is not None]
        many = len(pairs) > most
        shown = sorted(pairs, key=lambda p: p[1])[:most] if many else pairs
        head = f"the {most} lowest of {len(pairs)}: " if many else ""
        macro = f" (macro {sum(v for _, v in pairs) / len(pairs):.3f})" if pairs else ""
        listed = ", ".join(f"{c} {v:.3f}" for c, v in shown)
        parts.append(("" if len(recall) == 1 else f"{task}: ") + head + listed + macro)
    return "recall per class: " + "; ".join(parts)


def resume_run(
    path: str | Path, *, echo: Callable[[str], None] = print, progress: bool = True
) -> TrainResult:
    """Continue the interrupted run meant for ``path`` (``headstart train --resume``): its
    own config, data and saved state; on a CPU the result is bit-identical to a run that
    was never stopped."""
    return train(resume_config(path), echo=echo, progress=progress, resume=True)


def resume_config(path: str | Path) -> TrainConfig:
    """The config of the interrupted run meant for ``path``."""
    return _saved_config(find_resumable(path))


def _resumable(final: Path) -> Path | None:
    try:
        return find_resumable(final)
    except CheckpointError:
        return None


def _saved_config(run_dir: Path) -> TrainConfig:
    try:
        return load_config(run_dir / "config.yaml")
    except ConfigError as e:
        raise CheckpointError(
            f"CheckpointError: {run_dir}'s config.yaml cannot be read ({e}). Start the run "
            "again with --overwrite."
        ) from None


def _check_same(
    saved: dict[str, Any], now: dict[str, Any], run_dir: Path, saved_cfg: TrainConfig,
    cfg: TrainConfig,
) -> None:  # fmt: skip
    """A run resumes only on the config, data and weights it started with."""
    problems = [f"its {k} changed" for k in ("data", "weights") if saved.get(k) != now[k]]
    if resolve_config(saved_cfg).to_dict() != cfg.to_dict():
        problems.append("the options differ from its config.yaml")
    if problems:
        raise ConfigError(
            f"ConfigError: cannot resume {run_dir}: {' and '.join(problems)} since it started, "
            "so continuing would mix two runs. Restore them, or start again with --overwrite."
        )


def finished_result(
    run_dir: Path, cfg: TrainConfig, split: DataSplit | None, echo: Callable[[str], None]
) -> TrainResult:
    """The result of a run that already finished with ``cfg`` (``compare``/``cv --resume``
    keep finished members), read from its manifest and metrics."""
    saved_cfg = resolve_config(_saved_config(run_dir))
    if saved_cfg.to_dict() != cfg.to_dict():
        raise ConfigError(
            f"ConfigError: {run_dir} finished with other options than these; pass --overwrite "
            "to train it again with them."
        )
    manifest = read_manifest(run_dir)
    history = [
        EpochStats.from_dict(h)
        for h in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    ]
    cache = Cache(cfg.data.cache_dir) if cfg.data.cache else None
    fit_result = FitResult(history, int(manifest["best_epoch"]), str(manifest["stop_reason"]))
    echo(f"kept {run_dir}: finished earlier, best val_acc {fit_result.best.val_acc:.4f}")
    ran = cfg.with_overrides({"strategy.lr": manifest["strategy"]["lr"]})  # scaled, or found
    return TrainResult(
        run_dir, ran, split or load_data(cfg, cache), fit_result,
        list(manifest["trainable_params_per_phase"]), int(manifest["total_params"]),
        float(manifest.get("seconds") or 0.0),
    )  # fmt: skip
