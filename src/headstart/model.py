"""The classifier: one backbone, one named head per task, logits returned per task."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from headstart.data.table import DEFAULT_TASK

__all__ = ["DEFAULT_TASK", "Classifier", "head_key"]


def head_key(task: str) -> str:
    """The head's key in ``Classifier.heads``: the task name, with a ``_`` appended when the
    name is taken by a module attribute (a task called ``type`` or ``train``)."""
    return f"{task}_" if hasattr(nn.ModuleDict, task) else task


class Classifier(nn.Module):
    """``backbone`` (images -> pooled features) followed by a linear head per task.

    ``family`` names the stage rules that split the backbone into named stages for freezing
    and per-stage learning rates (``generic``: the whole backbone is one stage).
    ``layers="all"`` feeds the heads the standardised pooled output of every stage
    (``headstart.multilayer``) instead of the last stage's features.

    The head is sized from the backbone's feature dimension and zero-initialised: its first
    gradients then carry no random signal into a backbone that is being fine-tuned, and the
    starting prediction is uniform.

    >>> m = Classifier(nn.Flatten(), 12, {"class": 3})
    >>> m(torch.zeros(2, 3, 2, 2))["class"].shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        tasks: Mapping[str, int],
        dropout: float = 0.0,
        family: str = "generic",
        layers: str = "last",
    ) -> None:
        super().__init__()
        self.family = family  # stage rules for the backbone (see backbones.stages)
        self.backbone = backbone
        self.tail: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.layers = layers
        self.temperature: dict[str, float] = {}  # per task, from `evaluate --calibrate`
        if layers == "all":  # pooled features of every stage (see headstart.multilayer)
            from headstart.multilayer import StageTaps

            self.taps = StageTaps(backbone, family)
            num_features = self.taps.num_features
        self.tasks = list(tasks)
        self.heads = nn.ModuleDict()
        for task, num_classes in tasks.items():
            linear = nn.Linear(num_features, num_classes)
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
            self.heads[head_key(task)] = nn.Sequential(nn.Dropout(dropout), linear)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per task, each of shape (N, num_classes)."""
        if self.tail is not None:
            features = self.tail(images)
        else:
            features = self.taps(images) if self.layers == "all" else self.backbone(images)
        out = {task: self.heads[head_key(task)](features) for task in self.tasks}
        for task, t in self.temperature.items():  # temperature scaling: same argmax
            out[task] = out[task] / t
        return out

    @property
    def num_features(self) -> int:
        """The width of the heads' input."""
        return next(iter(self.heads.values()))[-1].in_features

    @contextmanager
    def reading_features(self, tail: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Within the block the model takes a frozen prefix's cached outputs instead of
        images and runs only ``tail`` (the rest of the backbone) and the heads. The tail's
        modules are the backbone's own, so what trains here is what gets saved."""
        self.tail = tail
        try:
            yield
        finally:
            self.tail = None
