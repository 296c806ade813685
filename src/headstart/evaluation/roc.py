"""ROC AUC with its confidence interval: the figure medical and defect-detection papers report.

Accuracy depends on the 0.5 threshold and on how common each class is in the evaluated set;
the area under the ROC curve does not: it is the probability that a random positive image
scores above a random negative one. For a two-class task the positive class is the second
(``bees``, ``defective``, ``1``: classes sort so); for more classes each class is scored one
against the rest, and their mean is the macro AUC.

The interval is DeLong's (DeLong, DeLong and Clarke-Pearson 1988): the variance of the
Mann-Whitney statistic from each image's placement among the other class, computed from
mid-ranks (Sun and Xu 2014), then a normal interval on the logit scale so it stays in (0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

from headstart.stats import CONFIDENCE

SHOWN = 12  # classes listed on the terminal line; evaluation.json holds them all


def delong(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """AUC of ``scores`` for the boolean ``positive`` labels, and DeLong's standard error.

    >>> auc, se = delong(np.array([0.9, 0.8, 0.3, 0.2, 0.7]), np.array([1, 1, 0, 0, 0], bool))
    >>> round(auc, 4), round(se, 4)
    (1.0, 0.0)
    """
    pos, neg = scores[positive], scores[~positive]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("an AUC needs images of both the class and the rest")
    ranks = rankdata(np.concatenate([pos, neg]))  # mid-ranks: ties count a half
    v10 = (ranks[:m] - rankdata(pos)) / n  # per positive: share of negatives below it
    v01 = 1.0 - (ranks[m:] - rankdata(neg)) / m  # per negative: share of positives above it
    auc = float(v10.mean())
    var = (v10.var(ddof=1) if m > 1 else 0.0) / m + (v01.var(ddof=1) if n > 1 else 0.0) / n
    return auc, float(np.sqrt(var))


def auc_interval(auc: float, se: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A normal interval for ``auc`` on the logit scale (so it stays within 0 and 1).

    >>> [round(x, 3) for x in auc_interval(0.9, 0.03)]
    [0.824, 0.945]
    """
    if se == 0.0 or auc in (0.0, 1.0):
        return auc, auc
    z = norm.ppf(0.5 + confidence / 2)
    logit = np.log(auc / (1 - auc))
    half = z * se / (auc * (1 - auc))
    low, high = 1 / (1 + np.exp(-(logit - half))), 1 / (1 + np.exp(-(logit + half)))
    return float(low), float(high)


@dataclass
class RocAuc:
    """One task's ROC AUC: per class scored against the rest (for two classes, the second
    class only), with DeLong intervals; classes absent from the images have none."""

    classes: list[str]
    auc: dict[str, float]
    ci: dict[str, tuple[float, float]]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # false and true positive rates

    @property
    def headline(self) -> float:
        """The binary task's AUC, or the macro mean over classes one against the rest."""
        return float(np.mean(list(self.auc.values())))

    def text(self) -> str:
        """One line as the terminal shows it."""
        if len(self.classes) == 2:
            c = self.classes[1]
            lo, hi = self.ci[c]
            ci = f"95% CI {lo:.3f}-{hi:.3f}, DeLong" if hi > lo else "classes apart: no interval"
            return f"ROC AUC {self.auc[c]:.4f} ({ci}; positive class {c!r})"
        each = ", ".join(f"{c} {self.auc[c]:.3f}" for c in self.shown)
        lowest = f"the {SHOWN} lowest: " if len(self.auc) > SHOWN else ""
        return f"ROC AUC one-vs-rest, macro {self.headline:.4f} ({lowest}{each})"

    @property
    def shown(self) -> list[str]:
        """The classes the terminal and the curve show: every scored one, or past
        ``SHOWN`` the ``SHOWN`` of lowest AUC, lowest first."""
        if len(self.auc) <= SHOWN:
            return list(self.auc)
        return sorted(self.auc, key=lambda c: self.auc[c])[:SHOWN]

    def to_dict(self) -> dict[str, object]:
        """JSON form: the headline, the line the terminal prints, and each scored class's AUC
        and interval."""
        return {
            "auc": self.headline,
            "summary": self.text(),
            "per_class": {c: {"auc": a, "ci": list(self.ci[c])} for c, a in self.auc.items()},
        }


def roc_auc(probs: np.ndarray, y_true: np.ndarray, classes: list[str]) -> RocAuc | None:
    """The task's :class:`RocAuc`, or None when fewer than two classes are present."""
    from sklearn.metrics import roc_curve

    scored = [1] if len(classes) == 2 else range(len(classes))
    auc, ci, curves = {}, {}, {}
    for k in scored:
        positive = y_true == k
        if positive.all() or not positive.any():
            continue
        a, se = delong(probs[:, k], positive)
        auc[classes[k]], ci[classes[k]] = a, auc_interval(a, se)
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        curves[classes[k]] = (fpr, tpr)
    return RocAuc(list(classes), auc, ci, curves) if auc else None
