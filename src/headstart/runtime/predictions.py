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

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"source", "predictions": {task: [{"label", "probability"}]}}``; the
        source is printable (undecodable bytes of a file name as ``\\xNN``)."""
        if self.error is not None:
            return {"source": display(self.source), "error": display(self.error)}
        return {
            "source": display(self.source),
            "predictions": {
                task: [{"label": lbl, "probability": round(p, 6)} for lbl, p in pairs]
                for task, pairs in self.top.items()
            },
        }


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
