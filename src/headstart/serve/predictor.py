"""Predictions from a run folder: top-k labels and probabilities per task, per image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from headstart.data import eval_transform, load_rgb, tta_transform
from headstart.imaging import ImageRefused
from headstart.runtime.predictions import Prediction, expand_inputs, top_labels
from headstart.training import LoadedRun, load_run
from headstart.training.device import images_to, resolve_device, to_device
from headstart.training.loop import forward_views


class Predictor:
    """A loaded run ready to classify PIL images or files.

    >>> predictor = Predictor.from_run("runs/demo")  # doctest: +SKIP
    >>> predictor.predict_paths(["ant.jpg"], top_k=1)[0].top  # doctest: +SKIP
    {'class': [('ants', 0.97)]}
    """

    def __init__(self, run: LoadedRun, device: str = "auto") -> None:
        self.run = run
        self.device = resolve_device(device)
        self.model = to_device(run.model, self.device).eval()
        self.transform = eval_transform(run.preprocessing)
        self.tta_transform = tta_transform(run.preprocessing, run.augment)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto") -> Predictor:
        """Load a run folder (see :func:`headstart.training.load_run`)."""
        return cls(load_run(run_dir), device)

    @torch.inference_mode()
    def probabilities(
        self, images: Sequence[Image.Image], tta: bool = False
    ) -> dict[str, torch.Tensor]:
        """Softmax probabilities per task for a batch of RGB images; ``tta`` averages ten
        crops of each (see :func:`headstart.data.tta_transform`)."""
        transform = self.tta_transform if tta else self.transform
        batch = torch.stack([transform(im) for im in images])
        logits = forward_views(self.model, images_to(batch, self.device))
        return {task: t.float().softmax(1).cpu() for task, t in logits.items()}

    def predict_paths(
        self, paths: Sequence[str | Path], top_k: int = 3, batch_size: int = 32, tta: bool = False
    ) -> list[Prediction]:
        """Predict every file; an unreadable file yields a Prediction with ``error`` set."""
        results: list[Prediction] = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images, ok = [], []
            for p in chunk:
                try:
                    images.append(load_rgb(p))
                    ok.append(Prediction(str(p)))
                except ImageRefused as e:
                    results.append(Prediction(str(p), error=f"refused: {e}"))
                except Exception as e:  # a bad file must not stop the others
                    results.append(Prediction(str(p), error=f"cannot read image: {e}"))
            if images:
                for pred, probs in zip(ok, self._rows(self.probabilities(images, tta))):
                    pred.top = self._top(probs, top_k)
                    results.append(pred)
        order = {str(p): i for i, p in enumerate(paths)}
        return sorted(results, key=lambda r: order[r.source])

    @staticmethod
    def _rows(probs: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        n = next(iter(probs.values())).shape[0]
        return [{task: t[i] for task, t in probs.items()} for i in range(n)]

    def _top(self, probs: dict[str, torch.Tensor], k: int) -> dict[str, list[tuple[str, float]]]:
        return {task: top_labels(p.numpy(), self.run.tasks[task], k) for task, p in probs.items()}


__all__ = ["Prediction", "Predictor", "expand_inputs", "top_labels"]
