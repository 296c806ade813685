"""Calibration: does a predicted probability of 0.9 come true nine times in ten?

Expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks"):
predictions are binned by their top-1 confidence into equal-width bins, and ECE is the
mean gap between each bin's accuracy and its mean confidence, weighted by the bin's share
of the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 15  # Guo et al.'s choice, and the usual one since


@dataclass
class Calibration:
    """ECE and the per-bin figures behind the reliability diagram."""

    ece: float
    edges: np.ndarray  # (bins + 1,)
    confidence: np.ndarray  # mean confidence per bin (nan where empty)
    accuracy: np.ndarray  # accuracy per bin (nan where empty)
    counts: np.ndarray  # images per bin

    def to_dict(self) -> dict[str, Any]:
        """JSON form (empty bins as null)."""

        def clean(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else round(float(v), 6) for v in a]

        return {
            "ece": self.ece,
            "bins": len(self.counts),
            "method": "top-1 confidence, equal-width bins (Guo et al. 2017)",
            "bin_confidence": clean(self.confidence),
            "bin_accuracy": clean(self.accuracy),
            "bin_counts": self.counts.tolist(),
        }


def calibration(probs: np.ndarray, y_true: np.ndarray, bins: int = BINS) -> Calibration:
    """Calibration of ``probs`` (N, K) against labels ``y_true`` (N,).

    >>> c = calibration(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]))
    >>> round(c.ece, 3)  # |1 - 0.9| / 2 + |0 - 0.6| / 2
    0.35
    """
    confidence = probs.max(1)
    correct = (probs.argmax(1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds confidences in (edges[i], edges[i + 1]]; confidence is never below 1/K > 0
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        conf = np.bincount(which, confidence, minlength=bins) / counts
        acc = np.bincount(which, correct, minlength=bins) / counts
    gaps = np.nan_to_num(np.abs(acc - conf)) * counts
    ece = float(gaps.sum() / max(len(y_true), 1))
    return Calibration(ece, edges, conf, acc, counts)
