"""Uncertainty on small-data numbers: confidence intervals for an accuracy."""

from __future__ import annotations

CONFIDENCE = 0.95


def wilson_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for ``correct`` successes out of ``n`` (scipy's implementation).

    Chosen over the normal ("Wald") interval because it stays inside [0, 1] and keeps its
    coverage near 0% and 100% accuracy, where small validation sets often sit.

    >>> [round(x, 3) for x in wilson_interval(147, 153)]
    [0.917, 0.982]
    """
    if n <= 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))
