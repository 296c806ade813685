"""How far the data sits from ImageNet, measured on the picked backbone: the gap between
the last-layer and the multi-layer probe (``--layers all``), and the shift of the BatchNorm
statistics when they are re-estimated on the training images (``--bn adapt``).

The multi-layer probe's cross-validation already asks the question that matters: does
reading earlier stages beat the last stage alone by more than noise (one standard error)?
When it does, the last layer's ImageNet abstraction is the wrong one for this data, and the
multi-layer probe is a measured candidate of its own. The BatchNorm shift is shown, not
acted on: re-estimation can hurt (grayscale images silence the stem's colour channels; see
the far-domain guide), so it describes the data rather than choosing for it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from headstart.backbones.preprocessing import Preprocessing
from headstart.cache.decoded import image_reader
from headstart.config import TrainConfig
from headstart.data import DataSplit, ImageDataset, eval_transform, pass_generator
from headstart.errors import ConfigError
from headstart.finetune.bn import BNShift, adapt_batchnorm, batchnorms, shift, statistics
from headstart.stats import wilson_interval
from headstart.training.device import images_to
from headstart.training.lbfgs import accuracy, target_tensors
from headstart.training.regularise import standard_error
from headstart.training.unfreeze import multilayer_choice

if TYPE_CHECKING:
    from headstart.training.setup import Ready

BN_IMAGES = 256  # training images the BatchNorm shift is measured on (a sample is enough)


@dataclass(frozen=True)
class DomainEvidence:
    """The multi-layer probe against the last stage alone, and the BatchNorm shift."""

    backbone: str
    stages_read: int  # stages the multi-layer probe's cross-validation chose
    stages: int
    last_cv: float  # cross-validated accuracy reading the last stage alone
    multi_cv: float  # the same for the chosen stages
    cv_images: int
    val_acc: float  # the multi-layer probe fitted on every training image, on val
    val_ci: tuple[float, float]
    n_val: int
    bn: BNShift | None
    seconds: float
    first_read: str = ""  # the earliest stage it reads (where --unfreeze-from auto starts)

    @property
    def far(self) -> bool:
        """Whether the last stage alone scores more than one standard error below the best set
        of stages (the one-standard-error rule then reads more than one)."""
        return self.stages_read > 1

    @property
    def gap(self) -> float:
        """Cross-validated accuracy the earlier stages add over the last stage alone."""
        return self.multi_cv - self.last_cv

    @property
    def held_out(self) -> float:
        """The multi-layer probe's CV accuracy pooled with its validation accuracy."""
        n = self.cv_images + self.n_val
        return (self.multi_cv * self.cv_images + self.val_acc * self.n_val) / n

    def lines(self) -> list[str]:
        """The evidence in plain words."""
        se = standard_error(self.multi_cv, self.cv_images)
        verdict = (
            f"the cross-validation reads {self.stages_read} of {self.stages} stages, "
            f"{self.gap:+.2%} over the last stage alone (which scores more than one standard "
            "error below the best set of stages): the data sits far from ImageNet, and the "
            "multi-layer probe is a measured candidate"
            if self.far
            else f"earlier stages add no more than noise (one standard error, {se:.2%}) over "
            "the last stage alone: the last layer's abstraction suits this data"
        )
        lines = [
            f"  multi-layer probe ({self.backbone}): CV {self.multi_cv:.2%} against "
            f"{self.last_cv:.2%} for the last stage alone; {verdict}"
        ]
        if self.bn is not None:
            lines.append(
                f"  BatchNorm statistics re-estimated on {self.bn.images} training images move "
                f"the means by {self.bn.mean_shift:.2f} std and the variances by a factor of "
                f"{math.exp(self.bn.log_var_ratio):.2f} on average (shown, not acted "
                "on: --bn adapt can hurt; see the far-domain guide)"
            )
        return lines

    def to_dict(self) -> dict:
        """For ``recommend.json``."""
        return {
            "backbone": self.backbone,
            "stages_read": self.stages_read,
            "stages": self.stages,
            "first_read": self.first_read,
            "last_cv": self.last_cv,
            "multi_cv": self.multi_cv,
            "gap": self.gap,
            "far": self.far,
            "val_acc": self.val_acc,
            "val_ci": list(self.val_ci),
            "held_out": self.held_out,
            "bn_mean_shift": self.bn.mean_shift if self.bn else None,
            "bn_log_var_ratio": self.bn.log_var_ratio if self.bn else None,
            "seconds": self.seconds,
        }


def bn_shift(
    module: torch.nn.Module,
    split: DataSplit,
    prep: Preprocessing,
    device: torch.device,
    batch: int,
    seed: int,
) -> BNShift:
    """The shift re-estimation makes, on a copy of ``module`` and a sample of
    ``BN_IMAGES`` training images (the original keeps its statistics)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(split.train), generator=g)[:BN_IMAGES].tolist()
    sample = [split.train[i] for i in sorted(rows)]
    copied = copy.deepcopy(module)
    before = statistics(copied)
    loader = DataLoader(
        ImageDataset(sample, eval_transform(prep), image_reader(prep, None)),
        batch_size=batch,
        generator=pass_generator(),
    )
    adapt_batchnorm(copied, (images_to(x, device) for x, _ in loader), len(sample), False)
    return replace(shift(before, copied), images=len(sample))


def domain_evidence(cfg: TrainConfig, ready: Ready, progress: bool = True) -> DomainEvidence | None:
    """The multi-layer probe's evidence for ``ready``'s backbone (a built one; its features
    cached like ``train --layers all``'s), or None where its stages cannot be tapped."""
    start = time.perf_counter()
    backbone, split, device, objective = ready.backbone, ready.split, ready.device, ready.objective
    try:
        model, inputs, choice = multilayer_choice(cfg, ready, progress)
    except ConfigError:  # a backbone whose stages cannot be tapped: no such evidence
        return None
    val = inputs.val.dataset
    with torch.no_grad():
        val_x = model.taps.normalize(val.features[:, 0].to(device))  # type: ignore[attr-defined]
    y_val = {t: v.to(device) for t, v in target_tensors(val.targets).items()}  # type: ignore[attr-defined]
    val_acc = accuracy(model, val_x, y_val, objective)
    n_val = len(val)  # type: ignore[arg-type]
    last = max(a for (k, _), a in choice.scores.items() if k == 1)
    bn = None
    if batchnorms(backbone.module):
        bn = bn_shift(backbone.module, split, backbone.preprocessing, device,
                      cfg.optim.batch_size, cfg.seed)  # fmt: skip
    return DomainEvidence(
        backbone=backbone.spec.name,
        stages_read=choice.stages,
        stages=len(choice.stage_names),
        last_cv=last,
        multi_cv=max(a for (k, _), a in choice.scores.items() if k == choice.stages),
        cv_images=choice.images,
        val_acc=val_acc,
        val_ci=wilson_interval(round(val_acc * n_val), n_val),
        n_val=n_val,
        bn=bn,
        seconds=time.perf_counter() - start,
        first_read=choice.first_read,
    )
