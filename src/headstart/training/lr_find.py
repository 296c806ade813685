"""The learning-rate range test (Smith, WACV 2017; fastai's ``lr_find``).

Train for at most one epoch (at least 8 steps) while the base learning rate grows
exponentially from 1/100 of the strategy's default to 10,000 times it, and watch the loss:
it stays flat (or falls), then explodes. The test runs over the
strategy's real parameter groups with their discriminative multipliers held (the head at
its multiple of the backbone), on the same inputs the run trains on (the cached frozen
prefix where the strategy has one), from the warm-started head when there is one, and puts
the model's weights, its trainable set and every random number generator back afterwards, so
a run that uses it trains exactly as it would with that LR given by hand.

The pick (``RULE``): the strategy's default LR (``finetune.scaling`` for the strategies that
train the backbone), capped at a third of the *onset of divergence*, the LR from which the
smoothed loss stays above 1.5x the lowest it has reached. Measured on the three shared
datasets (docs/concepts/finetune-defaults.md), a range test from a warm-started head sees training
loss only: flat and noisy while the LR is harmless, then rising once it is too high to
train at. It cannot see the LR at which fine-tuning stops generalising (ants/bees' 244
images erode at 3e-5, far below the onset; 1,650 hand-sign images gain at 1e-4), and the
rules that read the falling stretch (steepest fall; a tenth of the minimum) picked 8e-7 and
1e-6 on the two larger sets, far below what trains well. What it shows reliably is the
stability limit of this backbone, optimiser, batch size and head on this data, so it guards
the default where the default was never measured. The default, the onset and the pick are
reported and drawn.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from headstart.finetune import Plan, apply_bn_policy, apply_phase, param_groups
from headstart.model import DEFAULT_TASK
from headstart.training.device import images_to, to_device
from headstart.training.objective import Objective
from headstart.training.precision import Precision, resolve_precision

BELOW = 100.0  # the sweep starts at the default LR / BELOW ...
ABOVE = 1e4  # ... and ends at the default x ABOVE: six decades around what the rule can pick
MAX_STEPS = 100
MIN_STEPS = 8  # a curve needs points: a dataset of fewer batches runs a few epochs' worth
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum
SMOOTH_WINDOW = 0.05  # the loss's moving average spans this fraction of the steps
RISE = 1.5  # diverging: the smoothed loss stays above this multiple of its lowest so far
MARGIN = 3.0  # the pick stays at least this factor below the onset of divergence
RULE = "the default LR, capped at a third of the LR where the loss starts to diverge"


@dataclass
class RangeTest:
    """The range test's curve and its pick (base learning rates)."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    onset: float | None  # where the loss starts to diverge; None: it never did
    default: float
    pick: float
    steps_per_epoch: int
    seconds: float
    stopped: str
    rule: str = RULE
    notes: list[str] = field(default_factory=list)
    batch_size: int = 0  # images a step (the global batch under torchrun)

    @property
    def ceiling(self) -> float | None:
        """The highest LR the test allows (a third of the onset)."""
        return None if self.onset is None else self.onset / MARGIN

    @property
    def epochs(self) -> float:
        """The test's cost in epochs of the strategy it tests."""
        return len(self.lrs) / max(1, self.steps_per_epoch)

    def line(self) -> str:
        """The console line."""
        onset = "never" if self.onset is None else f"at {self.onset:.2g}"
        capped = "capped" if self.pick < self.default else "not capped"
        return (
            f"lr-find: base LR {self.pick:.2g} (default {self.default:.2g}, {capped}; the loss "
            f"diverges {onset}); {len(self.lrs)} steps = {self.epochs:.2f} epochs, "
            f"{self.seconds:.0f} s ({self.stopped})"
        )

    def to_dict(self) -> dict:
        """For ``lr_find.json`` and the manifest."""
        return {
            "pick": self.pick,
            "rule": self.rule,
            "default": self.default,
            "onset": self.onset,
            "ceiling": self.ceiling,
            "steps": len(self.lrs),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "seconds": self.seconds,
            "stopped": self.stopped,
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
        }


def beta_for(steps: int) -> float:
    """The moving average's decay for a test of ``steps`` steps: fastai's 0.98 lags 50
    steps behind, most of a 60-step test; a window of 5% of the steps follows the curve.

    >>> round(beta_for(100), 3), round(beta_for(40), 3)
    (0.8, 0.5)
    """
    return max(0.5, 1 - 1 / max(1.0, SMOOTH_WINDOW * steps))


def smooth(losses: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average.

    >>> [round(v, 3) for v in smooth([1.0, 1.0, 4.0], 0.5)]
    [1.0, 1.0, 2.714]
    """
    out, avg = [], 0.0
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def divergence_onset(lrs: list[float], smoothed: list[float]) -> float | None:
    """The LR from which the smoothed loss stays above ``RISE`` x the lowest it had reached
    (a lone noisy bump that falls back does not count); None if it never diverged.

    >>> lrs = [10.0**e for e in range(-6, 0)]
    >>> divergence_onset(lrs, [1.0, 0.5, 0.8, 0.4, 0.7, 2.0])
    0.01
    >>> divergence_onset(lrs, [1.0, 0.9, 0.8, 0.7, 0.6, 0.6]) is None
    True
    """
    low, above = math.inf, []
    for value in smoothed:
        low = min(low, value)
        above.append(value > RISE * low)
    start = len(above)
    while start > 0 and above[start - 1]:  # the final run of steps above the line
        start -= 1
    return lrs[start] if start < len(above) else None


def pick_lr(lrs: list[float], smoothed: list[float], default: float) -> tuple[float, float | None]:
    """(pick, onset) for a curve: ``default``, capped at the onset of divergence / ``MARGIN``.

    >>> lrs = [10.0**e for e in range(-6, 0)]
    >>> pick_lr(lrs, [1.0, 0.5, 0.8, 0.4, 0.7, 2.0], 1e-3)
    (0.001, 0.01)
    >>> pick_lr(lrs, [1.0, 0.5, 0.8, 0.4, 2.0, 3.0], 1e-2)
    (0.0033333333333333335, 0.01)
    """
    onset = divergence_onset(lrs, smoothed)
    return (default if onset is None else min(default, onset / MARGIN)), onset


def range_test(
    model: nn.Module,
    plan: Plan,
    loader: DataLoader,
    weight_decay: float,
    device: torch.device,
    objective: Objective,
    default: float,
    seed: int = 0,
    progress: bool = True,
    max_steps: int = MAX_STEPS,
    precision: Precision | None = None,
    batch_size: int | None = None,
    accumulate: int = 1,
) -> RangeTest:
    """Run the range test on ``model`` with ``plan``'s last phase (every stage the strategy
    ever trains, at its multipliers) over ``loader``'s dataset, in batches of ``batch_size``
    (the loader's own by default; the global batch under torchrun, which the picked LR is
    for), ``accumulate`` of them summed per step as training sums them, and pick below
    ``default`` (the strategy's default LR); ``model`` and the global random state are left
    as they were."""
    start = time.perf_counter()
    batch_size = batch_size or loader.batch_size or 1
    step_images = batch_size * accumulate
    steps_per_epoch = -(-len(loader.dataset) // step_images)  # type: ignore[arg-type]
    steps = min(max_steps, max(steps_per_epoch, MIN_STEPS))
    saved = copy.deepcopy(model.state_dict())
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    batches = DataLoader(
        loader.dataset, batch_size=batch_size, shuffle=True, generator=gen,
        num_workers=loader.num_workers, drop_last=len(loader.dataset) > batch_size,  # type: ignore[arg-type]
    )  # fmt: skip
    phase = plan.phases[-1]
    lrs: list[float] = []
    losses: list[float] = []
    start_lr, end_lr = default / BELOW, default * ABOVE
    stopped = f"reached {end_lr:g}"
    precision = precision or resolve_precision("auto", device)
    scaler = precision.scaler()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), precision.training(model):
        torch.manual_seed(seed)
        to_device(model, device)
        apply_phase(model, phase)
        optimizer = torch.optim.AdamW(param_groups(model, phase, start_lr, weight_decay))
        mults = [g["base_lr"] / start_lr for g in optimizer.param_groups]
        model.train()
        apply_bn_policy(model, plan.bn)
        bar = tqdm(
            total=steps, desc="lr-find", unit="step", leave=False, disable=not progress or None
        )
        best = math.inf
        avg = 0.0
        beta = beta_for(steps)
        data = iter(batches)
        for step in range(steps):
            lr = start_lr * (end_lr / start_lr) ** (step / max(1, steps - 1))
            for g, m in zip(optimizer.param_groups, mults, strict=True):
                g["lr"] = lr * m
            optimizer.zero_grad(set_to_none=True)
            summed = torch.zeros((), device=device)
            for _ in range(accumulate):  # full batches (drop_last), so each weighs the same
                try:
                    images, target = next(data)
                except StopIteration:
                    data = iter(batches)
                    images, target = next(data)
                targets = target if isinstance(target, dict) else {DEFAULT_TASK: target}
                targets = {k: v.to(device) for k, v in targets.items()}
                with precision.autocast():
                    loss = objective.loss(model(images_to(images, device)), targets)
                scaler.scale(loss / accumulate).backward()
                summed += loss.detach().float() / accumulate
            scaler.step(optimizer)
            scaler.update()
            value = float(summed)  # one device sync a step
            lrs.append(lr)
            losses.append(value)
            bar.update(1)
            avg = beta * avg + (1 - beta) * value
            smoothed = avg / (1 - beta ** (step + 1))
            best = min(best, smoothed)
            if not math.isfinite(value) or (step > 5 and smoothed > DIVERGED * best):
                stopped = f"loss exploded at {lr:.2g}"
                break
        bar.close()
    model.load_state_dict(saved)
    for n, p in model.named_parameters():
        p.requires_grad_(requires[n])
    curve = smooth(losses, beta_for(steps))
    pick, onset = pick_lr(lrs, curve, default)
    result = RangeTest(lrs, losses, curve, onset, default, pick, steps_per_epoch,
                       time.perf_counter() - start, stopped, batch_size=step_images)  # fmt: skip
    if steps > steps_per_epoch:
        result.notes.append(
            f"{steps_per_epoch} steps make an epoch here, too few for a curve: the test may "
            f"run up to {steps} ({steps / steps_per_epoch:.1f} epochs' worth; seconds here)"
        )
    return result
