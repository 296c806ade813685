"""The one training loop: it executes a strategy plan, whatever the strategy.

AdamW over trainable parameters only, per-step warmup + cosine schedule, label smoothing,
gradient clipping, early stopping on validation accuracy, and the best epoch's weights
restored at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from headstart.config import OptimConfig
from headstart.finetune import (
    Phase,
    Plan,
    apply_bn_policy,
    apply_phase,
    param_groups,
    stage_params,
)
from headstart.model import DEFAULT_TASK
from headstart.stats import wilson_interval
from headstart.training.device import images_to, to_device
from headstart.training.early_stopping import EarlyStopping
from headstart.training.objective import Objective
from headstart.training.schedule import set_group_lrs


@dataclass(frozen=True)
class EpochStats:
    """One epoch's figures, as written to ``metrics.jsonl``."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    train_seconds: float = 0.0  # the training part of ``seconds`` (the rest is validation)
    val_acc_per_task: dict[str, float] = field(default_factory=dict)  # val_acc selects on it
    val_acc_ci: tuple[float, float] | None = None  # 95% Wilson interval when val_acc is one task's
    val_n: int = 0  # validation images labelled for the task(s) val_acc is on

    def to_dict(self) -> dict[str, float]:
        """JSON-ready dict."""
        return asdict(self)

    def line(self, epochs: int) -> str:
        """The one-line summary printed after each epoch."""
        tasks = ""
        if len(self.val_acc_per_task) > 1:
            tasks = " (" + ", ".join(f"{t} {a:.4f}" for t, a in self.val_acc_per_task.items()) + ")"
        ci = f" [{self.val_acc_ci[0]:.3f}, {self.val_acc_ci[1]:.3f}]" if self.val_acc_ci else ""
        return (
            f"epoch {self.epoch:>2}/{epochs}  train_loss {self.train_loss:.4f}  "
            f"train_acc {self.train_acc:.4f}  val_loss {self.val_loss:.4f}  "
            f"val_acc {self.val_acc:.4f}{ci}{tasks}  lr {self.lr:.2e}  {self.seconds:.1f}s"
        )


@dataclass
class FitResult:
    """History, the best epoch (1-based) and why training stopped."""

    history: list[EpochStats]
    best_epoch: int
    stop_reason: str

    @property
    def best(self) -> EpochStats:
        """Stats of the restored epoch."""
        return self.history[self.best_epoch - 1]


def _as_targets(targets: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return targets if isinstance(targets, dict) else {DEFAULT_TASK: targets}


@torch.inference_mode()
def forward_views(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits per task. A batch of shape (N, V, C, H, W) holds V views of each image
    (test-time augmentation): their softmax probabilities are averaged and returned as
    log-probabilities, which are logits of exactly that average."""
    if images.ndim != 5:  # images (N, C, H, W), or cached features of any shape
        return model(images)
    n, v = images.shape[:2]
    out = model(images.flatten(0, 1))
    return {
        task: t.float().view(n, v, -1).log_softmax(-1).logsumexp(1) - math.log(v)
        for task, t in out.items()
    }


def collect_logits(
    model: nn.Module, loader: DataLoader, device: torch.device, progress: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Run ``model`` in eval mode over ``loader``; concatenated logits and targets per task."""
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {}
    targets: dict[str, list[torch.Tensor]] = {}
    for images, target in tqdm(loader, desc="eval", leave=False, disable=not progress or None):
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            out = forward_views(model, images_to(images, device))
        for task, t in _as_targets(target).items():
            logits.setdefault(task, []).append(out[task].float().cpu())
            targets.setdefault(task, []).append(t)
    return (
        {k: torch.cat(v) for k, v in logits.items()},
        {k: torch.cat(v) for k, v in targets.items()},
    )


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
) -> FitResult:
    """Train ``model`` by ``plan``; restore and return the best epoch by validation accuracy
    (``objective.monitor``: the mean task accuracy, or one task's)."""
    objective = objective or Objective(smoothing=optim.label_smoothing)
    plain = replace(objective, class_weights={}, smoothing=0.0)  # validation loss
    to_device(model, device)
    amp = device.type == "cuda"  # float16 autocast + loss scaling on GPUs; fp32 elsewhere
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    steps_per_epoch = len(train_loader)
    total = optim.epochs * steps_per_epoch
    warmup = round(optim.warmup_epochs * steps_per_epoch)
    group_warmup = max(1, steps_per_epoch // 2)
    optimizer: torch.optim.Optimizer | None = None
    phase: Phase | None = None
    step = 0
    stopper = EarlyStopping(optim.patience)
    history: list[EpochStats] = []
    changing = _changing_state(model, plan)
    best_state = _snapshot(model, changing)
    reason = f"completed {optim.epochs} epochs"
    n_train = len(train_loader.dataset)  # type: ignore[arg-type]

    for epoch in range(optim.epochs):
        if plan.phase_at(epoch) is not phase:
            phase = plan.phase_at(epoch)
            optimizer = enter_phase(model, optimizer, phase, lr, optim.weight_decay, step)
            trainable = [p for g in optimizer.param_groups for p in g["params"]]
        assert optimizer is not None
        start = time.perf_counter()
        model.train()
        apply_bn_policy(model, plan.bn)
        loss_sum, seen = torch.zeros((), device=device), 0
        counts: dict[str, torch.Tensor] = {}
        bar = tqdm(
            total=n_train,
            desc=f"epoch {epoch + 1}/{optim.epochs}",
            unit="img",
            leave=False,
            disable=not progress or None,
        )
        for images, target in train_loader:
            images = images_to(images, device)
            targets = {k: v.to(device, non_blocking=True) for k, v in _as_targets(target).items()}
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                out = model(images)
                loss = objective.loss(out, targets)
            for task, c in objective.counts(out, targets).items():
                counts[task] = counts[task] + c if task in counts else c
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if optim.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(trainable, optim.grad_clip)
            set_group_lrs(optimizer, step, total, warmup, optim.min_lr_ratio, group_warmup)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            n = images.shape[0]
            loss_sum += loss.detach() * n  # stays on the device: no sync per batch
            seen += n
            bar.update(n)
        bar.close()
        train_seconds = time.perf_counter() - start

        logits, targets = collect_logits(model, val_loader, device)
        val_loss = plain.loss(logits, targets)
        val_counts = objective.counts(logits, targets)
        val_acc = _accuracy(val_counts)
        one = objective.monitor if objective.monitor in val_counts else None
        if one is None and len(val_counts) == 1:
            one = next(iter(val_counts))
        ci = wilson_interval(*val_counts[one].tolist()) if one else None
        stats = EpochStats(
            epoch=epoch + 1,
            train_loss=float(loss_sum) / max(seen, 1),
            train_acc=float(np.mean(list(_accuracy(counts).values()))),
            val_loss=float(val_loss),
            val_acc=objective.select(val_acc),
            lr=max(g["lr"] for g in optimizer.param_groups),
            seconds=time.perf_counter() - start,
            train_seconds=train_seconds,
            val_acc_per_task=val_acc,
            val_acc_ci=ci,
            val_n=int(val_counts[one][1]) if one else len(next(iter(targets.values()))),
        )
        history.append(stats)
        decision = stopper.update(stats.val_acc, epoch, stats.val_loss)
        if decision.improved:
            best_state = _snapshot(model, changing)
        if on_epoch is not None:
            on_epoch(stats)
        if decision.should_stop and epoch + 1 < optim.epochs:
            reason = f"early stop: {decision.reason}"
            break

    model.load_state_dict(best_state, strict=False)
    return FitResult(history, stopper.best_epoch + 1, reason)
