"""What training minimises and what picks the best epoch, for one task or several.

The loss is the weighted sum of per-task cross-entropies, one backward pass; a label of
``MISSING`` (-1, a blank cell in a labels CSV) is masked out of its task's loss and metrics
while the sample still trains the other tasks. Optional per-class weights counter imbalance.
The best epoch is chosen on the mean of the task accuracies, or on one named task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from headstart.data.table import MISSING
from headstart.errors import ConfigError

MEAN = "mean"


@dataclass
class Objective:
    """Per-task loss weights and class weights, label smoothing, and the selection metric."""

    task_weights: dict[str, float] = field(default_factory=dict)  # absent task: weight 1
    class_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    smoothing: float = 0.0
    monitor: str = MEAN

    def loss(
        self, logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Weighted sum over tasks of the mean cross-entropy over labelled samples (class
        weights make it a weighted mean). No host synchronisation: a batch without a label
        for a task adds zero for it."""
        total = torch.zeros((), device=next(iter(logits.values())).device)
        for task, y in targets.items():
            weight = self.class_weights.get(task)
            weight = None if weight is None else weight.to(y.device)
            ce = nn.functional.cross_entropy(
                logits[task].float(),
                y,
                weight=weight,
                ignore_index=MISSING,
                label_smoothing=self.smoothing,
                reduction="sum",
            )
            labelled = (y != MISSING).float()
            if weight is not None:
                labelled = labelled * weight[y.clamp(min=0)]
            total = total + self.task_weights.get(task, 1.0) * ce / labelled.sum().clamp(min=1e-12)
        return total

    def to_dict(self) -> dict:
        """For the manifest: what a refit of a head needs to minimise the same loss."""
        return {
            "task_weights": dict(self.task_weights),
            "class_weights": {t: w.tolist() for t, w in self.class_weights.items()},
            "smoothing": self.smoothing,
            "monitor": self.monitor,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Objective:
        """The objective :meth:`to_dict` recorded (absent keys: the defaults)."""
        return cls(
            {t: float(w) for t, w in (d.get("task_weights") or {}).items()},
            {
                t: torch.tensor(w, dtype=torch.float32)
                for t, w in (d.get("class_weights") or {}).items()
            },
            float(d.get("smoothing") or 0.0),
            d.get("monitor") or MEAN,
        )

    @staticmethod
    def counts(
        logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per task, a tensor [correct, labelled] (on the device: no synchronisation)."""
        out = {}
        for task, y in targets.items():
            labelled = y != MISSING
            correct = ((logits[task].argmax(1) == y) & labelled).sum()
            out[task] = torch.stack([correct, labelled.sum()])
        return out

    @staticmethod
    def confusion(
        logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, list[list[int]]]:
        """Per task, the confusion matrix over its labelled samples (row: true class,
        column: predicted)."""
        out = {}
        for task, y in targets.items():
            k = logits[task].shape[1]
            labelled = y != MISSING
            pred = logits[task].argmax(1)[labelled]
            cells = torch.bincount(y[labelled] * k + pred, minlength=k * k)
            out[task] = cells.reshape(k, k).tolist()
        return out

    @staticmethod
    def recall(confusion: Mapping[str, Sequence[Sequence[int]]]) -> dict[str, list[float | None]]:
        """Per task, the recall of each class over its labelled samples (None for a class
        with none), from :meth:`confusion`: the minority classes' figures an accuracy hides."""
        out: dict[str, list[float | None]] = {}
        for task, matrix in confusion.items():
            out[task] = [row[i] / sum(row) if sum(row) else None for i, row in enumerate(matrix)]
        return out

    def select(self, accuracy: Mapping[str, float]) -> float:
        """The number that picks the best epoch: the mean task accuracy, or one task's."""
        if self.monitor == MEAN:
            return float(np.mean(list(accuracy.values())))
        return accuracy[self.monitor]


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """``n / (k * n_c)`` per class (scikit-learn's "balanced"), missing labels ignored; a
    class absent from training gets weight 1."""
    y = np.asarray([v for v in labels if v != MISSING])
    counts = np.bincount(y, minlength=num_classes).astype(float)
    weights = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def check_monitor(monitor: str, tasks: Sequence[str]) -> None:
    """Refuse a ``--monitor`` that is neither ``mean`` nor a task."""
    if monitor != MEAN and monitor not in tasks:
        raise ConfigError(
            f"ConfigError: --monitor {monitor!r}; expected mean or one of the tasks "
            f"({', '.join(tasks)})."
        )
