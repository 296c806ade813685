"""LogME and leave-one-out k-NN against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from headstart.recommend.transferability import (
    _svd,
    evidence,
    knn_loo_accuracy,
    logme,
    max_evidence,
)


def _direct(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, F F^T / alpha + I / beta): the marginal likelihood, computed directly."""
    cov = f @ f.T / alpha + np.eye(len(y)) / beta
    return float(multivariate_normal(np.zeros(len(y)), cov).logpdf(y))


@pytest.mark.parametrize(("n", "d"), [(40, 6), (12, 30)])  # more samples than features, fewer
def test_the_evidence_is_the_gaussian_marginal_likelihood(n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(n, d))
    y = (rng.random(n) < 0.4).astype(float)
    u, sigma = _svd(f)
    for alpha, beta in [(1.0, 1.0), (0.3, 5.0), (20.0, 0.7)]:
        ours = evidence(u.T @ y, sigma, float(y @ y), n, d, alpha, beta)
        assert ours == pytest.approx(_direct(f, y, alpha, beta), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("n", "d"), [(60, 8), (15, 40)])
def test_the_fixed_point_maximises_the_evidence(n: int, d: int) -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(n, d))
    y = (f[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(float)
    u, sigma = _svd(f)
    best, alpha, beta = max_evidence(u.T @ y, sigma, float(y @ y), n, d)
    options = {"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000}
    brute = minimize(lambda p: -_direct(f, y, np.exp(p[0]), np.exp(p[1])), x0=[0.0, 0.0],
                     method="Nelder-Mead", options=options)  # fmt: skip
    assert best == pytest.approx(-brute.fun, abs=1e-5)
    assert best == pytest.approx(_direct(f, y, alpha, beta), rel=1e-9)


def test_logme_ranks_informative_features_above_noise() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, size=150)
    centres = rng.normal(size=(3, 16)) * 3
    good = centres[labels] + rng.normal(size=(150, 16))
    noise = rng.normal(size=(150, 16))
    assert logme(good, labels) > logme(noise, labels)
    assert logme(good, labels, num_classes=4) == pytest.approx(logme(good, labels))  # absent


def _knn_brute(f: np.ndarray, y: np.ndarray, k: int, groups: np.ndarray | None = None) -> float:
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    g = np.arange(len(y)) if groups is None else groups
    correct = 0
    for i in range(len(y)):
        others = [j for j in range(len(y)) if g[j] != g[i]]
        sims = sorted(others, key=lambda j: -float(f[i] @ f[j]))[:k]
        counts = np.bincount(y[sims], minlength=y.max() + 1)
        top = np.flatnonzero(counts == counts.max())
        pred = top[0] if len(top) == 1 else next(int(y[j]) for j in sims if y[j] in top)
        correct += pred == y[i]
    return correct / len(y)


def test_knn_loo_matches_a_brute_force_vote_and_sees_structure() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=80)
    clustered = rng.normal(size=(4, 10))[labels] * 2 + rng.normal(size=(80, 10))
    noise = rng.normal(size=(80, 10))
    for f in (clustered, noise):
        for k in (1, 4, 5):
            assert knn_loo_accuracy(f, labels, k) == pytest.approx(_knn_brute(f, labels, k))
    assert knn_loo_accuracy(clustered, labels) > 0.9 > 0.5 > knn_loo_accuracy(noise, labels)


def test_knn_with_groups_leaves_a_whole_group_out() -> None:
    """Twins (two noisy copies of one point, a subject's two images) make plain leave-one-out
    nearly perfect on random labels; leaving the group out sees through them."""
    rng = np.random.default_rng(4)
    labels = np.repeat(rng.integers(0, 2, size=40), 2)
    twins = np.repeat(rng.normal(size=(40, 10)), 2, axis=0) + 0.01 * rng.normal(size=(80, 10))
    groups = np.repeat(np.arange(40), 2)
    for k in (1, 5):
        expect = _knn_brute(twins, labels, k, groups)
        assert knn_loo_accuracy(twins, labels, k, groups=groups) == pytest.approx(expect)
    assert knn_loo_accuracy(twins, labels, 1) == 1.0
    assert knn_loo_accuracy(twins, labels, 1, groups=groups) < 0.75


def test_multi_task_scores_average_the_tasks_on_their_labelled_images() -> None:
    """A two-task CSV is judged by both tasks (as its mean task accuracy is), each on the
    images that carry its label; a single task is scored as before."""
    from headstart.recommend.evidence import mean_over_tasks

    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 4))
    easy = (f[:, 0] > 0).astype(int)  # read off one feature
    noise = rng.integers(0, 3, size=60)
    noise[::7] = -1  # unlabelled for this task
    targets = [{"easy": int(a), "noise": int(b)} for a, b in zip(easy, noise, strict=True)]
    known = noise >= 0
    expected = (knn_loo_accuracy(f, easy) + knn_loo_accuracy(f[known], noise[known])) / 2
    assert mean_over_tasks(knn_loo_accuracy, f, targets) == pytest.approx(expected)
    assert knn_loo_accuracy(f, easy) > 0.8
    assert mean_over_tasks(knn_loo_accuracy, f, targets) < 0.7  # the noise task counts
    assert mean_over_tasks(logme, f, list(easy)) == pytest.approx(logme(f, easy))


def test_features_that_interpolate_the_labels_give_the_evidences_limit() -> None:
    """As many features as images (a tiny backbone's on 16 images): the labels lie in the
    features' span, beta runs off to infinity, and the fixed point used to divide by zero
    once gamma rounded to n. Taken from such a run: the spectrum and the label projection."""
    sigma = np.array([3506.7, 44.9, 36.0, 19.9, 15.5, 13.9, 11.0, 8.36, 7.87, 7.35, 6.33, 5.04,
                      4.18, 3.90, 3.32, 2.74])  # fmt: skip
    z = np.array([-1.988, -1.062, 1.494, 0.617, 0.199, 0.16, 0.163, -0.342, 0.012, 0.082, 0.075,
                  -0.275, -0.093, -0.002, -0.017, -0.038])  # fmt: skip
    best, alpha, beta = max_evidence(z, sigma, float(z @ z), 16, 1280)
    limit = evidence(z, sigma, float(z @ z), 16, 1280, alpha, 1e9)  # float64 holds it there
    assert best == pytest.approx(limit, abs=1e-3) and beta > 1e6
