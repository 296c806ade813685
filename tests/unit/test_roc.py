"""ROC AUC and DeLong's interval, checked against sklearn and a brute-force pairwise count,
and the interval's coverage checked by simulation."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from headstart.evaluation.roc import auc_interval, delong, roc_auc


def brute_force(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """DeLong's AUC and standard error from the full table of positive-negative pairs."""
    pos, neg = scores[positive], scores[~positive]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    var = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    return float(psi.mean()), float(np.sqrt(var))


def test_delong_matches_sklearn_and_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    for trial in range(5):
        positive = rng.random(80) < 0.3
        scores = np.round(rng.normal(positive * (trial / 2), 1), 1)  # rounded: ties
        auc, se = delong(scores, positive)
        assert np.isclose(auc, roc_auc_score(positive, scores))
        assert np.allclose((auc, se), brute_force(scores, positive))


def test_the_interval_covers_the_true_auc_about_95_times_in_100() -> None:
    rng = np.random.default_rng(1)
    true_auc = 0.8413  # Phi(sqrt(2) / sqrt(2)): positives N(sqrt(2), 1), negatives N(0, 1)
    hits = 0
    for _ in range(400):
        positive = np.r_[np.ones(40, bool), np.zeros(60, bool)]
        scores = rng.normal(positive * np.sqrt(2), 1)
        lo, hi = auc_interval(*delong(scores, positive))
        hits += lo <= true_auc <= hi
    assert 0.91 <= hits / 400 <= 0.98


def test_binary_scores_the_second_class_and_more_classes_one_against_the_rest() -> None:
    y = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.2, 0.8], [0.7, 0.3]])
    roc = roc_auc(probs, y, ["ants", "bees"])
    assert list(roc.auc) == ["bees"] and np.isclose(roc.headline, roc_auc_score(y, probs[:, 1]))
    assert "positive class 'bees'" in roc.text()
    y3 = np.array([0, 1, 2, 2, 1, 0])
    p3 = np.eye(3)[[0, 1, 2, 1, 1, 2]] * 0.8 + 0.2 / 3
    three = roc_auc(p3, y3, ["a", "b", "c"])
    assert np.isclose(three.headline, roc_auc_score(y3, p3, multi_class="ovr"))
    assert roc_auc(probs, np.zeros(5, int), ["ants", "bees"]) is None  # one class only
    y20 = np.arange(40) % 20
    p20 = np.eye(20)[y20] * 0.5 + np.random.default_rng(0).random((40, 20))
    many = roc_auc(p20, y20, [f"c{k}" for k in range(20)])
    assert len(many.auc) == 20 and "the 12 lowest: " in many.text()
    listed = many.text().split("the 12 lowest: ")[1].rstrip(")").split(", ")
    twelfth = sorted(many.auc.values())[11]
    assert len(listed) == 12 and max(float(e.split()[1]) for e in listed) <= twelfth + 5e-4
    apart = roc_auc(np.eye(2)[y], y, ["ants", "bees"])  # every positive above every negative
    assert apart.headline == 1.0 and "classes apart: no interval" in apart.text()
