"""Decision thresholds for two-class tasks: a rare "yes" decided below a probability of 0.5.

A yes/no task whose "yes" is rare (a finding on a chest X-ray, a defect on a production
line, each label of a multi-label file) rarely reaches a probability of 0.5, so the argmax
answers "no" nearly always: accurate, and useless for finding the positives. Multi-label
work picks a threshold per label on held-out images instead (CheXNet and the NIH
ChestX-ray14 papers report F1 at such thresholds). ``headstart evaluate RUN --thresholds
f1`` picks, for every two-class task, the probability of its positive class (the second
class, as ROC AUC takes it: ``yes``, ``1``, ``defective``) above which the F1 of that class on
the run's validation images is highest, and stores it in the manifest; evaluate, predict,
serve and exports made afterwards decide with it. The probabilities themselves are left
as they are.

The figures "after" are cross-fitted, as the temperature's are: the threshold applied to
each half of the images is picked on the other half, so they are not flattered by picking
and scoring on the same images. A threshold is kept only where that cross-fitted F1 beats
the argmax's: on a common class the argmax is often already the best rule, and a threshold
picked on a few hundred images would only move decisions by noise.

A later ``--calibrate`` changes the probabilities, not the decisions: the stored thresholds
are moved with the temperature (a threshold is a margin between the two logits, which the
temperature divides).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headstart.data import MISSING
from headstart.errors import ConfigError
from headstart.manifest import rounded
from headstart.runtime.predictions import decide
from headstart.training.checkpoint import LoadedRun, as_loaded

if TYPE_CHECKING:  # the type only: evaluate is imported where it runs
    from headstart.evaluation.evaluate import ValidationLogits

CRITERIA = ("f1", "none")  # none: remove the stored thresholds
EDGE = 1e-7  # a stored threshold lies in [EDGE, 1 - EDGE]: strictly between 0 and 1


def _inside(t: float) -> float:
    return float(np.clip(t, EDGE, 1 - EDGE))


def f1_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold on ``scores`` whose decisions ``scores >= threshold`` give the highest
    F1 of the ``positive`` class; halfway between the lowest score taken and the next lower
    one, so that scores just below the chosen images count as they do. 0.5 when the images
    hold no positive.

    >>> f1_threshold(np.array([0.1, 0.2, 0.3, 0.45, 0.9]), np.array([0, 0, 1, 1, 1], bool))
    0.25
    """
    if not positive.any():
        return 0.5
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], positive[order].astype(float)
    last = np.r_[s[1:] != s[:-1], True]  # taking every image down to a run of equal scores
    tp = np.cumsum(hits)[last]
    taken = (np.arange(len(s)) + 1)[last]
    f1 = 2 * tp / (taken + positive.sum())
    k = int(np.argmax(f1))
    chosen = s[last][k]
    below = s[last][k + 1] if k + 1 < last.sum() else 0.0
    return _inside((chosen + below) / 2)  # saturated scores of 0 or 1 still leave a threshold


@dataclass(frozen=True)
class Scores:
    """F1, recall and precision of the positive class for some decisions."""

    f1: float
    recall: float
    precision: float

    @classmethod
    def of(cls, decided: np.ndarray, positive: np.ndarray) -> Scores:
        """The scores of boolean decisions against the boolean truth."""
        tp = float((decided & positive).sum())
        recall = tp / max(positive.sum(), 1)
        precision = tp / max(decided.sum(), 1)
        return cls(2 * tp / max(decided.sum() + positive.sum(), 1), recall, precision)


def cross_fitted(scores: np.ndarray, positive: np.ndarray, seed: int = 0) -> Scores:
    """The scores of decisions whose threshold, on each half of the images, was picked on
    the other half."""
    order = np.random.default_rng(seed).permutation(len(scores))
    halves = [order[: len(scores) // 2], order[len(scores) // 2 :]]
    decided = np.zeros(len(scores), bool)
    for fit_on, apply_to in (halves, halves[::-1]):
        t = f1_threshold(scores[fit_on], positive[fit_on])
        decided[apply_to] = scores[apply_to] >= t
    return Scores.of(decided, positive)


@dataclass(frozen=True)
class ThresholdFit:
    """One task's threshold and what it does to its positive class's F1."""

    task: str
    positive: str
    threshold: float
    images: int
    positives: int
    before: Scores  # the argmax's decisions (a threshold of 0.5)
    after: Scores  # cross-fitted (see the module docstring)

    @property
    def kept(self) -> bool:
        """Whether the threshold beat the argmax on the cross-fitted F1 (and so is stored)."""
        return self.after.f1 > self.before.f1

    def line(self) -> str:
        """The console line."""
        name = "" if self.task == "class" else f"task {self.task}: "
        b, a = self.before, self.after
        return (
            f"{name}decide {self.positive!r} at probability >= {self.threshold:.3f} (best F1 on "
            f"{self.images} validation images, {self.positives} {self.positive!r}): F1 "
            f"{b.f1:.3f} -> {a.f1:.3f}, recall {b.recall:.3f} -> {a.recall:.3f}, precision "
            f"{b.precision:.3f} -> {a.precision:.3f} (cross-fitted halves)"
            + ("" if self.kept else "\n  not kept: no better than the most probable class here")
        )


def threshold_run(
    run: str | Path | LoadedRun,
    criterion: str = "f1",
    *,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
    logits: ValidationLogits | None = None,
) -> list[ThresholdFit]:
    """Pick a threshold per two-class task on the run's validation split (``criterion``
    ``f1``) and store those that beat the argmax in its manifest (``thresholds``; every fit
    in ``threshold_fit``), or remove them (``none``); returns the fits. ``logits``: the
    validation logits and targets of :func:`~headstart.evaluation.evaluate.raw_validation_logits`,
    when the caller has them already (divided here by the run's temperature). A loaded run
    is brought up to date with the stored manifest."""
    from headstart.evaluation.evaluate import divided, validation_scores

    if criterion not in CRITERIA:
        raise ConfigError(
            f"ConfigError: --thresholds {criterion!r}; choose one of {', '.join(CRITERIA)}."
        )
    run = as_loaded(run)
    manifest = {k: v for k, v in run.manifest.items() if k not in ("thresholds", "threshold_fit")}
    binary = [task for task, classes in run.tasks.items() if len(classes) == 2]
    if criterion == "f1" and not binary:
        shapes = ", ".join(f"{t} ({len(c)} classes)" for t, c in run.tasks.items())
        raise ConfigError(
            f"ConfigError: --thresholds sets the decision threshold of two-class tasks (yes/no "
            f"labels); {run.run_dir} has none: {shapes}. Its decisions stay the most probable "
            "class."
        )
    fits = []
    if criterion == "f1":
        if logits is None:
            probs, targets = validation_scores(run, device, batch_size=batch_size,
                                               progress=progress)  # fmt: skip
        else:
            probs, targets = divided(logits, run.model.temperature)
        for task in binary:
            keep = targets[task] != MISSING
            p, positive = probs[task][keep][:, 1], targets[task][keep] == 1
            fits.append(
                ThresholdFit(
                    task,
                    run.tasks[task][1],
                    f1_threshold(p, positive),
                    int(keep.sum()),
                    int(positive.sum()),
                    Scores.of(decide(probs[task][keep]) == 1, positive),
                    cross_fitted(p, positive),
                )
            )
        if any(f.kept for f in fits):
            manifest["thresholds"] = {f.task: f.threshold for f in fits if f.kept}
        manifest["threshold_fit"] = {f.task: rounded(asdict(f)) for f in fits}
    run.write_manifest(manifest)
    return fits


def moved_by_temperature(
    thresholds: dict[str, float], before: dict[str, float], after: dict[str, float]
) -> dict[str, float]:
    """The thresholds that make the decisions of logits divided by the ``after``
    temperatures those the ``thresholds`` made under the ``before`` ones (per task; 1 where
    none is given): the margin between the two logits stays where it was.

    >>> round(moved_by_temperature({"a": 0.25}, {}, {"a": 2.0})["a"], 6)  # logit(0.25) / 2
    0.366025
    """
    out = {}
    for task, t in thresholds.items():
        margin = before.get(task, 1.0) * np.log(t / (1 - t))
        out[task] = _inside(1 / (1 + np.exp(-margin / after.get(task, 1.0))))
    return out
