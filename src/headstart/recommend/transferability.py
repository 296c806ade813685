"""Transferability scores of frozen features: LogME and leave-one-out k-NN accuracy.

**LogME** (You et al., ICML 2021, "LogME: Practical assessment of pre-trained models for
transfer learning"). For each class c, the one-hot column y of the labels is modelled as a
Bayesian linear regression on the features F (n x D): y = F w + noise, with the prior
w ~ N(0, 1/alpha I) and noise ~ N(0, 1/beta). The evidence, maximised over alpha and beta, is

    log p(y | F) = n/2 log beta + D/2 log alpha - n/2 log 2 pi
                   - beta/2 |F m - y|^2 - alpha/2 |m|^2 - 1/2 log |alpha I + beta F^T F|

with m the posterior mean. The score is that evidence per sample, averaged over classes:
higher means the features explain the labels linearly with less capacity. After one SVD
of F (F = U S V^T, sigma = S^2), every quantity depends on z = U^T y only, so each
fixed-point step (MacKay's updates: gamma = sum beta sigma / (alpha + beta sigma),
alpha = gamma / |m|^2, beta = (n - gamma) / |F m - y|^2) costs O(rank).

Written from the paper; tested against the Gaussian marginal likelihood computed directly
(``tests/unit/test_transferability.py``).

**Leave-one-out k-NN**: each training feature classified by the majority of its k nearest
others (cosine similarity), a non-parametric check that does not assume linearity.
"""

from __future__ import annotations

import math

import numpy as np

MAX_STEPS = 100
TOLERANCE = 1e-5


def _svd(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U restricted to the rank, sigma = squared singular values) of ``features``."""
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-10
    return u[:, keep], s[keep] ** 2


def evidence(
    z: np.ndarray, sigma: np.ndarray, y_sq: float, n: int, d: int, alpha: float, beta: float
) -> float:
    """The log evidence of one target column at (``alpha``, ``beta``), from its projection
    ``z = U^T y``, ``sigma`` and ``y_sq = |y|^2`` (see the module docstring)."""
    denom = alpha + beta * sigma
    m_sq = float(np.sum(beta**2 * sigma * z**2 / denom**2))
    residual = float(np.sum((alpha * z / denom) ** 2)) + (y_sq - float(np.sum(z**2)))
    logdet = float(np.sum(np.log(denom))) + (d - len(sigma)) * math.log(alpha)
    return (
        n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
        - beta / 2 * residual - alpha / 2 * m_sq - logdet / 2
    )  # fmt: skip


def max_evidence(
    z: np.ndarray, sigma: np.ndarray, y_sq: float, n: int, d: int
) -> tuple[float, float, float]:
    """(log evidence, alpha, beta) at MacKay's fixed point for one target column."""
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_STEPS):
        denom = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / denom))
        if n - gamma < 1e-6 * n:  # the features interpolate the labels (rank n: a few
            break  # images, many features); beta runs off to infinity, the evidence has settled
        m_sq = float(np.sum(beta**2 * sigma * z**2 / denom**2))
        residual = float(np.sum((alpha * z / denom) ** 2)) + (y_sq - float(np.sum(z**2)))
        new_alpha = gamma / max(m_sq, 1e-30)
        new_beta = (n - gamma) / max(residual, 1e-30)
        done = (
            abs(new_alpha - alpha) / alpha < TOLERANCE and abs(new_beta - beta) / beta < TOLERANCE
        )
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return evidence(z, sigma, y_sq, n, d, alpha, beta), alpha, beta


def logme(features: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> float:
    """LogME of ``features`` (n x D) for integer ``labels`` (n): the maximum evidence per
    sample, averaged over the one-hot columns of the classes present."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n, d = f.shape
    u, sigma = _svd(f)
    classes = range(num_classes) if num_classes is not None else np.unique(y)
    scores = []
    for c in classes:
        column = (y == c).astype(np.float64)
        if not column.any():
            continue
        z = u.T @ column
        scores.append(max_evidence(z, sigma, float(column @ column), n, d)[0] / n)
    return float(np.mean(scores))


def knn_loo_accuracy(
    features: np.ndarray, labels: np.ndarray, k: int = 5, groups: np.ndarray | None = None
) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote under cosine similarity; a tie
    goes to the tied class with the nearest neighbour. With ``groups`` (``--group``), leave
    one group out: an image's own subject never votes for it.

    >>> x = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    >>> knn_loo_accuracy(x, np.array([0, 0, 1, 1]), k=1)
    1.0
    >>> knn_loo_accuracy(x, np.array([0, 0, 1, 1]), k=1, groups=np.array([0, 0, 1, 1]))
    0.0
    """
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    y = np.asarray(labels).astype(np.int64)
    k = max(1, min(k, len(y) - 1))
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    if groups is not None:
        g = np.asarray(groups)
        sim[g[:, None] == g[None, :]] = -np.inf
        largest = int(np.unique(g, return_counts=True)[1].max())  # none of these votes
        k = max(1, min(k, len(y) - largest))
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    correct = 0
    for i, idx in enumerate(nearest):
        counts = np.bincount(y[idx], minlength=int(y.max()) + 1)
        tied = counts == counts.max()
        vote = next(int(y[j]) for j in idx if tied[y[j]])
        correct += vote == int(y[i])
    return correct / len(y)
