"""A linear head fitted to convergence on cached features: L2-regularised multinomial
logistic regression solved by L-BFGS.

With thousands of multi-layer features and a few thousand images, a few epochs of AdamW
leave the head wherever the schedule stopped, and decoupled weight decay is not the penalty
the cross-validation thinks it is choosing. The convex problem solved to convergence
(the linear-probe protocol of CLIP and Head2Toe) has one answer per penalty, so choosing
the penalty by cross-validation means what it says: on elpv's defect grade at 300 px, the
same features scored 79.1% with a 10-epoch AdamW head and 81.1% with scikit-learn's L-BFGS
logistic regression at its cross-validated penalty.

The loss is the run's own :class:`~headstart.training.objective.Objective` (every task,
class weights, missing labels), plus ``l2 / 2`` times the squared norm of the heads'
weights (biases are not penalised), so ``l2`` is scikit-learn's ``1 / (C n)``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from headstart.data.table import task_labels
from headstart.model import head_key
from headstart.training.objective import Objective

MAX_ITER = 200


def target_tensors(targets: Sequence[int | Mapping[str, int]]) -> dict[str, torch.Tensor]:
    """:func:`headstart.data.task_labels` as tensors: per task, the class indices of
    ``targets`` (a missing label is ``MISSING``).

    >>> target_tensors([{"a": 1}, {"a": 0, "b": 2}])["b"].tolist()
    [-1, 2]
    """
    return {task: torch.from_numpy(y) for task, y in task_labels(targets).items()}


class HeadsCopy(nn.Module):
    """A copy of ``model``'s heads alone, for fits that are scored and thrown away (a
    cross-validation fold, the probe beside a warm start): what :func:`fit_heads` and
    :func:`head_logits` read, without copying the backbone (Lite0's 3.4 M parameters: a
    sixth of a warm probe's time went to three such copies)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.heads = copy.deepcopy(model.heads)
        self.tasks = list(model.tasks)  # type: ignore[arg-type]


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {task: model.heads[head_key(task)][-1] for task in model.tasks}  # type: ignore[index]


def head_logits(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every head's logits for features ``x`` (the heads' input, dropout off)."""
    return {task: linear(x) for task, linear in _linears(model).items()}


def fit_heads(
    model: nn.Module,
    x: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    objective: Objective,
    l2: float,
    max_iter: int = MAX_ITER,
) -> float:
    """Set ``model``'s heads to the minimiser of ``objective``'s loss on features ``x`` plus
    ``l2 / 2 * ||W||^2``, starting from their current weights (a warm start along a path of
    penalties); returns the final training loss without the penalty."""
    linears = _linears(model)
    params = [p for linear in linears.values() for p in linear.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective.loss(head_logits(model, x), targets)
        penalty = sum((linear.weight**2).sum() for linear in linears.values())
        total = loss + 0.5 * l2 * penalty
        total.backward()
        return total

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float(objective.loss(head_logits(model, x), targets))


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, targets: Mapping[str, torch.Tensor], objective: Objective
) -> float:
    """The selection accuracy (``objective.select``: mean over tasks, or the monitored one)."""
    return logits_accuracy(head_logits(model, x), targets, objective)


def logits_accuracy(
    logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], objective: Objective
) -> float:
    """:func:`accuracy` of logits already computed."""
    counts = objective.counts(logits, targets)
    per_task = {t: float(c[0]) / max(1.0, float(c[1])) for t, c in counts.items()}
    return float(objective.select(per_task)) if per_task else float(np.nan)
