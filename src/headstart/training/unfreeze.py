"""``--unfreeze-from auto``: where ``partial`` starts, chosen from the data.

The multi-layer probe's cross-validation (``training.regularise``) already measures which
stages' outputs carry what the labels need: the last stage alone, the later half, or all of
them. Where it reads earlier stages than the last, their features are worth adapting, so
``partial`` trains from the earliest stage it reads; where it reads the last stage alone,
``partial`` starts where the family's default puts it. Measured on three datasets (10
epochs, Lite0): the hand signs' and the solar cells' probes read ``blocks.3`` on, and
training from there scored 99.51% and 81.33% against the default's 97.57% and 77.90%; on
ants/bees the probe reads the last stage, and ``blocks.3`` would have added nothing
(94.12% both). The choice costs one multi-layer probe's features (cached: ``train --layers
all`` on the same data and size reads them back) and seconds of L-BFGS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headstart.config import TrainConfig
from headstart.model import Classifier
from headstart.training.device import to_device
from headstart.training.inputs import Inputs, frozen_inputs
from headstart.training.regularise import Choice, fit_head_by_cv

if TYPE_CHECKING:
    from headstart.training.setup import Ready

AUTO_STAGE = "auto"  # --unfreeze-from auto


@dataclass(frozen=True)
class StageChoice:
    """Where ``partial`` starts, and the multi-layer evidence it rests on."""

    stage: str
    default: str
    choice: Choice

    def line(self) -> str:
        """The console line."""
        c = self.choice
        cv = f"{c.folds}-fold cross-validation on the training images: {c.per_stage_count()}"
        if self.stage != self.default:
            return (
                f"partial: unfreezes from {self.stage}, the earliest stage the multi-layer "
                f"probe reads ({c.stages} of {len(c.stage_names)} stages by {cv}; the "
                f"default: {self.default})"
            )
        return (
            f"partial: unfreezes from {self.stage}, the default (the multi-layer probe reads "
            f"from {c.first_read} on by {cv})"
        )

    def to_dict(self) -> dict:
        """For the manifest."""
        return {"rule": AUTO_STAGE, "stage": self.stage, "default": self.default,
                "stages_read": self.choice.stages, "head_cv": self.choice.to_dict()}  # fmt: skip


def earliest(stages: Sequence[str], default: str, first_read: str) -> str:
    """The earlier of ``default`` and ``first_read`` in ``stages`` (forward order); a stage
    read that is not a trainable stage (the taps name it otherwise) leaves the default.

    >>> earliest(["stem", "blocks.0", "blocks.1", "conv_head"], "blocks.1", "blocks.0")
    'blocks.0'
    >>> earliest(["stem", "blocks.0", "blocks.1", "conv_head"], "blocks.1", "conv_head")
    'blocks.1'
    """
    if first_read not in stages:
        return default
    return min(default, first_read, key=list(stages).index)


def multilayer_choice(
    cfg: TrainConfig, ready: Ready, progress: bool = True
) -> tuple[Classifier, Inputs, Choice]:
    """The multi-layer probe over ``ready``'s backbone and split (every stage's features
    cached as ``train --layers all`` caches them), its stages and penalty chosen by
    cross-validation on the training images and its heads fitted; the validation images are
    untouched. Raises ConfigError where the stages cannot be tapped."""
    backbone, split, device = ready.backbone, ready.split, ready.device
    model = Classifier(
        backbone.module, backbone.num_features,
        {task: len(classes) for task, classes in split.tasks.items()}, 0.0,
        backbone.spec.family, "all",
    )  # fmt: skip
    to_device(model, device)
    inputs = frozen_inputs(cfg, backbone, split, device, ready.generator, ready.cache, progress,
                           model.taps)  # fmt: skip
    train = inputs.train.dataset
    raw = train.features[:, 0].to(device)  # type: ignore[attr-defined]
    choice, _, _ = fit_head_by_cv(model, model.taps, raw, train.targets, ready.objective, cfg.seed,  # type: ignore[attr-defined]
                                  groups=split.group_codes())  # fmt: skip
    return model, inputs, choice


def unfreeze_stage(choice: Choice, stages: Sequence[str], default: str) -> StageChoice:
    """Where ``partial`` starts on this data: the earlier of ``default`` and the first of
    the ``stages`` the multi-layer probe's ``choice`` reads (:func:`multilayer_choice`)."""
    return StageChoice(earliest(stages, default, choice.first_read), default, choice)
