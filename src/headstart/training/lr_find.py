"""The learning-rate range test (Smith, WACV 2017; fastai's ``lr_find``).

Train for a few dozen steps while the base learning rate grows exponentially from far too
small to far too large, and watch the loss: it stays flat, then falls, then explodes. A
good base LR sits on the falling stretch, well before the explosion. The test runs over the
strategy's real parameter groups with their discriminative multipliers held (the head at
its multiple of the backbone), on the same inputs the run trains on (the cached frozen
prefix where the strategy has one), from the warm-started head when there is one, and puts
the model's weights, its trainable set and every random number generator back afterwards, so
a run that uses it trains exactly as it would with that LR given by hand.

The pick (``RULE``): the LR where the smoothed loss falls fastest per decade, searched
before the loss reaches its minimum, and never above a tenth of the LR at the minimum
(Smith's bound: at the minimum the LR is already too high to train at). Both figures are
reported and drawn.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from headstart.finetune import Plan, apply_bn_policy, apply_phase, param_groups
from headstart.model import DEFAULT_TASK
from headstart.training.device import images_to, to_device
from headstart.training.objective import Objective

START_LR = 1e-7
END_LR = 10.0
MAX_STEPS = 100
MIN_STEPS = 30  # a curve needs points: tiny datasets run a few epochs' worth (seconds)
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum
SMOOTH_WINDOW = 0.05  # the loss's moving average spans this fraction of the steps
RULE = (
    "the steepest fall of the smoothed loss before its minimum, capped at a tenth of the "
    "LR of the minimum"
)


@dataclass
class RangeTest:
    """The range test's curve and its pick (base learning rates)."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    steepest: float
    minimum: float
    pick: float
    steps_per_epoch: int
    seconds: float
    stopped: str
    rule: str = RULE
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> float:
        """The test's cost in epochs of the strategy it tests."""
        return len(self.lrs) / max(1, self.steps_per_epoch)

    def line(self) -> str:
        """The console line."""
        return (
            f"lr-find: base LR {self.pick:.2g} ({self.rule}; steepest {self.steepest:.2g}, "
            f"minimum {self.minimum:.2g}); {len(self.lrs)} steps = {self.epochs:.2f} epochs, "
            f"{self.seconds:.0f} s ({self.stopped})"
        )

    def to_dict(self) -> dict:
        """For ``lr_find.json`` and the manifest."""
        return {
            "pick": self.pick,
            "rule": self.rule,
            "steepest": self.steepest,
            "minimum": self.minimum,
            "steps": len(self.lrs),
            "epochs": self.epochs,
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
    (0.95, 0.875)
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


def pick_lr(lrs: list[float], smoothed: list[float]) -> tuple[float, float, float]:
    """(pick, steepest, minimum) for a curve (see the module docstring for the rule).

    >>> lrs = [10 ** (-6 + i / 10) for i in range(50)]
    >>> loss = [2.0 if lr < 1e-4 else max(0.2, 2 - 0.9 * math.log10(lr / 1e-4)) for lr in lrs]
    >>> pick, steepest, minimum = pick_lr(lrs, loss + [])
    >>> 1e-4 <= steepest < minimum and pick == min(steepest, minimum / 10)
    True
    """
    y = np.asarray(smoothed)
    lo = int(np.argmin(y))
    minimum = lrs[lo]
    if lo < 2:
        return minimum / 10, minimum, minimum
    grads = np.gradient(y[: lo + 1], np.log10(np.asarray(lrs[: lo + 1])))
    steepest = lrs[int(np.argmin(grads))]
    return min(steepest, minimum / 10), steepest, minimum


def range_test(
    model: nn.Module,
    plan: Plan,
    loader: DataLoader,
    weight_decay: float,
    device: torch.device,
    objective: Objective,
    seed: int = 0,
    progress: bool = True,
    max_steps: int = MAX_STEPS,
) -> RangeTest:
    """Run the range test on ``model`` with ``plan``'s last phase (every stage the strategy
    ever trains, at its multipliers) over ``loader``'s dataset; ``model`` and the global
    random state are left as they were."""
    start = time.perf_counter()
    steps_per_epoch = len(loader)
    steps = min(max_steps, max(steps_per_epoch, MIN_STEPS))
    saved = copy.deepcopy(model.state_dict())
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    batches = DataLoader(
        loader.dataset, batch_size=loader.batch_size, shuffle=True, generator=gen,
        num_workers=loader.num_workers, drop_last=len(loader.dataset) > (loader.batch_size or 1),  # type: ignore[arg-type]
    )  # fmt: skip
    phase = plan.phases[-1]
    lrs: list[float] = []
    losses: list[float] = []
    stopped = f"reached {END_LR:g}"
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        to_device(model, device)
        apply_phase(model, phase)
        optimizer = torch.optim.AdamW(param_groups(model, phase, START_LR, weight_decay))
        mults = [g["base_lr"] / START_LR for g in optimizer.param_groups]
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
            try:
                images, target = next(data)
            except StopIteration:
                data = iter(batches)
                images, target = next(data)
            lr = START_LR * (END_LR / START_LR) ** (step / max(1, steps - 1))
            for g, m in zip(optimizer.param_groups, mults, strict=True):
                g["lr"] = lr * m
            targets = target if isinstance(target, dict) else {DEFAULT_TASK: target}
            targets = {k: v.to(device) for k, v in targets.items()}
            loss = objective.loss(model(images_to(images, device)), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
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
    pick, steepest, minimum = pick_lr(lrs, curve)
    result = RangeTest(lrs, losses, curve, steepest, minimum, pick, steps_per_epoch,
                       time.perf_counter() - start, stopped)  # fmt: skip
    if steps > steps_per_epoch:
        result.notes.append(
            f"{steps_per_epoch} steps make an epoch here, too few for a curve: the test may "
            f"run up to {steps} ({steps / steps_per_epoch:.1f} epochs' worth; seconds here)"
        )
    return result
