"""``evaluate_run``: run folder + labelled images -> accuracy, per-class report and confusion
matrix for every task of the model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from headstart.data import MISSING, ImageDataset, Sample, eval_transform, scan_folder
from headstart.data.split import find_val_dir
from headstart.model import DEFAULT_TASK
from headstart.plots import plot_confusion_matrix
from headstart.training import LoadedRun, collect_logits, load_run
from headstart.training.device import resolve_device, to_device


@dataclass
class TaskEvaluation:
    """Metrics of one task on the images labelled for it."""

    task: str
    classes: list[str]
    accuracy: float
    report: dict[str, Any]
    report_text: str
    confusion: np.ndarray
    confusion_png: Path

    @property
    def n(self) -> int:
        """How many images carried a label for this task."""
        return int(self.confusion.sum())

    def confusion_text(self) -> str:
        """The confusion matrix as an aligned text table (rows: true, columns: predicted)."""
        width = max(8, *(len(c) for c in self.classes)) + 2
        head = "true \\ pred".ljust(width) + "".join(c.rjust(width) for c in self.classes)
        rows = [
            c.ljust(width) + "".join(str(v).rjust(width) for v in row)
            for c, row in zip(self.classes, self.confusion.tolist())
        ]
        return "\n".join([head, *rows])

    def to_dict(self) -> dict[str, Any]:
        """JSON form of this task's metrics."""
        return {
            "accuracy": self.accuracy,
            "classes": self.classes,
            "report": self.report,
            "confusion_matrix": self.confusion.tolist(),
            "confusion_png": self.confusion_png.name,
        }


@dataclass
class Evaluation:
    """Metrics of one run on one set of labelled images, per task."""

    source: str
    tasks: dict[str, TaskEvaluation]
    skipped: list[tuple[Path, str]]

    @property
    def accuracy(self) -> float:
        """The mean task accuracy (the accuracy, for a single task)."""
        return float(np.mean([t.accuracy for t in self.tasks.values()]))

    @property
    def single(self) -> TaskEvaluation:
        """The first (for folder data, the only) task."""
        return next(iter(self.tasks.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON form written as ``evaluation.json`` (a single task's keys also at the top)."""
        out: dict[str, Any] = {"source": self.source, "accuracy": self.accuracy}
        if len(self.tasks) == 1:
            out.update(self.single.to_dict())
        out["tasks"] = {t: e.to_dict() for t, e in self.tasks.items()}
        out["skipped"] = [[str(p), r] for p, r in self.skipped]
        return out


def eval_samples(
    run: LoadedRun, data_dir: str | Path | None
) -> tuple[list[Sample], list[tuple[Path, str]], str]:
    """Which labelled images to evaluate on, and a description of where they came from.

    The run's own validation split when ``data_dir`` is None or the folder it split at
    training time (always, for a labels-CSV run); else ``data_dir/val`` when the folder has
    train/ and val/; else every image under it.
    """
    split_file = run.run_dir / "split.json"
    split = json.loads(split_file.read_text()) if split_file.is_file() else {}
    own = Path(split.get("root", "")) if split else None
    layout = split.get("layout")
    if split and (
        data_dir is None
        or layout == "labels CSV"
        or (layout == "split" and own == Path(data_dir).resolve())
    ):
        root = own if data_dir is None or layout == "labels CSV" else Path(data_dir)
        samples = [Sample(root / p, t if isinstance(t, dict) else int(t)) for p, t in split["val"]]
        return samples, [], f"{root} (the run's held-out validation split)"
    if data_dir is None:
        raise FileNotFoundError(f"{split_file} is missing; pass the data folder to evaluate on.")
    data_dir = Path(data_dir)
    val_dir = find_val_dir(data_dir)
    target = val_dir if (data_dir / "train").is_dir() and val_dir is not None else data_dir
    scan = scan_folder(target, classes=run.tasks[DEFAULT_TASK])
    return scan.samples, scan.skipped, str(target)


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    *,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
) -> Evaluation:
    """Evaluate a run on labelled images; writes evaluation.json and a confusion-matrix PNG
    per task (``confusion_matrix.png`` for a single task)."""
    from sklearn.metrics import classification_report, confusion_matrix

    dev = resolve_device(device)
    run = load_run(run_dir)
    model = to_device(run.model, dev)
    samples, skipped, source = eval_samples(run, data_dir)
    loader = DataLoader(
        ImageDataset(samples, eval_transform(run.preprocessing)), batch_size=batch_size
    )
    logits, targets = collect_logits(model, loader, dev, progress=progress)
    results = {}
    for task, classes in run.tasks.items():
        y_true = targets[task].numpy()
        labelled = y_true != MISSING
        y_true, y_pred = y_true[labelled], logits[task].argmax(1).numpy()[labelled]
        labels = list(range(len(classes)))
        kwargs = {"labels": labels, "target_names": classes, "zero_division": 0}
        cm = confusion_matrix(y_true, y_pred, labels=labels)
        accuracy = float((y_true == y_pred).mean()) if len(y_true) else 0.0
        name = "confusion_matrix.png" if len(run.tasks) == 1 else f"confusion_matrix_{task}.png"
        what = "" if len(run.tasks) == 1 else f" {task}"
        title = f"{run.run_dir.name}{what}: accuracy {accuracy:.1%} on {len(y_true)} images"
        title += f"\n{source}"
        results[task] = TaskEvaluation(
            task=task,
            classes=classes,
            accuracy=accuracy,
            report=classification_report(y_true, y_pred, output_dict=True, **kwargs),
            report_text=classification_report(y_true, y_pred, digits=4, **kwargs),
            confusion=cm,
            confusion_png=plot_confusion_matrix(cm, classes, run.run_dir / name, title),
        )
    result = Evaluation(source=source, tasks=results, skipped=skipped)
    (run.run_dir / "evaluation.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result
