"""Temperature scaling (Guo et al. 2017): one number per task that divides the logits so
the predicted probabilities match how often predictions come true, leaving every top-1
prediction (and so the accuracy) unchanged.

``headstart evaluate RUN --calibrate`` fits it on the run's validation logits by minimising
the negative log-likelihood and stores it in the manifest; the model then divides by it
wherever it runs (evaluate, predict, serve, and exports made afterwards). The ECE "after" is
cross-fitted: the temperature applied to each half of the images is fitted on the other
half, so the figure is not flattered by fitting and scoring on the same images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from headstart.data import MISSING
from headstart.evaluation.calibration import calibration
from headstart.evaluation.thresholds import moved_by_temperature
from headstart.manifest import rounded
from headstart.training.checkpoint import LoadedRun, as_loaded

if TYPE_CHECKING:  # the type only: evaluate is imported where it runs
    from headstart.evaluation.evaluate import ValidationLogits


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels ``y`` under softmax(logits / temperature)."""
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises the NLL (a bounded 1-D search on its
    logarithm; the NLL is convex in 1/T).

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 2000)
    >>> z = np.where(rng.random(2000) < 0.8, y, 1 - y)  # right 80% of the time
    >>> logits = np.stack([z == 0, z == 1], 1) * 6.0  # but 99.8% sure
    >>> 3.5 < fit_temperature(logits, y) < 5.0
    True
    """
    res = minimize_scalar(
        lambda log_t: nll(logits, y, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(res.x))


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    return np.exp(log_softmax(logits / temperature, axis=1))


def cross_fitted_ece(logits: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """ECE with each half of the images scaled by the temperature fitted on the other half."""
    order = np.random.default_rng(seed).permutation(len(y))
    halves = [order[: len(y) // 2], order[len(y) // 2 :]]
    probs = np.empty((len(y), logits.shape[1]))
    for fit_on, apply_to in (halves, halves[::-1]):
        t = fit_temperature(logits[fit_on], y[fit_on])
        probs[apply_to] = _softmax(logits[apply_to], t)
    return calibration(probs, y).ece


@dataclass(frozen=True)
class TemperatureFit:
    """One task's fitted temperature and what it did to NLL and ECE."""

    task: str
    temperature: float
    images: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float  # cross-fitted (see the module docstring)

    def line(self) -> str:
        """The console line."""
        name = "" if self.task == "class" else f"task {self.task}: "
        return (
            f"{name}temperature {self.temperature:.3f} fitted on {self.images} validation images: "
            f"NLL {self.nll_before:.4f} -> {self.nll_after:.4f}, ECE {self.ece_before:.4f} -> "
            f"{self.ece_after:.4f} (cross-fitted halves)"
        )


def calibrate_run(
    run: str | Path | LoadedRun,
    *,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
    scores: ValidationLogits | None = None,
) -> list[TemperatureFit]:
    """Fit a temperature per task on the run's validation split and store them in its
    manifest (``temperature``, ``temperature_fit``); returns the fits. ``scores``: the
    validation logits and targets of :func:`~headstart.evaluation.evaluate.raw_validation_logits`,
    when the caller has them already. A loaded run is brought up to date with the stored
    manifest."""
    from headstart.evaluation.evaluate import raw_validation_logits

    run = as_loaded(run)
    logits, targets = scores or raw_validation_logits(
        run, device, batch_size=batch_size, progress=progress
    )
    fits = []
    for task in run.tasks:
        keep = targets[task] != MISSING
        z, y = logits[task][keep].astype(np.float64), targets[task][keep]
        t = fit_temperature(z, y)
        fits.append(
            TemperatureFit(
                task,
                t,
                int(keep.sum()),
                nll(z, y),
                nll(z, y, t),
                calibration(_softmax(z, 1.0), y).ece,
                cross_fitted_ece(z, y),
            )
        )
    manifest = {**run.manifest}
    if manifest.get("thresholds"):  # the decisions stay: the thresholds move with the scale
        manifest["thresholds"] = moved_by_temperature(
            manifest["thresholds"], manifest.get("temperature") or {},
            {f.task: f.temperature for f in fits},
        )  # fmt: skip
    manifest["temperature"] = {f.task: f.temperature for f in fits}
    manifest["temperature_fit"] = {f.task: rounded(asdict(f)) for f in fits}
    run.write_manifest(manifest)
    return fits
