"""Learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, floor: float) -> float:
    """LR multiplier at ``step``: ramps from ~0 to 1 over ``warmup_steps``, then follows a
    cosine from 1 down to ``floor`` at ``total_steps``.

    >>> [round(warmup_cosine(s, 10, 2, 0.1), 3) for s in (0, 1, 2, 10)]
    [0.5, 1.0, 1.0, 0.1]
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_group_lrs(
    optimizer: torch.optim.Optimizer,
    step: int,
    total_steps: int,
    warmup_steps: int,
    floor: float,
    group_warmup_steps: int,
) -> None:
    """Set every group's LR for ``step``: its ``base_lr`` x the global warmup-cosine factor,
    x a short linear ramp for groups that joined after step 0 (``start_step``).

    One global curve keeps the schedule coherent when gradual unfreezing adds groups; the
    ramp spares freshly unfrozen weights a full-size first update. Groups already training
    keep their optimizer state.
    """
    factor = warmup_cosine(step, total_steps, warmup_steps, floor)
    for group in optimizer.param_groups:
        since = step - group.get("start_step", 0)
        ramp = 1.0
        if group.get("start_step", 0) > 0 and group_warmup_steps > 0:
            ramp = min(1.0, (since + 1) / group_warmup_steps)
        group["lr"] = group["base_lr"] * factor * ramp
