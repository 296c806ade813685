"""The one training loop: it executes a strategy plan, whatever the strategy.

AdamW over trainable parameters only, per-step warmup + cosine schedule, label smoothing,
gradient clipping, early stopping on validation accuracy, and the best epoch's weights
restored at the end.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from headstart.config import OptimConfig
from headstart.errors import Interrupted
from headstart.finetune import (
    Phase,
    Plan,
    apply_bn_policy,
    apply_phase,
    param_groups,
    stage_lrs,
    stage_params,
)
from headstart.model import DEFAULT_TASK
from headstart.stats import wilson_interval
from headstart.training.accumulation import Accumulation
from headstart.training.averaging import WeightAverage, ema_decay
from headstart.training.device import images_to, to_device
from headstart.training.distributed import (
    ShardSampler,
    all_sum,
    any_process,
    gather_rows,
    sync_batchnorm,
    world,
    wrap,
)
from headstart.training.early_stopping import EarlyStopping
from headstart.training.fold import folded_batchnorm
from headstart.training.history import EpochStats, FitResult
from headstart.training.mixing import Mixing
from headstart.training.objective import Objective
from headstart.training.precision import Precision, resolve_precision, serving
from headstart.training.schedule import set_group_lrs
from headstart.training.state import LoopState, SavedState


def _as_targets(targets: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return targets if isinstance(targets, dict) else {DEFAULT_TASK: targets}


@torch.inference_mode()
def collect_logits(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Run ``model`` in eval mode over ``loader``, in the precision predictions are served in
    (:func:`~headstart.training.precision.serving`); concatenated logits and targets per
    task."""
    precision = serving(device)
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {}
    targets: dict[str, list[torch.Tensor]] = {}
    bar = tqdm(loader, desc="eval", leave=False, disable=not progress or None)
    with contextlib.ExitStack() as stack:
        folded = False
        for images, target in bar:
            x = images_to(images, device)
            if not folded:  # as evaluate, predict and serve run it, checked on the real input
                stack.enter_context(folded_batchnorm(model, x[:2]))  # (a tail reads maps)
                folded = True
            with precision.autocast():
                out = model(x)
            for task, t in _as_targets(target).items():
                logits.setdefault(task, []).append(out[task].float().cpu())
                targets.setdefault(task, []).append(t)
    out = {k: torch.cat(v) for k, v in logits.items()}
    truth = {k: torch.cat(v) for k, v in targets.items()}
    if isinstance(loader.sampler, ShardSampler):  # torchrun: every shard, each image once
        indices = loader.sampler.indices
        out, truth = gather_rows(out, indices), gather_rows(truth, indices)
    return out, truth


def _accuracy(counts: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy per task over its labelled samples."""
    out = {}
    for task, c in counts.items():
        correct, labelled = c.tolist()
        out[task] = correct / labelled if labelled else 0.0
    return out


def _changing_state(model: nn.Module, plan: Plan) -> list[str]:
    """State-dict names that training can change: parameters of every stage that trains in
    some phase, and all buffers (BatchNorm statistics). Snapshotting only these keeps a
    probe's best-epoch copy to the head instead of the whole backbone."""
    stages = {s for p in plan.phases for s, m in p.lr_mult.items() if m > 0}
    names = [n for s, params in stage_params(model).items() if s in stages for n, _ in params]
    return names + [n for n, _ in model.named_buffers()]


def _snapshot(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {n: state[n].detach().clone() for n in names}


def enter_phase(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    phase: Phase,
    lr: float,
    weight_decay: float,
    step: int,
) -> torch.optim.Optimizer:
    """Switch to ``phase``: set trainable stages, re-base the LRs of groups already in the
    optimizer (their AdamW state is kept), and add groups for newly trainable stages,
    which start their own short warmup at ``step``."""
    apply_phase(model, phase)
    if optimizer is None:
        return torch.optim.AdamW(param_groups(model, phase, lr, weight_decay))
    present = {(g["stage"], g["decay"]) for g in optimizer.param_groups}
    for g in optimizer.param_groups:
        g["base_lr"] = lr * phase.lr_mult.get(g["stage"], 0.0)
    for g in param_groups(model, phase, lr, weight_decay, skip=present):
        optimizer.add_param_group({**g, "start_step": step})
    return optimizer


@dataclass
class Checkpoints:
    """How :func:`fit` saves and resumes: ``save(state, model, optimizer, scaler)`` after
    every epoch (and when interrupted), and ``saved``, a state to continue from."""

    save: Callable[[LoopState, nn.Module, torch.optim.Optimizer, Any], None]
    saved: SavedState | None = None


def _phase_index(plan: Plan, epoch: int) -> int:
    return plan.phases.index(plan.phase_at(epoch))


def fit(
    model: nn.Module,
    plan: Plan,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optim: OptimConfig,
    lr: float,
    device: torch.device,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool = True,
    objective: Objective | None = None,
    checkpoints: Checkpoints | None = None,
    precision: Precision | None = None,
    compile: bool = False,
    seed: int = 0,
) -> FitResult:
    """Train ``model`` by ``plan``; restore and return the best epoch by validation accuracy
    (``objective.monitor``: the mean task accuracy, or one task's), or with ``optim.keep``
    ``last`` the last epoch, with no early stopping (no choice made on the validation images).

    With ``checkpoints``, the loop's whole state is saved after every epoch and when Ctrl-C
    stops it after the current step (then :class:`Interrupted` is raised), and a saved
    state is resumed first: on a CPU the final weights are bit-identical to a run that was
    never stopped (the data order and augmentations follow ``train_loader.generator``).

    ``precision`` (default ``auto`` on ``device``): autocast of the training forward pass and
    loss, with loss scaling in fp16; validation runs in float32, the precision the model is
    served in (:mod:`headstart.training.precision`). ``compile``: the training
    forward pass runs through ``torch.compile`` (the same parameters; validation stays eager,
    so the compiled graph sees one mode). ``optim.ema``: an exponential moving average of
    the weights over about that many epochs is validated and kept instead of the last step's
    (:mod:`headstart.training.averaging`). ``optim.mixup``/``optim.cutmix``: batches are
    mixed (:mod:`headstart.training.mixing`; ``seed`` with the batch's number seeds the
    draws), and the training accuracy is counted against each sample's larger share of
    label. ``optim.accumulate``: each optimizer step sums the gradients of that many batches
    (:mod:`headstart.training.accumulation`); a Ctrl-C stops at the end of a step."""
    objective = objective or Objective(smoothing=optim.label_smoothing)
    precision = precision or resolve_precision("auto", device)
    to_device(model, device)
    scaler = precision.scaler()
    accumulation = Accumulation(
        optim.accumulate,
        len(train_loader),
        train_loader.batch_size or 1,
        len(train_loader.sampler),  # type: ignore[arg-type]  # this process's images
    )
    steps_per_epoch = accumulation.steps
    total = optim.epochs * steps_per_epoch
    warmup = round(optim.warmup_epochs * steps_per_epoch)
    group_warmup = max(1, steps_per_epoch // 2)
    changing = _changing_state(model, plan)
    patience = optim.patience if optim.keep == "best" else None  # stopping early is a choice too
    st = LoopState(stopper=EarlyStopping(patience), best_state=_snapshot(model, changing))
    st.reason = f"completed {optim.epochs} epoch{'s' if optim.epochs != 1 else ''}"
    optimizer: torch.optim.Optimizer | None = None
    generator = train_loader.generator
    saved = checkpoints.saved if checkpoints is not None else None
    if saved is not None:
        # Re-enter every phase the saved run had entered, at the step it entered it, so the
        # optimizer has the same groups in the same order; then load the saved values.
        for phase in plan.phases[: saved.phase + 1]:
            optimizer = enter_phase(
                model, optimizer, phase, lr, optim.decay,
                phase.start_epoch * steps_per_epoch,
            )  # fmt: skip
        st = saved.restore(model, optimizer, scaler, changing, patience)
    if optim.ema:
        average = WeightAverage(model, changing, ema_decay(optim.ema, steps_per_epoch))
        st.average = saved.restore_average(average) if saved is not None else average
    mixing = Mixing(optim.mixup, optim.cutmix, seed)
    n_train = len(train_loader.dataset)  # type: ignore[arg-type]
    stop = _StopOnInterrupt()
    forward, wrapped, wrapped_phase = model, model, -1
    sync_batchnorm(model, plan.bn)

    with stop, precision.training(model):
        for epoch in range(st.epoch, optim.epochs):
            if st.done:
                break
            if _phase_index(plan, epoch) != st.phase:
                st.phase = _phase_index(plan, epoch)
                optimizer = enter_phase(
                    model, optimizer, plan.phases[st.phase], lr, optim.decay, st.step
                )
            assert optimizer is not None
            trainable = [p for g in optimizer.param_groups for p in g["params"]]
            if wrapped_phase != st.phase:  # DDP syncs what trains when it is built: re-wrap
                wrapped, wrapped_phase = wrap(model, device), st.phase
                forward = torch.compile(wrapped) if compile else wrapped
            if generator is not None:
                if st.loader_rng is None:
                    st.loader_rng = generator.get_state()
                generator.set_state(st.loader_rng)  # this epoch's order, from its start
            skip = st.batch
            if skip:
                _skip_batches(train_loader, skip)
            else:
                st.loss_sum, st.seen, st.counts = torch.zeros((), device=device), 0, {}
                st.seconds = 0.0
            start = time.perf_counter()
            model.train()
            apply_bn_policy(model, plan.bn)
            bar = tqdm(
                total=n_train,
                initial=min(n_train, skip * (train_loader.batch_size or 1)),
                desc=f"epoch {epoch + 1}/{optim.epochs}",
                unit="img",
                leave=False,
                disable=not progress or None,
            )
            for images, target in train_loader:
                images = images_to(images, device)
                targets = {
                    k: v.to(device, non_blocking=True) for k, v in _as_targets(target).items()
                }
                n = images.shape[0]
                draw = epoch * accumulation.batches + st.batch  # the batch's own mixing seed
                mixed = mixing(images, draw) if mixing.active else None
                if st.batch % accumulation.every == 0:
                    optimizer.zero_grad(set_to_none=True)
                with accumulation.syncing(wrapped, st.batch):
                    with precision.autocast():
                        out = forward(images if mixed is None else mixed.inputs)
                        if mixed is None:
                            loss = objective.loss(out, targets)
                        else:
                            loss = mixed.loss(objective.loss, out, targets)
                            targets = mixed.dominant(targets)
                    share = accumulation.share(st.batch, n)
                    scaler.scale(loss * share).backward()  # x 1.0 without accumulation: exact
                for task, c in objective.counts(out, targets).items():
                    st.counts[task] = st.counts[task] + c if task in st.counts else c
                stepped = accumulation.ends_step(st.batch)
                if stepped:
                    if optim.grad_clip:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(trainable, optim.grad_clip)
                    set_group_lrs(
                        optimizer, st.step, total, warmup, optim.min_lr_ratio, group_warmup
                    )
                    scaler.step(optimizer)
                    scaler.update()
                    if st.average is not None:
                        st.average.update(model)
                    st.step += 1
                st.batch += 1
                st.loss_sum = st.loss_sum + loss.detach() * n  # on the device: no sync per batch
                st.seen += n
                bar.update(n)
                if stepped and any_process(stop.requested) and st.batch < accumulation.batches:
                    bar.close()
                    st.seconds += time.perf_counter() - start
                    if checkpoints is not None:
                        checkpoints.save(st, model, optimizer, scaler)
                    raise Interrupted(
                        f"interrupted after batch {st.batch} of epoch {epoch + 1}/{optim.epochs}"
                    )
            bar.close()
            train_seconds = st.seconds + time.perf_counter() - start
            if world().active:  # the epoch's training figures over every process's shard
                st.loss_sum, seen = all_sum(st.loss_sum), all_sum(torch.tensor(st.seen))
                st.seen = int(seen)
                st.counts = {t: all_sum(c) for t, c in st.counts.items()}

            # With --ema the average is what is validated, kept as the best and shipped.
            with st.average.applied(model) if st.average is not None else nullcontext():
                stats = validation_stats(
                    model, val_loader, device, objective, epoch + 1,
                    float(st.loss_sum) / max(st.seen, 1),
                    float(np.mean(list(_accuracy(st.counts).values()))),
                )  # fmt: skip
                decision = st.stopper.update(stats.val_acc, epoch, stats.val_loss)
                if decision.improved or optim.keep == "last":
                    st.best_state = _snapshot(model, changing)
            stats = replace(
                stats,
                lr=max(g["lr"] for g in optimizer.param_groups),
                lrs=stage_lrs(optimizer),
                seconds=st.seconds + time.perf_counter() - start,
                train_seconds=train_seconds,
            )
            st.history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            if decision.should_stop and epoch + 1 < optim.epochs:
                st.reason = f"early stop: {decision.reason}"
                st.done = True
            st.epoch, st.batch = epoch + 1, 0
            st.loader_rng = generator.get_state() if generator is not None else None
            st.done = st.done or st.epoch == optim.epochs
            if checkpoints is not None:
                checkpoints.save(st, model, optimizer, scaler)
            if any_process(stop.requested) and not st.done:
                raise Interrupted(f"interrupted after epoch {epoch + 1}/{optim.epochs}")

    model.load_state_dict(st.best_state, strict=False)
    kept = len(st.history) if optim.keep == "last" else st.stopper.best_epoch + 1
    return FitResult(st.history, kept, st.reason)


def validation_stats(
    model: nn.Module,
    val_loader: DataLoader,
    device: torch.device,
    objective: Objective,
    epoch: int,
    train_loss: float,
    train_acc: float,
) -> EpochStats:
    """An epoch's figures: the given training figures and a pass over the validation
    images (loss without class weights or smoothing, accuracy with its Wilson interval when
    it is one task's, recall per class); timing and LR are the caller's to fill in."""
    plain = replace(objective, class_weights={}, smoothing=0.0)
    logits, targets = collect_logits(model, val_loader, device)
    val_counts = objective.counts(logits, targets)
    confusion = objective.confusion(logits, targets)
    val_acc = _accuracy(val_counts)
    one = objective.monitor if objective.monitor in val_counts else None
    if one is None and len(val_counts) == 1:
        one = next(iter(val_counts))
    return EpochStats(
        epoch=epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=float(plain.loss(logits, targets)),
        val_acc=objective.select(val_acc),
        lr=0.0,
        seconds=0.0,
        val_acc_per_task=val_acc,
        val_acc_ci=wilson_interval(*val_counts[one].tolist()) if one else None,
        val_n=int(val_counts[one][1]) if one else len(next(iter(targets.values()))),
        val_recall=objective.recall(confusion),
        val_confusion=confusion,
    )


def _skip_batches(loader: DataLoader, batches: int) -> None:
    """Make ``loader``'s next pass start after ``batches`` batches of the same order (its
    sampler must be a :class:`~headstart.training.order.SeededOrder`)."""
    sampler = loader.sampler
    if not hasattr(sampler, "skip"):
        raise RuntimeError("resuming mid-epoch needs the training loader's SeededOrder sampler")
    sampler.skip = batches * (loader.batch_size or 1)  # type: ignore[attr-defined]


class _StopOnInterrupt:
    """While active, Ctrl-C (SIGINT) sets ``requested`` instead of raising at once, so the
    loop stops at the end of the current step and saves; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

    def __enter__(self) -> _StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
