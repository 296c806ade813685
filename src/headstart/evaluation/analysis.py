"""Error analysis: the images worth a human look.

- top losses: evaluated images the model got wrong, most confident first;
- likely label errors: training images the model, after training on them, still assigns to
  another class. The probabilities are in-sample, so an image on this list resisted being
  learnt: mislabelled, ambiguous, or with the object hard to see. Those that the
  confident-learning rule (Northcutt et al. 2021, "Confident Learning") also flags are
  marked: another class clears its own threshold, the mean probability the model gives that
  class on the images labelled with it;
- near-duplicates across training and evaluated images (leakage): perceptual hashes
  (pHash, from the imagehash package) within a small Hamming distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from headstart.data.near_duplicates import DUPLICATE_DISTANCE, hamming

TOP_LOSSES = 16


@dataclass
class Suspect:
    """One image worth a look: its given label and what the model says."""

    path: str
    given: str
    predicted: str
    probability: float  # of the predicted class
    given_probability: float
    confident: bool = False  # label errors: the confident-learning rule flags it too

    def line(self) -> str:
        """One aligned line for the terminal."""
        return (
            f"{self.path}  given {self.given}, model says {self.predicted} {self.probability:.3f}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class DuplicatePair:
    """A training image and an evaluated image that look the same."""

    train: str
    evaluated: str
    distance: int  # Hamming distance between their perceptual hashes

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def _suspect(
    path: str, probs: np.ndarray, given: int, pred: int, classes: Sequence[str]
) -> Suspect:
    return Suspect(path, classes[given], classes[pred], float(probs[pred]), float(probs[given]))


def top_losses(
    paths: Sequence[str],
    probs: np.ndarray,
    y_true: np.ndarray,
    classes: Sequence[str],
    k: int = TOP_LOSSES,
    pred: np.ndarray | None = None,
) -> list[Suspect]:
    """The ``k`` wrongly predicted images with the highest loss (lowest probability of the
    true class), worst first; ``pred``: the decisions (default: the most probable class)."""
    pred = probs.argmax(1) if pred is None else pred
    wrong = np.flatnonzero(pred != y_true)
    given_p = probs[wrong, y_true[wrong]]
    order = wrong[np.argsort(given_p, kind="stable")][:k]
    return [_suspect(paths[i], probs[i], y_true[i], pred[i], classes) for i in order]


def likely_label_errors(
    paths: Sequence[str], probs: np.ndarray, y_given: np.ndarray, classes: Sequence[str]
) -> list[Suspect]:
    """Training images whose given label the model disagrees with, lowest probability of the
    given label first; ``confident`` marks those the confident-learning rule flags (another
    class clears its own threshold, the mean probability the model gives that class on the
    images labelled with it)."""
    k = probs.shape[1]
    thresholds = np.array(
        [probs[y_given == c, c].mean() if (y_given == c).any() else 1.0 for c in range(k)]
    )
    above = probs >= thresholds
    above[np.arange(len(probs)), y_given] = False
    pred = probs.argmax(1)
    idx = np.flatnonzero(pred != y_given)
    order = idx[np.argsort(probs[idx, y_given[idx]], kind="stable")]
    out = []
    for i in order:
        s = _suspect(paths[i], probs[i], y_given[i], pred[i], classes)
        s.confident = bool(above[i].any())
        out.append(s)
    return out


def near_duplicates(
    train: Sequence[str],
    train_hashes: np.ndarray,
    evaluated: Sequence[str],
    eval_hashes: np.ndarray,
    max_distance: int = DUPLICATE_DISTANCE,
) -> list[DuplicatePair]:
    """Pairs (training image, evaluated image) whose hashes differ in at most
    ``max_distance`` bits, closest first."""
    if not len(train_hashes) or not len(eval_hashes):
        return []
    distance = hamming(eval_hashes, train_hashes)
    ev, tr = np.nonzero(distance <= max_distance)
    pairs = [DuplicatePair(train[t], evaluated[e], int(distance[e, t])) for e, t in zip(ev, tr)]
    return sorted(pairs, key=lambda p: (p.distance, p.evaluated))
