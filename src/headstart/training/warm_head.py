"""A warm-started head for the strategies that train the backbone, and the probe it gives.

A fine-tune that starts under a zero head spends its first steps sending the gradients of
a random-guessing classifier into pretrained features, which is what erodes them (LP-FT,
Kumar et al. ICLR 2022). Fitting the head first on the frozen backbone's pooled features,
from the feature cache (seconds when the probe has run, one forward pass over the images
otherwise), lets the backbone start under a good head.

The warm head keeps the shorter grid of penalties, chosen by accuracy: a modest head leaves
the training images a loss to learn from, where the probe's own fit (weaker penalty, chosen
by log-loss) fits ants/bees' training images to 100% and its first fine-tuning epoch to a
training loss of 0.03, after which validation loss only rose. The probe itself is fitted on
the same features too (one cross-validation serves both), and its validation accuracy,
what ``--strategy probe`` scores on this split, is the line an unfreezing run has to beat:
it is shown beside every epoch, and a run that ends below it says so.
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
from headstart.training.lbfgs import HeadsCopy, accuracy, target_tensors
from headstart.training.objective import Objective
from headstart.training.regularise import PENALTIES, fit_last_layer_head, fit_path, pick

STRATEGIES = ("partial", "finetune", "gradual", "lp-ft")  # those that train the backbone


@dataclass(frozen=True)
class WarmHead:
    """The head the run starts from (its penalty and accuracies) and the probe to beat."""

    l2: float
    train_acc: float
    val_acc: float
    probe_l2: float
    probe_val_acc: float  # what ``--strategy probe`` scores on this split
    computed: int  # images whose features were computed (0: all from the cache)

    def line(self) -> str:
        """The console line."""
        how = f"{self.computed} images' features computed" if self.computed else "cached"
        return (
            f"head: warm-started on the frozen backbone's features ({how}; L2 {self.l2:g} by "
            f"cross-validation: val_acc {self.val_acc:.4f}); the probe on this split (L2 "
            f"{self.probe_l2:g}, fitted as --strategy probe fits it) scores val_acc "
            f"{self.probe_val_acc:.4f}, the line fine-tuning has to beat"
        )

    def to_dict(self) -> dict:
        """For the manifest."""
        return {
            "l2": self.l2, "train_acc": self.train_acc, "val_acc": self.val_acc,
            "probe_l2": self.probe_l2, "probe_val_acc": self.probe_val_acc,
        }  # fmt: skip


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
    (pretrained, BatchNorm statistics as the run will start), penalty by 3-fold CV; and,
    on a copy, the probe's own fit of the same features, for the line to beat."""
    inputs = frozen_inputs(cfg, backbone, split, device, generator, cache, progress)
    train = inputs.train.dataset
    val = inputs.val.dataset
    to_device(model, device)
    raw = train.features[:, 0].to(device)  # type: ignore[attr-defined]
    x_val = val.features[:, 0].to(device)  # type: ignore[attr-defined]
    y_val = {t: v.to(device) for t, v in target_tensors(val.targets).items()}  # type: ignore[attr-defined]
    targets = train.targets  # type: ignore[attr-defined]
    probe = HeadsCopy(model)
    choice, _, _ = fit_last_layer_head(probe, raw, targets, objective, cfg.seed)
    probe_acc = accuracy(probe, x_val, y_val, objective)
    # the warm head's penalty from the same cross-validation: the longer grid's path begins
    # with the shorter one, so its folds' accuracies there are the shorter grid's own
    shorter = {c: a for c, a in choice.scores.items() if c[1] in PENALTIES}
    _, l2 = pick(shorter, choice.images)
    _, train_acc = fit_path(model, None, raw, targets, objective, PENALTIES, l2)
    val_acc = accuracy(model, x_val, y_val, objective)
    return WarmHead(l2, train_acc, val_acc, choice.l2, probe_acc, inputs.info["computed"])
