"""A warm-started head for the strategies that train the backbone, and the probe it gives.

A fine-tune that starts under a zero head spends its first steps sending the gradients of
a random-guessing classifier into pretrained features, which is what erodes them (LP-FT,
Kumar et al. ICLR 2022). Fitting the head first on the frozen backbone's pooled features,
from the feature cache (seconds when the probe has run, one forward pass over the images
otherwise), lets the backbone start under a good head. The same fit is a probe on the same
split, so its validation accuracy is the line an unfreezing run has to beat: it is shown
beside every epoch, and a run that ends below it says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from headstart.backbones import Backbone
from headstart.cache import Cache
from headstart.config import TrainConfig
from headstart.data import DataSplit
from headstart.training.device import to_device
from headstart.training.inputs import frozen_inputs
from headstart.training.lbfgs import accuracy, target_tensors
from headstart.training.objective import Objective
from headstart.training.regularise import fit_head_by_cv

STRATEGIES = ("partial", "finetune", "gradual", "lp-ft")  # those that train the backbone


@dataclass(frozen=True)
class WarmHead:
    """The probe the heads were warm-started with: its penalty and accuracies."""

    l2: float
    train_acc: float
    val_acc: float
    computed: int  # images whose features were computed (0: all from the cache)

    def line(self) -> str:
        """The console line."""
        how = f"{self.computed} images' features computed" if self.computed else "cached"
        return (
            f"head: warm-started on the frozen backbone's features ({how}; L2 {self.l2:g} by "
            f"cross-validation): the probe on this split scores val_acc {self.val_acc:.4f}, "
            "the line fine-tuning has to beat"
        )

    def to_dict(self) -> dict:
        """For the manifest."""
        return {"l2": self.l2, "train_acc": self.train_acc, "probe_val_acc": self.val_acc}


def warm_start(
    cfg: TrainConfig,
    model: nn.Module,
    backbone: Backbone,
    split: DataSplit,
    device: torch.device,
    generator: torch.Generator,
    cache: Cache,
    objective: Objective,
    progress: bool = True,
) -> WarmHead:
    """Fit ``model``'s heads by L-BFGS on the pooled features of the backbone as it is now
    (pretrained, BatchNorm statistics as the run will start), penalty by 3-fold CV."""
    inputs = frozen_inputs(cfg, backbone, split, device, generator, cache, progress)
    train = inputs.train.dataset
    val = inputs.val.dataset
    to_device(model, device)
    raw = train.features[:, 0].to(device)  # type: ignore[attr-defined]
    choice, _, train_acc = fit_head_by_cv(model, None, raw, train.targets, objective, cfg.seed)  # type: ignore[attr-defined]
    y_val = {t: v.to(device) for t, v in target_tensors(val.targets).items()}  # type: ignore[attr-defined]
    val_acc = accuracy(model, val.features[:, 0].to(device), y_val, objective)  # type: ignore[attr-defined]
    return WarmHead(choice.l2, train_acc, val_acc, inputs.info["computed"])
