"""Choosing a multi-layer probe head's stages and weight decay on the training data itself.

A linear head over thousands of multi-layer features overfits a few hundred or thousand
images unless it is regularised hard, and how hard depends on the data (on elpv a logistic
regression scored 79% with strong L2 and 75% with weak). Which stages help depends on the
data too: far from ImageNet the early stages carry the signal, on photos like ImageNet's the
last stage is the right abstraction and the others only add ways to overfit. The head
is solved in seconds on cached features (``training.lbfgs``), so both are chosen by k-fold
cross-validation on the training images: each candidate is fitted on k-1 folds and scored
on the held-out fold; the validation split is not touched, so its accuracy stays an honest
estimate.

The rule is the one-standard-error rule (Breiman et al. 1984; Hastie et al., *Elements of
Statistical Learning* 7.10): the fewest stages whose best cross-validated accuracy is within
one binomial standard error of the best candidate's, then that stage set's best penalty
(ties to the stronger). More stages must earn their place by more than noise.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from headstart.cache.features import FeatureViews
from headstart.errors import ConfigError
from headstart.multilayer import StageTaps
from headstart.training.device import to_device
from headstart.training.history import FitResult
from headstart.training.lbfgs import (
    HeadsCopy,
    accuracy,
    fit_heads,
    head_logits,
    logits_accuracy,
    target_tensors,
)
from headstart.training.loop import validation_stats
from headstart.training.objective import Objective

# L2 penalties per sample (scikit-learn's 1 / (C n)), strongest first: each fit starts from
# the previous one's solution. Standardised multi-layer features (unit variance each):
PENALTIES = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
# The last layer's pooled features as the backbone gives them (not standardised: their
# scale, and so the strength of a penalty, is the backbone's) reach further down: on
# hand-sign digits, and on ten of them a class, cross-validation chose 0.001 and 0.0003,
# beyond the grid above. The fine-tune's warm head keeps the stronger grid: a warm start
# wants a modest head, not the sharpest one.
LAST_LAYER_PENALTIES = (*PENALTIES, 0.001, 0.0003)
FOLDS = 3
POOLED = "pooled"  # the one "stage" of a last-layer probe: the backbone's pooled features


def stage_counts(stages: int) -> tuple[int, ...]:
    """The nested stage sets tried, as numbers of last stages: the last stage alone (the
    plain probe's abstraction), the later half, and all of them.

    >>> stage_counts(9)
    (1, 5, 9)
    """
    return tuple(sorted({1, (stages + 1) // 2, stages}))


@dataclass(frozen=True)
class Choice:
    """The chosen stages and L2 penalty, and the cross-validated accuracy of every
    candidate, keyed by (number of last stages read, penalty)."""

    stages: int
    l2: float
    scores: dict[tuple[int, float], float]
    folds: int
    images: int
    stage_names: tuple[str, ...]
    losses: dict[tuple[int, float], float] = field(default_factory=dict)  # when chosen by them

    @property
    def standard_error(self) -> float:
        """The binomial standard error of the best cross-validated accuracy."""
        return standard_error(max(self.scores.values()), self.images)

    @property
    def first_read(self) -> str:
        """The earliest stage the chosen set reads."""
        return self.stage_names[-self.stages]

    def per_stage_count(self) -> str:
        """The best cross-validated accuracy of each stage set, ``last 1: 0.7589, ...``."""
        return ", ".join(
            f"last {k}: {max(a for (kk, _), a in self.scores.items() if kk == k):.4f}"
            for k in sorted({k for k, _ in self.scores})
        )

    def line(self) -> str:
        """The console line."""
        per_k = self.per_stage_count()
        cv = f"chosen by {self.folds}-fold cross-validation on the training features"
        if self.losses:  # the last layer's features: only the penalty, by log-loss
            return (
                f"head: L2 {self.l2:g}; {cv} (lowest log-loss, {self.losses[1, self.l2]:.4f}; "
                f"accuracy {self.scores[1, self.l2]:.4f})"
            )
        names = self.stage_names[-self.stages :]
        read = names[0] if len(names) == 1 else f"{names[0]} to {names[-1]}"
        return (
            f"head: reads {self.stages} of {len(self.stage_names)} stages ({read}), L2 "
            f"{self.l2:g}; {cv} ({per_k}; fewest stages within one standard error, "
            f"{self.standard_error:.4f}, of the best)"
        )

    def to_dict(self) -> dict:
        """For the manifest."""
        return {
            "stages": self.stages,
            "l2": self.l2,
            "folds": self.folds,
            "standard_error": self.standard_error,
            "chosen_by": "log-loss" if self.losses else "accuracy",
            "scores": [
                {"stages": k, "l2": l2, "accuracy": a, "log_loss": self.losses.get((k, l2))}
                for (k, l2), a in self.scores.items()
            ],
        }


def standard_error(accuracy: float, images: int) -> float:
    """The binomial standard error of an accuracy measured on ``images`` images."""
    return float(np.sqrt(accuracy * (1 - accuracy) / max(1, images)))


def pick(scores: dict[tuple[int, float], float], images: int) -> tuple[int, float]:
    """The one-standard-error rule over (stages, penalty) candidates: the fewest stages
    within one error of the best, then that set's best penalty (ties to the stronger).

    >>> pick({(1, 0.1): 0.90, (9, 0.1): 0.91}, 200)  # 1 point is within noise on 200
    (1, 0.1)
    >>> pick({(1, 0.1): 0.70, (9, 0.1): 0.78, (9, 1.0): 0.78}, 2000)
    (9, 1.0)
    """
    best = max(scores.values())
    k = min(k for (k, _), a in scores.items() if a >= best - standard_error(best, images))
    top = max(a for (kk, _), a in scores.items() if kk == k)
    l2 = max(l2 for (kk, l2), a in scores.items() if kk == k and a >= top - 1e-9)
    return k, l2


def largest_class(labels: np.ndarray, groups: Sequence[int] | None = None) -> int:
    """How many images the largest class has (labels below 0 are blank); with ``groups``
    (rows that are augmented views of one image), images, not rows."""
    ids = range(len(labels)) if groups is None else groups
    images = {(int(label), g) for label, g in zip(labels, ids) if label >= 0}
    return max(Counter(label for label, _ in images).values(), default=0)


def choose_head(
    model: nn.Module,
    taps: StageTaps | None,
    raw: torch.Tensor,
    targets: Sequence[int | Mapping[str, int]],
    objective: Objective,
    seed: int,
    penalties: tuple[float, ...] = PENALTIES,
    folds: int = FOLDS,
    groups: Sequence[int] | None = None,
    by_loss: bool = False,
) -> Choice:
    """Cross-validate stage sets x ``penalties`` on the raw training features ``raw``
    (N, D; standardised by ``taps``) with copies of ``model``'s heads fitted by L-BFGS;
    leaves ``taps`` reading the chosen stages. Without ``taps`` (the last layer's pooled
    features, as the backbone gives them) only the penalty is chosen. ``groups``: the image
    each row comes from, when rows are augmented views; folds keep an image's views
    together, and the standard error counts images, not views. ``by_loss``: the penalty
    is the one of lowest cross-validated log-loss, not of highest accuracy (the last-layer
    probe: with few images accuracy ties across penalties, and the ties went to the
    strongest, an under-confident head; ants/bees' ECE 0.119 by accuracy, 0.036 by
    log-loss). The multi-layer probe keeps accuracy: there log-loss chose a stronger
    penalty on elpv and lost 1.9 points."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = target_tensors(targets)
    first = next(iter(y.values())).numpy()  # the first task's labels: what folds stratify by
    y = {t: v.to(raw.device) for t, v in y.items()}  # beside the features (a GPU's, say)
    images = len(first) if groups is None else len(set(groups))
    folds = min(folds, largest_class(first, groups))  # tiny data: as many folds as it allows
    if folds < 2:
        raise ConfigError(
            f"ConfigError: {images} training image(s) with no class labelled twice: too few to "
            "choose the head's penalty by cross-validation. Label at least two images of a "
            "class (ideally dozens of each)."
        )
    with warnings.catch_warnings():  # a class rarer than the folds sits out of some: fine
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        if groups is None:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            splits = list(splitter.split(np.zeros(len(first)), first))
        else:  # an image's augmented views stay in one fold: no view leaks into its own test
            grouped = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            splits = list(grouped.split(np.zeros(len(first)), first, groups))
    scores: dict[tuple[int, float], float] = {}
    losses: dict[tuple[int, float], float] = {}
    names = tuple(taps.stage_names) if taps is not None else (POOLED,)
    for stages in stage_counts(len(names)):
        x = raw
        if taps is not None:
            taps.use_top(stages)
            with torch.no_grad():
                x = taps.normalize(raw)
        accs: dict[float, list[float]] = {l2: [] for l2 in penalties}
        nll: dict[float, list[float]] = {l2: [] for l2 in penalties}
        for tr, va in splits:
            m = HeadsCopy(model)  # one warm-started path of penalties per fold
            tr_t, va_t = (torch.as_tensor(i, device=raw.device) for i in (tr, va))
            yt, yv = ({t: v[i] for t, v in y.items()} for i in (tr_t, va_t))
            for l2 in sorted(penalties, reverse=True):
                fit_heads(m, x[tr_t], yt, objective, l2)
                with torch.no_grad():
                    logits = head_logits(m, x[va_t])
                accs[l2].append(logits_accuracy(logits, yv, objective))
                if by_loss:
                    nll[l2].append(float(objective.loss(logits, yv)))
        for l2 in penalties:
            scores[(stages, l2)] = float(np.mean(accs[l2]))
            if by_loss:
                losses[(stages, l2)] = float(np.mean(nll[l2]))
    stages, l2 = pick(scores, images)
    if by_loss:
        l2 = min(penalties, key=lambda p: (losses[stages, p], -p))
    if taps is not None:
        taps.use_top(stages)
    return Choice(stages, l2, scores, folds, images, names, losses)


def fit_head_by_cv(
    model: nn.Module,
    taps: StageTaps | None,
    raw: torch.Tensor,
    targets: Sequence[int | Mapping[str, int]],
    objective: Objective,
    seed: int,
    penalties: tuple[float, ...] = PENALTIES,
    groups: Sequence[int] | None = None,
    by_loss: bool = False,
) -> tuple[Choice, float, float]:
    """:func:`choose_head`, then ``model``'s heads fitted on every training row (``raw``,
    on the model's device) along the same path of penalties; returns the choice, the
    training loss and the training accuracy."""
    choice = choose_head(
        model, taps, raw, targets, objective, seed, penalties, groups=groups, by_loss=by_loss
    )
    return (choice, *fit_path(model, taps, raw, targets, objective, penalties, choice.l2))


def fit_path(
    model: nn.Module,
    taps: StageTaps | None,
    raw: torch.Tensor,
    targets: Sequence[int | Mapping[str, int]],
    objective: Objective,
    penalties: tuple[float, ...],
    l2: float,
) -> tuple[float, float]:
    """``model``'s heads fitted on every training row (``raw``, on the model's device)
    along the path of ``penalties`` the folds took, strongest first, down to ``l2``; returns
    the training loss and the training accuracy."""
    y = {t: v.to(raw.device) for t, v in target_tensors(targets).items()}
    with torch.no_grad():
        x = taps.normalize(raw) if taps is not None else raw
    loss = float("nan")
    for penalty in sorted(penalties, reverse=True):
        loss = fit_heads(model, x, y, objective, penalty)
        if penalty == l2:
            break
    return loss, accuracy(model, x, y, objective)


def fit_last_layer_head(
    model: nn.Module,
    raw: torch.Tensor,
    targets: Sequence[int | Mapping[str, int]],
    objective: Objective,
    seed: int,
    groups: Sequence[int] | None = None,
) -> tuple[Choice, float, float]:
    """:func:`fit_head_by_cv` as the probe fits the last layer's pooled features (and
    ``recommend`` measures them): the longer penalty grid, chosen by log-loss."""
    return fit_head_by_cv(
        model, None, raw, targets, objective, seed, LAST_LAYER_PENALTIES, groups, by_loss=True
    )


def fit_probe_head(
    model: nn.Module,
    taps: StageTaps | None,
    train: FeatureViews,
    val: DataLoader,
    tail: Callable[[torch.Tensor], torch.Tensor],
    objective: Objective,
    device: torch.device,
    seed: int,
    subjects: Sequence[int] | None = None,
) -> tuple[FitResult, Choice]:
    """The probe's training on cached features: the penalty (and with ``taps``, the
    multi-layer probe's, the stages) chosen by :func:`choose_head`, then the heads fitted by
    L-BFGS on every training image and scored on ``val``; one "epoch" in the history. With
    cached augmented views (``--cached-views K``) every view is a training row of its own
    (feature-space augmentation), folds grouped by image; with ``subjects`` (``--group``:
    each training image's group, :meth:`~headstart.data.DataSplit.group_codes`), by subject,
    as the validation split is."""
    start = time.perf_counter()
    to_device(model, device)
    n, views = train.features.shape[:2]
    raw = train.features.flatten(0, 1).to(device)
    targets = [t for t in train.targets for _ in range(views)]
    if subjects is not None:
        groups = [code for code in subjects for _ in range(views)]
    else:
        groups = [i for i in range(n) for _ in range(views)] if views > 1 else None
    if taps is None:
        choice, loss, train_acc = fit_last_layer_head(model, raw, targets, objective, seed, groups)
    else:
        choice, loss, train_acc = fit_head_by_cv(model, taps, raw, targets, objective, seed,
                                                 groups=groups)  # fmt: skip
    fitted = time.perf_counter() - start
    with model.reading_features(tail):  # type: ignore[operator]
        stats = validation_stats(model, val, device, objective, 1, loss, train_acc)
    stats = replace(stats, seconds=time.perf_counter() - start, train_seconds=fitted)
    return FitResult([stats], 1, "fitted to convergence by L-BFGS"), choice
