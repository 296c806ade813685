"""An exponential moving average of the weights (``--ema EPOCHS``): validated, kept and
shipped in place of the last step's weights.

Late in training, SGD-type steps scatter the weights around a minimum; their average sits
nearer its centre, where the loss surface is flatter and validation accuracy steadier
(Polyak and Juditsky 1992; Izmailov et al. 2018); timm trains most of its recipes with such
an average (``ModelEmaV3``). The warm-up is TensorFlow's ``ExponentialMovingAverage``'s: the
decay at step ``t`` is ``min(decay, (1 + t) / (10 + t))``, an average over about the last
tenth of the steps so far until that reaches the span asked for, so the pretrained weights
and the first, largest steps are soon forgotten.

The span is given in epochs, not as a raw decay, so one value means the same on 244 images
as on 20,000: the decay per step is ``1 - 1 / (epochs * steps_per_epoch)``, an average whose
time constant is that many epochs of steps.

The average lives as a name-to-tensor dict over the state the plan can change (parameters
that train in some phase, and buffers: BatchNorm statistics are averaged too, as timm
does), so it is saved and resumed with the rest of the loop's state. ``torch.optim.swa_utils
.AveragedModel`` was the other option; it keeps a deep copy of the whole module, frozen
stages included, outside the state that resume saves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def ema_decay(epochs: float, steps_per_epoch: int) -> float:
    """The decay per step of an average spanning about ``epochs`` epochs.

    >>> round(ema_decay(1.0, 66), 4), round(ema_decay(2.0, 8), 4)
    (0.9848, 0.9375)
    """
    return 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)


class WeightAverage:
    """An exponential moving average of ``model``'s tensors named in ``names``."""

    def __init__(self, model: nn.Module, names: list[str], decay: float) -> None:
        state = model.state_dict()
        self.names = names
        self.decay = decay
        self.updates = 0
        self.tensors = {n: state[n].detach().clone() for n in names}
        self._floats = [n for n in names if state[n].is_floating_point()]
        self._counters = [n for n in names if not state[n].is_floating_point()]

    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current tensors into the average (after an optimizer step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = model.state_dict()
        with torch.no_grad():
            torch._foreach_lerp_(
                [self.tensors[n] for n in self._floats],
                [state[n] for n in self._floats],
                1 - decay,
            )
            for n in self._counters:  # BatchNorm's batch counters: the latest value
                self.tensors[n].copy_(state[n])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Within the block ``model`` holds the average; its own weights come back after."""
        self._swap(model)
        try:
            yield
        finally:
            self._swap(model)

    def _swap(self, model: nn.Module) -> None:
        state = model.state_dict()
        with torch.no_grad():
            for n in self.names:
                held = state[n].detach().clone()
                state[n].copy_(self.tensors[n])
                self.tensors[n] = held
