"""Verification: the exported model against the run's PyTorch model on real images.

Both see the very same preprocessed batches; the check is on the logits (max absolute
difference) and on every image's decision, per task (its top-1, or for a two-class task with
a stored threshold the threshold's answer, as predict and serve decide), and accuracy is
computed for both on the labelled images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from headstart.data import MISSING, Sample, eval_transform, task_label
from headstart.runtime.onnx import Engine
from headstart.runtime.predictions import decide
from headstart.runtime.predictor import softmax

TOLERANCE = 1e-4  # float32 logits, as the issue asks


@dataclass
class Verification:
    """How an exported model compares with PyTorch on ``images`` images."""

    images: int
    max_abs_diff: float
    top1_agree: dict[str, int]
    accuracy: dict[str, tuple[float, float]]  # task -> (pytorch, exported)
    seconds: dict[str, float] = field(default_factory=dict)  # engine -> inference seconds
    # engine -> its typical milliseconds an image: the median over the batches after the first
    # (which warms the engine up); a sum would carry every stall a shared machine adds
    ms_per_image: dict[str, float] = field(default_factory=dict)
    batch_size: int = 32
    tolerance: float | None = TOLERANCE  # None: report only (a quantized model)
    speedup: float | None = None  # a quantized model: its speed / the float32 export's

    @property
    def passed(self) -> bool:
        """Logits within tolerance and every top-1 prediction the same."""
        if self.tolerance is None:
            return True
        agree = all(n == self.images for n in self.top1_agree.values())
        return agree and self.max_abs_diff <= self.tolerance

    def lines(self) -> list[str]:
        """The verification as the terminal shows it."""
        limit = f" (limit {self.tolerance:.0e})" if self.tolerance is not None else ""
        out = [f"verified on {self.images} images: max |logit diff| {self.max_abs_diff:.2e}{limit}"]
        for task, agree in self.top1_agree.items():
            name = "" if len(self.top1_agree) == 1 else f"{task}: "
            line = f"  {name}top-1 agrees on {agree}/{self.images} images"
            if task in self.accuracy:
                torch_acc, exp_acc = self.accuracy[task]
                line += f"; accuracy pytorch {torch_acc:.4f}, exported {exp_acc:.4f}"
            out.append(line)
        if self.speedup is not None:
            out.append(f"  {self.speedup:.2f}x the float32 ONNX model's speed on this machine")
        if len(self.ms_per_image) == 2:
            (a, ta), (b, tb) = self.ms_per_image.items()
            out.append(
                f"  speed: {a} {ta:.1f} ms/image, {b} {tb:.1f} ms/image "
                f"(the median batch of {self.batch_size}, this machine)"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "images": self.images,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "top1_agree": self.top1_agree,
            "accuracy": {t: {"pytorch": a, "exported": b} for t, (a, b) in self.accuracy.items()},
            "seconds": self.seconds,
            "ms_per_image": self.ms_per_image,
            "passed": self.passed,
            "speedup": self.speedup,
        }


def verify(
    reference: Engine,
    exported: Engine,
    samples: Sequence[Sample],
    *,
    tolerance: float | None = TOLERANCE,
    batch_size: int = 32,
    progress: bool = True,
) -> Verification:
    """Run both engines on the samples' images and compare."""
    from headstart.backbones import Preprocessing
    from headstart.evaluation.evaluate import cached_reader

    prep = Preprocessing.from_dict(reference.meta["preprocessing"])
    transform = eval_transform(prep)
    read = cached_reader(prep)
    tasks = reference.meta["outputs"]
    ref_out: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    exp_out: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    seconds = {reference.name: 0.0, exported.name: 0.0}
    per_image: dict[str, list[float]] = {reference.name: [], exported.name: []}
    starts = range(0, len(samples), batch_size)
    for start in tqdm(starts, desc="verify", leave=False, disable=not progress or None):
        chunk = samples[start : start + batch_size]
        batch = np.stack([transform(read(s.path)).numpy() for s in chunk]).astype(np.float32)
        for engine, out in ((reference, ref_out), (exported, exp_out)):
            t0 = time.perf_counter()
            logits = engine.logits(batch)
            elapsed = time.perf_counter() - t0
            seconds[engine.name] += elapsed
            if len(chunk) == batch_size or not per_image[engine.name]:
                per_image[engine.name].append(1000 * elapsed / len(chunk))
            for t in tasks:
                out[t].append(logits[t])
    ref = {t: np.concatenate(v) for t, v in ref_out.items()}
    exp = {t: np.concatenate(v) for t, v in exp_out.items()}
    diff = max(float(np.abs(ref[t] - exp[t]).max()) for t in tasks) if samples else 0.0
    thresholds = reference.meta.get("thresholds") or {}
    ref_d, exp_d = (
        {t: decide(softmax(out[t]), thresholds.get(t)) for t in tasks} for out in (ref, exp)
    )
    agree = {t: int((ref_d[t] == exp_d[t]).sum()) for t in tasks}
    accuracy = {}
    for t in tasks:
        y = np.array([task_label(s.target, t) for s in samples])
        known = y != MISSING
        if not known.any():
            continue  # unlabelled images (--images): agreement only
        accuracy[t] = tuple(float((d[t][known] == y[known]).mean()) for d in (ref_d, exp_d))
    typical = {name: float(np.median(ms[1:] or ms)) for name, ms in per_image.items() if ms}
    return Verification(
        len(samples), diff, agree, accuracy, seconds=seconds, ms_per_image=typical,
        batch_size=batch_size, tolerance=tolerance,
    )  # fmt: skip
