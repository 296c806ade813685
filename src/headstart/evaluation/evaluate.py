"""``evaluate_run``: run folder + labelled images -> accuracy, per-class report, confusion
matrix, calibration and error analysis for every task of the model."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from headstart.backbones import Preprocessing
from headstart.data import MISSING, TTA_VIEWS, ImageDataset, Sample, pass_generator
from headstart.data.near_duplicates import perceptual_hashes
from headstart.data.table import task_labels
from headstart.errors import ConfigError
from headstart.evaluation.analysis import (
    DuplicatePair,
    Suspect,
    likely_label_errors,
    near_duplicates,
    top_losses,
)
from headstart.evaluation.calibration import Calibration, calibration
from headstart.evaluation.confusions import confused_classes
from headstart.evaluation.out_of_fold import (
    cached_head_inputs,
    heads_input,
    out_of_fold_probabilities,
)
from headstart.evaluation.roc import RocAuc, roc_auc
from headstart.evaluation.sources import eval_samples, read_split, split_samples
from headstart.model import DEFAULT_TASK
from headstart.plots import plot_confusion_matrix, plot_image_grid, plot_reliability, plot_roc
from headstart.runtime.predictions import decide
from headstart.runtime.predictor import Predictor
from headstart.stats import wilson_interval
from headstart.training import LoadedRun
from headstart.training.checkpoint import as_loaded
from headstart.training.device import resolve_device
from headstart.training.objective import Objective

Probabilities = dict[str, np.ndarray]


@dataclass
class TaskEvaluation:
    """Metrics, calibration and error analysis of one task on the images labelled for it."""

    task: str
    classes: list[str]
    accuracy: float
    report: dict[str, Any]
    report_text: str
    confusion: np.ndarray
    pngs: dict[str, Path]  # confusion, reliability, top_losses
    calibration: Calibration
    top_losses: list[Suspect]
    label_errors: list[Suspect] | None = None  # None: the training images are unknown
    without_tta: dict[str, float] | None = None  # accuracy and ECE of the plain pass
    roc: RocAuc | None = None  # None: fewer than two classes among the images
    label_errors_out_of_fold: bool = False  # scored by heads fitted without each image
    threshold: float | None = None  # the positive class's decision threshold, when stored

    @property
    def n(self) -> int:
        """How many images carried a label for this task."""
        return int(self.confusion.sum())

    @property
    def ci(self) -> tuple[float, float]:
        """95% Wilson interval of the accuracy."""
        return wilson_interval(round(self.accuracy * self.n), self.n)

    @property
    def normalised(self) -> np.ndarray:
        """The confusion matrix divided by row totals: recall on the diagonal."""
        return self.confusion / np.maximum(self.confusion.sum(axis=1, keepdims=True), 1)

    def confusion_text(self, normalised: bool = False) -> str:
        """The confusion matrix as an aligned text table (rows: true, columns: predicted);
        ``normalised``: each row as fractions of its true class."""
        width = max(8, *(len(c) for c in self.classes)) + 2
        head = "true \\ pred".ljust(width) + "".join(c.rjust(width) for c in self.classes)
        matrix = self.normalised if normalised else self.confusion
        cell = "{:.3f}" if normalised else "{}"
        rows = [
            c.ljust(width) + "".join(cell.format(v).rjust(width) for v in row)
            for c, row in zip(self.classes, matrix.tolist())
        ]
        return "\n".join([head, *rows])

    def to_dict(self) -> dict[str, Any]:
        """JSON form of this task's metrics."""
        return {
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.ci),
            "n": self.n,
            "classes": self.classes,
            "report": self.report,
            "confusion_matrix": self.confusion.tolist(),
            "confusion_matrix_normalised": np.round(self.normalised, 6).tolist(),
            "calibration": self.calibration.to_dict(),
            "top_losses": [s.to_dict() for s in self.top_losses],
            "likely_label_errors": None
            if self.label_errors is None
            else [s.to_dict() for s in self.label_errors],
            "without_tta": self.without_tta,
            "roc_auc": None if self.roc is None else self.roc.to_dict(),
            "threshold": self.threshold,
            "pngs": {k: p.name for k, p in self.pngs.items()},
            "confusion_png": self.pngs["confusion"].name,
        }


@dataclass
class Evaluation:
    """Metrics of one run on one set of labelled images, per task, and what the data held."""

    source: str
    tasks: dict[str, TaskEvaluation]
    skipped: list[tuple[Path, str]]
    tta: str | None = None  # the views averaged, when test-time augmentation was on
    train_images: int = 0  # training images checked for label errors and duplicates
    train_skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[DuplicatePair] | None = None

    @property
    def accuracy(self) -> float:
        """The mean task accuracy (the accuracy, for a single task)."""
        return float(np.mean([t.accuracy for t in self.tasks.values()]))

    @property
    def mean_auc(self) -> float | None:
        """The mean ROC AUC over the tasks that have one (multi-label papers' headline)."""
        aucs = [t.roc.headline for t in self.tasks.values() if t.roc is not None]
        return float(np.mean(aucs)) if aucs else None

    @property
    def single(self) -> TaskEvaluation:
        """The first (for folder data, the only) task."""
        return next(iter(self.tasks.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON form written as ``evaluation.json`` (a single task's keys also at the top)."""
        out: dict[str, Any] = {"source": self.source, "accuracy": self.accuracy}
        out["mean_roc_auc"] = self.mean_auc
        if len(self.tasks) == 1:
            out.update(self.single.to_dict())
        out["tasks"] = {t: e.to_dict() for t, e in self.tasks.items()}
        out["tta"] = self.tta
        out["skipped"] = [[str(p), r] for p, r in self.skipped]
        out["train_images"] = self.train_images
        out["train_skipped"] = [list(s) for s in self.train_skipped]
        out["near_duplicates"] = (
            None if self.duplicates is None else [d.to_dict() for d in self.duplicates]
        )
        return out


def cached_reader(prep: Preprocessing) -> Callable[[Path], Image.Image]:
    """Images through the user's decoded-image cache (bit-identical to reading them, and free
    the second time), or straight from disk when the cache folder cannot be used."""
    from headstart.cache import Cache
    from headstart.cache.decoded import image_reader as reader

    try:
        return reader(prep, Cache())
    except ConfigError:
        return reader(prep, None)


def _scores(
    predictor: Predictor,
    samples: Sequence[Sample],
    read: Callable[[Path], Image.Image],
    *,
    tta: bool = False,
    raw: bool = False,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per task, the probabilities of ``samples`` (averaged over the test-time views with
    ``tta``; with ``raw``, the logits of the one plain view) and their targets, through
    the predictor's engine: the path ``predict`` and the server take."""
    views = partial(_views, predictor, tta)
    loader = DataLoader(
        ImageDataset(samples, views, read),
        batch_size=predictor.images_per_batch(batch_size, tta),
        generator=pass_generator(),
    )
    scores: dict[str, list[np.ndarray]] = {}
    truth: dict[str, list[np.ndarray]] = {}
    for batch, target in tqdm(loader, desc="eval", leave=False, disable=not progress or None):
        x = batch.numpy()
        out = predictor.engine.logits(x[:, 0]) if raw else predictor.probabilities_of(x)
        for task, t in (target if isinstance(target, dict) else {DEFAULT_TASK: target}).items():
            scores.setdefault(task, []).append(out[task])
            truth.setdefault(task, []).append(t.numpy())
    return {k: np.concatenate(v) for k, v in scores.items()}, {
        k: np.concatenate(v) for k, v in truth.items()
    }


def _views(predictor: Predictor, tta: bool, image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(predictor.views(image, tta))


def run_predictor(run: LoadedRun, device: torch.device) -> Predictor:
    """The run's model as a :class:`~headstart.runtime.predictor.Predictor` on ``device``,
    in float32, the precision it was validated in and is served in
    (:func:`~headstart.training.precision.serving`)."""
    from headstart.export.runtime import TorchEngine

    return Predictor(TorchEngine(run, str(device)))


def validation_scores(
    run: LoadedRun,
    device: str = "auto",
    *,
    raw: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per task, the probabilities (``raw``: the logits) of the run's validation images as
    predict and serve compute them, and their targets: what ``--calibrate`` and
    ``--thresholds`` fit on."""
    samples, _, _ = eval_samples(run, None)
    return _scores(
        run_predictor(run, resolve_device(device)),
        samples,
        cached_reader(run.preprocessing),
        raw=raw,
        batch_size=batch_size,
        progress=progress,
    )


ValidationLogits = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # per task: logits, targets


def raw_validation_logits(
    run: LoadedRun, device: str = "auto", *, batch_size: int = 32, progress: bool = True
) -> ValidationLogits:
    """Per task, the logits of the run's validation images before any fitted temperature
    divides them, and their targets: what ``--calibrate`` fits on and, divided by the
    temperature, ``--thresholds`` (one pass for both). ``run`` keeps its temperature."""
    kept, run.model.temperature = run.model.temperature, {}  # whatever an earlier fit said
    try:
        return validation_scores(run, device, raw=True, batch_size=batch_size,
                                 progress=progress)  # fmt: skip
    finally:
        run.model.temperature = kept


def divided(
    validation: ValidationLogits, temperature: dict[str, float]
) -> tuple[Probabilities, dict[str, np.ndarray]]:
    """Raw logits as the predictor's probabilities: each task's divided by its temperature
    (1 where none was fitted), then the softmax."""
    from headstart.runtime.predictor import softmax

    logits, targets = validation
    return {
        task: softmax(z.astype(np.float32) / temperature.get(task, 1.0))
        for task, z in logits.items()
    }, targets


def display_path(path: Path, root: Path | None) -> str:
    """A path relative to the data root when it is under it."""
    if root is not None:
        try:
            return str(Path(path).resolve().relative_to(root))
        except ValueError:
            pass
    return str(path)


def evaluate_run(
    run: str | Path | LoadedRun,
    data_dir: str | Path | None = None,
    *,
    images_root: str | Path | None = None,
    tta: bool = False,
    analysis: bool = True,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
    validation_logits: ValidationLogits | None = None,
) -> Evaluation:
    """Evaluate a run on labelled images; writes ``evaluation.json`` and, per task, PNGs of
    the confusion matrix, the reliability diagram and the top losses (``NAME.png`` for a
    single task, ``NAME_TASK.png`` for several).

    ``data_dir``: see :func:`~headstart.evaluation.sources.eval_samples` (default: the run's
    validation split; a folder, or a labels CSV with paths under ``images_root``).
    ``tta``: average the softmax of ten crops per image (and report the plain pass too).
    ``analysis``: also pass over the run's training images, for likely label errors and
    near-duplicates between training and evaluated images.
    ``validation_logits``: :func:`raw_validation_logits` of this run, when the caller has
    them (``--calibrate``, ``--thresholds``): with ``data_dir`` None they are the plain
    pass, divided by the run's temperature, instead of reading the images again.
    """
    dev = resolve_device(device)
    run = as_loaded(run)
    predictor = run_predictor(run, dev)
    samples, skipped, source = eval_samples(run, data_dir, images_root, progress)
    read = cached_reader(run.preprocessing)
    split = read_split(run)
    root = Path(split["root"]) if split else None
    kw = {"batch_size": batch_size, "progress": progress}
    if data_dir is None and validation_logits is not None:
        probs, targets = divided(validation_logits, run.model.temperature)
    else:
        probs, targets = _scores(predictor, samples, read, **kw)
    plain = None
    if tta:
        plain = probs
        probs, _ = _scores(predictor, samples, read, tta=True, **kw)
    train_samples = split_samples(split, "train", root) if analysis and split else []
    train_probs, train_targets, held_out = {}, {}, None
    head_cv = run.manifest.get("head_cv") or {}
    solved = head_cv.get("l2")  # a probe: its head refits in seconds
    if train_samples and solved is not None:  # a probe: refit its head on folds
        features = cached_head_inputs(run, train_samples)  # what it trained on, if still cached
        if features is not None:
            train_targets = task_labels([s.target for s in train_samples])
        else:  # run the model, keeping the heads' input
            with heads_input(run.model) as recorded:
                train_probs, train_targets = _scores(predictor, train_samples, read, **kw)
            features = recorded()
        objective = Objective.from_dict(head_cv.get("objective") or {})
        subjects = split.get("groups") or {}  # --group: folds of whole groups
        held_out = out_of_fold_probabilities(
            run.model, features, train_targets, solved, objective,
            groups=[subjects[p] for p, _ in split["train"]] if subjects else None,
        )  # fmt: skip
    if train_samples and held_out is None and not train_probs:  # in-sample, from the model
        train_probs, train_targets = _scores(predictor, train_samples, read, **kw)
    train_probs = held_out or train_probs
    eval_paths = [display_path(s.path, root) for s in samples]
    train_paths = [display_path(s.path, root) for s in train_samples]
    full = {name: s.path for name, s in zip(eval_paths, samples)}
    duplicates = None
    if train_samples:
        duplicates = near_duplicates(
            train_paths,
            perceptual_hashes([s.path for s in train_samples], read, progress),
            eval_paths,
            perceptual_hashes([s.path for s in samples], read, progress),
        )
    results = {}
    for task, classes in run.tasks.items():
        if task not in targets or (targets[task] == MISSING).all():
            continue  # a test CSV without this task's column
        y_true = targets[task]
        labelled = y_true != MISSING
        p, y = probs[task][labelled], y_true[labelled]
        paths = [q for q, keep in zip(eval_paths, labelled) if keep]
        errors = None
        if train_samples:
            has = train_targets[task] != MISSING
            errors = likely_label_errors(
                [q for q, keep in zip(train_paths, has) if keep],
                train_probs[task][has],
                train_targets[task][has],
                classes,
            )
        threshold = predictor.thresholds.get(task)
        results[task] = _task_evaluation(
            run, task, classes, p, y, paths, full, source, read, errors, len(run.tasks) > 1,
            threshold,
        )  # fmt: skip
        results[task].label_errors_out_of_fold = held_out is not None
        if plain is not None:
            q = plain[task][labelled]
            results[task].without_tta = {
                "accuracy": float((decide(q, threshold) == y).mean()) if len(y) else 0.0,
                "ece": calibration(q, y).ece,
            }
    result = Evaluation(
        source=source,
        tasks=results,
        skipped=skipped,
        tta=TTA_VIEWS[run.augment] if tta else None,
        train_images=len(train_samples),
        train_skipped=[tuple(s) for s in split.get("skipped", [])] if split else [],
        duplicates=duplicates,
    )
    (run.run_dir / "evaluation.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result


def _task_evaluation(
    run: LoadedRun,
    task: str,
    classes: list[str],
    probs: np.ndarray,
    y_true: np.ndarray,
    paths: list[str],
    full: dict[str, Path],
    source: str,
    read: Callable[[Path], Image.Image],
    label_errors: list[Suspect] | None,
    several: bool,
    threshold: float | None = None,
) -> TaskEvaluation:
    """Metrics and PNGs of one task; its decisions are the most probable class, or the
    positive class at or above ``threshold``."""
    from sklearn.metrics import classification_report, confusion_matrix
    from torchvision.transforms import functional as F

    y_pred = decide(probs, threshold)
    labels = list(range(len(classes)))
    kwargs = {"labels": labels, "target_names": classes, "zero_division": 0}
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    accuracy = float((y_true == y_pred).mean()) if len(y_true) else 0.0
    suffix = f"_{task}" if several else ""
    what = f" {task}" if several else ""
    title = f"{run.run_dir.name}{what}: accuracy {accuracy:.1%} on {len(y_true)} images"
    cal = calibration(probs, y_true)
    roc = roc_auc(probs, y_true, classes)
    losses = top_losses(paths, probs, y_true, classes, pred=y_pred)
    crop = run.preprocessing.input_size
    pngs = {
        "confusion": plot_confusion_matrix(
            cm,
            classes,
            run.run_dir / f"confusion_matrix{suffix}.png",
            f"{title}\n{source}",
            confused_classes(cm),
        ),
        "reliability": plot_reliability(
            cal, run.run_dir / f"reliability{suffix}.png", f"{run.run_dir.name}{what}"
        ),
        "top_losses": plot_image_grid(
            [F.center_crop(read(full[s.path]), crop) for s in losses],
            [
                f"{Path(s.path).name[:28]}\ntrue {s.given} ({s.given_probability:.2f})\n"
                f"pred {s.predicted} ({s.probability:.2f})"
                for s in losses
            ],
            run.run_dir / f"top_losses{suffix}.png",
            f"{run.run_dir.name}{what}: top losses (most confidently wrong)",
        ),
    }
    if roc is not None:
        pngs["roc"] = plot_roc(roc, run.run_dir / f"roc{suffix}.png", title)
    return TaskEvaluation(
        task=task,
        classes=classes,
        accuracy=accuracy,
        report=classification_report(y_true, y_pred, output_dict=True, **kwargs),
        report_text=classification_report(y_true, y_pred, digits=4, **kwargs),
        confusion=cm,
        pngs=pngs,
        calibration=cal,
        top_losses=losses,
        label_errors=label_errors,
        roc=roc,
        threshold=threshold,
    )
