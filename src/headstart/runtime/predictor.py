"""Predict with any engine: the one path from image files to top-k labels.

A run folder (PyTorch eager), an ``.onnx`` export (ONNX Runtime, torch-free) or a
torch.export program all answer :class:`~headstart.runtime.onnx.Engine`'s ``logits``; this
module does everything around it once: Pillow decodes (through the same
:func:`headstart.imaging.load_rgb` as training), NumPy preprocesses from the engine's
metadata, test-time views are averaged as probabilities, and each task's top-k labels are
read off. ``predict``, ``evaluate --tta`` and the server use it; the temperature a run was
calibrated with lives in the model and its exports, so every engine applies it, and the
decision thresholds of its two-class tasks (``evaluate --thresholds``) in their metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.imaging import ImageRefused, load_rgb
from headstart.runtime.engines import load_engine
from headstart.runtime.onnx import Engine
from headstart.runtime.predictions import Decision, Prediction, decide, top_labels
from headstart.runtime.preprocess import TEN_CROP, preprocess, tta_views


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """An engine ready to classify PIL images or files.

    >>> predictor = Predictor.load("runs/demo")  # or "runs/demo/model.onnx"  # doctest: +SKIP
    >>> predictor.predict_paths(["ant.jpg"], top_k=1)[0].top  # doctest: +SKIP
    {'class': [('ants', 0.97)]}
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.meta = engine.meta
        self.tasks: dict[str, list[str]] = self.meta["tasks"]
        self.thresholds: dict[str, float] = self.meta.get("thresholds") or {}

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Predictor:
        """A run folder or an ``.onnx`` export (see :func:`load_engine`); ``device`` is
        where a run folder's model runs."""
        return cls(load_engine(path, device))

    from_run = load  # the name of the PyTorch-only predictor this replaces

    @property
    def tta(self) -> str:
        """The test-time views this model wants (ten crops, or the square's symmetries)."""
        return str(self.meta.get("tta", TEN_CROP))

    @property
    def white_level(self) -> int | None:
        """The value 16-bit images are read with as white, as in training (None: 65535)."""
        return self.meta["preprocessing"].get("white_level")

    @staticmethod
    def images_per_batch(batch_size: int, tta: bool) -> int:
        """Images per engine call: ``batch_size``, or an eighth of it when each image brings
        eight or ten test-time views."""
        return max(1, batch_size // 8) if tta else batch_size

    def views(self, image: Image.Image, tta: bool = False) -> np.ndarray:
        """One image as its (V, 3, H, W) engine inputs: V = 1, or the test-time views."""
        prep = self.meta["preprocessing"]
        return tta_views(image, prep, self.tta) if tta else preprocess(image, prep)[None]

    def probabilities_of(self, views: np.ndarray) -> dict[str, np.ndarray]:
        """Per task, the (N, K) probabilities of a (N, V, 3, H, W) batch: the softmax of
        each view's logits, averaged over the V views."""
        n, v = views.shape[:2]
        logits = self.engine.logits(np.ascontiguousarray(views.reshape(n * v, *views.shape[2:])))
        return {
            t: softmax(x.astype(np.float32)).reshape(n, v, -1).mean(1) for t, x in logits.items()
        }

    def probabilities(
        self, images: Sequence[Image.Image], tta: bool = False
    ) -> dict[str, np.ndarray]:
        """Per task, the (N, K) probabilities of RGB images."""
        return self.probabilities_of(np.stack([self.views(im, tta) for im in images]))

    def top(self, probs: dict[str, np.ndarray], k: int) -> list[dict[str, list[tuple[str, float]]]]:
        """Per image, each task's ``k`` most probable (label, probability) pairs."""
        n = len(next(iter(probs.values())))
        return [{t: top_labels(p[i], self.tasks[t], k) for t, p in probs.items()} for i in range(n)]

    def decisions(self, probs: dict[str, np.ndarray]) -> list[dict[str, Decision]]:
        """Per image, the decision of each task that has a threshold (none: no entry)."""
        n = len(next(iter(probs.values())))
        decided = {
            t: decide(probs[t], threshold) for t, threshold in self.thresholds.items() if t in probs
        }
        return [
            {t: Decision(self.tasks[t][int(d[i])], self.thresholds[t]) for t, d in decided.items()}
            for i in range(n)
        ]

    def predict_paths(
        self, paths: Sequence[str | Path], top_k: int = 3, batch_size: int = 32, tta: bool = False
    ) -> list[Prediction]:
        """Predict every file; an unreadable file yields a Prediction with ``error`` set."""
        results: list[Prediction] = []
        step = self.images_per_batch(batch_size, tta)
        for start in range(0, len(paths), step):
            images, ok = [], []
            for p in paths[start : start + step]:
                try:
                    images.append(load_rgb(p, self.white_level))
                    ok.append(Prediction(str(p)))
                except ImageRefused as e:
                    results.append(Prediction(str(p), error=f"refused: {e}"))
                except Exception as e:  # a bad file must not stop the others
                    results.append(Prediction(str(p), error=f"cannot read image: {e}"))
            if images:
                probs = self.probabilities(images, tta)
                for pred, top, decided in zip(ok, self.top(probs, top_k), self.decisions(probs)):
                    pred.top, pred.decisions = top, decided
                    results.append(pred)
        order = {str(p): i for i, p in enumerate(paths)}
        return sorted(results, key=lambda r: order[r.source])
