"""Predict with an ONNX export and nothing of PyTorch: Pillow decodes (through the same
:func:`headstart.imaging.load_rgb` as training), NumPy preprocesses from the export's
metadata, ONNX Runtime runs the graph."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from headstart.imaging import ImageRefused, load_rgb
from headstart.runtime.onnx import OnnxEngine
from headstart.runtime.predictions import Prediction, top_labels
from headstart.runtime.preprocess import preprocess


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class OnnxPredictor:
    """An ``.onnx`` export ready to classify files (``headstart predict model.onnx ...``)."""

    def __init__(self, path: str | Path) -> None:
        self.engine = OnnxEngine(path)
        self.meta = self.engine.meta

    def predict_paths(
        self, paths: Sequence[str | Path], top_k: int = 3, batch_size: int = 32
    ) -> list[Prediction]:
        """Predict every file; an unreadable file yields a Prediction with ``error`` set."""
        results: list[Prediction] = []
        prep, tasks = self.meta["preprocessing"], self.meta["tasks"]
        for start in range(0, len(paths), batch_size):
            arrays, ok = [], []
            for p in paths[start : start + batch_size]:
                try:
                    arrays.append(preprocess(load_rgb(p), prep))
                    ok.append(Prediction(str(p)))
                except ImageRefused as e:
                    results.append(Prediction(str(p), error=f"refused: {e}"))
                except Exception as e:  # a bad file must not stop the others
                    results.append(Prediction(str(p), error=f"cannot read image: {e}"))
            if not arrays:
                continue
            logits = self.engine.logits(np.stack(arrays))
            probs = {task: softmax(v) for task, v in logits.items()}
            for i, pred in enumerate(ok):
                pred.top = {t: top_labels(p[i], tasks[t], top_k) for t, p in probs.items()}
                results.append(pred)
        order = {str(p): i for i, p in enumerate(paths)}
        return sorted(results, key=lambda r: order[r.source])
