"""Choosing a probe head's weight decay on the training data itself.

A linear head over thousands of multi-layer features overfits a few hundred or thousand
images unless it is regularised hard, and how hard depends on the data (on elpv a logistic
regression scored 79% with strong L2 and 75% with weak). The head trains in seconds on
cached features, so the weight decay is chosen by k-fold cross-validation on the training
images: each candidate trains on k-1 folds with the run's own loop and settings and is
scored on the held-out fold (final epoch, no best-epoch pick); the validation split is not
touched, so its accuracy stays an honest estimate.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from headstart.cache.features import FeatureViews
from headstart.config import OptimConfig
from headstart.finetune import Plan
from headstart.training.loop import fit
from headstart.training.objective import Objective
from headstart.training.order import SeededOrder

WEIGHT_DECAYS = (0.01, 0.1, 1.0, 10.0)  # AdamW's decoupled decay: 10 at lr 1e-3 is strong
FOLDS = 3


@dataclass(frozen=True)
class Choice:
    """The chosen weight decay and the cross-validated accuracy of every candidate."""

    weight_decay: float
    scores: dict[float, float]
    folds: int

    def line(self) -> str:
        """The console line."""
        shown = ", ".join(f"{wd:g}: {acc:.4f}" for wd, acc in self.scores.items())
        return (
            f"head: weight decay {self.weight_decay:g}, chosen by {self.folds}-fold "
            f"cross-validation on the training features ({shown})"
        )


def choose_weight_decay(
    model: nn.Module,
    plan: Plan,
    train: FeatureViews,
    tail: Callable[[torch.Tensor], torch.Tensor],
    optim: OptimConfig,
    lr: float,
    device: torch.device,
    objective: Objective,
    seed: int,
    candidates: tuple[float, ...] = WEIGHT_DECAYS,
    folds: int = FOLDS,
) -> Choice:
    """Cross-validate ``candidates`` on ``train`` (cached features) with copies of
    ``model`` reading them through ``tail``; ties go to the stronger decay."""
    from sklearn.model_selection import StratifiedKFold

    first = [t if isinstance(t, int) else next(iter(t.values())) for t in train.targets]
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(np.zeros(len(first)), first))
    trial = replace(optim, patience=None)
    scores: dict[float, float] = {}
    for wd in candidates:
        accs = []
        for k, (tr, va) in enumerate(splits):
            m = copy.deepcopy(model)
            gen = torch.Generator().manual_seed(seed * 1000 + k)
            order = SeededOrder(len(tr), gen)
            loader = DataLoader(
                _subset(train, tr, True), batch_size=optim.batch_size, sampler=order, generator=gen
            )
            val = DataLoader(_subset(train, va, False), batch_size=256)
            with m.reading_features(tail):  # type: ignore[operator]
                result = fit(m, plan, loader, val, replace(trial, weight_decay=wd), lr, device,
                             progress=False, objective=objective)  # fmt: skip
            accs.append(result.history[-1].val_acc)
        scores[wd] = float(np.mean(accs))
    best = max(scores.values())
    chosen = max(wd for wd, acc in scores.items() if acc >= best - 1e-9)
    return Choice(chosen, scores, folds)


def _subset(views: FeatureViews, index: np.ndarray, train: bool) -> FeatureViews:
    out = FeatureViews.__new__(FeatureViews)
    out.features = views.features[torch.as_tensor(index)]
    out.targets = [views.targets[i] for i in index]
    out.train = train
    return out
