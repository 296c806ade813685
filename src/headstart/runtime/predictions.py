"""Predictions as the command line and the server give them: top-k labels and
probabilities per task, per image; and the image files a list of paths and folders names.
Torch-free (shared by the PyTorch predictor and the ONNX runtime)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import DataError
from headstart.imaging import IMAGE_EXTENSIONS
from headstart.text import display


@dataclass
class Prediction:
    """Top-k (label, probability) per task for one input, or the error that stopped it."""

    source: str
    top: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    error: str | None = None
    decisions: dict[str, Decision] = field(default_factory=dict)  # tasks with a threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"source", "predictions": {task: [{"label", "probability"}]}}``, and
        ``"decisions": {task: {"label", "threshold"}}`` for tasks decided by a threshold; the
        source is printable (undecodable bytes of a file name as ``\\xNN``)."""
        if self.error is not None:
            return {"source": display(self.source), "error": display(self.error)}
        return {"source": display(self.source), **answer_dict(self.top, self.decisions)}


@dataclass(frozen=True)
class Decision:
    """A two-class task's answer under its stored threshold (``evaluate --thresholds``):
    the positive class when its probability reaches ``threshold``, else the other."""

    label: str
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"label": self.label, "threshold": round(self.threshold, 6)}

    def text(self) -> str:
        """As ``predict`` prints it after the probabilities."""
        return f"-> {self.label} (threshold {self.threshold:.3f})"


def answer_dict(
    top: dict[str, list[tuple[str, float]]], decisions: dict[str, Decision]
) -> dict[str, Any]:
    """One image's answer as ``predict --json`` and the server write it:
    ``{"predictions": {task: [{"label", "probability"}]}}``, and ``"decisions"`` when a
    task has a threshold."""
    out: dict[str, Any] = {
        "predictions": {
            task: [{"label": lbl, "probability": round(p, 6)} for lbl, p in pairs]
            for task, pairs in top.items()
        }
    }
    if decisions:
        out["decisions"] = {t: d.to_dict() for t, d in decisions.items()}
    return out


def decide(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The class index decided for each row of (N, K) probabilities: the most probable
    class, or for a two-class task with a ``threshold``, the second (positive) class when
    its probability reaches it.

    >>> decide(np.array([[0.7, 0.3], [0.9, 0.1]]), 0.25).tolist()
    [1, 0]
    """
    if threshold is None:
        return probs.argmax(1)
    return (probs[:, 1] >= threshold).astype(np.int64)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded to the image files below them, sorted."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(
                f"DataError: {p} does not exist. Pass image files or folders of images."
            )
    return paths


def top_labels(probs: np.ndarray, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable (label, probability) pairs of one image's probabilities."""
    order = np.argsort(-probs, kind="stable")[: min(k, len(classes))]
    return [(classes[i], float(probs[i])) for i in order]
