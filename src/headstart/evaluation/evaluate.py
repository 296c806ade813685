"""``evaluate_run``: run folder + data folder -> accuracy, per-class report, confusion matrix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from headstart.data import ImageDataset, Sample, eval_transform, scan_folder
from headstart.data.split import find_val_dir
from headstart.model import DEFAULT_TASK
from headstart.plots import plot_confusion_matrix
from headstart.training import LoadedRun, collect_logits, load_run
from headstart.training.device import resolve_device, to_device


@dataclass
class Evaluation:
    """Metrics of one run on one set of labelled images."""

    source: str
    classes: list[str]
    accuracy: float
    report: dict[str, Any]
    report_text: str
    confusion: np.ndarray
    skipped: list[tuple[Path, str]]
    confusion_png: Path

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
        """JSON form written as ``evaluation.json``."""
        return {
            "source": self.source,
            "accuracy": self.accuracy,
            "classes": self.classes,
            "report": self.report,
            "confusion_matrix": self.confusion.tolist(),
            "skipped": [[str(p), r] for p, r in self.skipped],
        }


def eval_samples(
    run: LoadedRun, data_dir: str | Path
) -> tuple[list[Sample], list[tuple[Path, str]], str]:
    """Which labelled images to evaluate on, and a description of where they came from.

    The run's own validation split when ``data_dir`` is the folder it split at training time;
    else ``data_dir/val`` when the folder has train/ and val/; else every image under it.
    """
    data_dir = Path(data_dir)
    classes = run.tasks[DEFAULT_TASK]
    split_file = run.run_dir / "split.json"
    if split_file.is_file():
        split = json.loads(split_file.read_text())
        if split.get("layout") == "split" and Path(split["root"]) == data_dir.resolve():
            samples = [Sample(data_dir / p, int(t)) for p, t in split["val"]]
            return samples, [], f"{data_dir} (the run's held-out validation split)"
    val_dir = find_val_dir(data_dir)
    target = val_dir if (data_dir / "train").is_dir() and val_dir is not None else data_dir
    scan = scan_folder(target, classes=classes)
    return scan.samples, scan.skipped, str(target)


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path,
    *,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
) -> Evaluation:
    """Evaluate a run on labelled images; writes evaluation.json and confusion_matrix.png."""
    from sklearn.metrics import classification_report, confusion_matrix

    dev = resolve_device(device)
    run = load_run(run_dir)
    model = to_device(run.model, dev)
    classes = run.tasks[DEFAULT_TASK]
    samples, skipped, source = eval_samples(run, data_dir)
    loader = DataLoader(
        ImageDataset(samples, eval_transform(run.preprocessing)), batch_size=batch_size
    )
    logits, targets = collect_logits(model, loader, dev, progress=progress)
    y_true = targets[DEFAULT_TASK].numpy()
    y_pred = logits[DEFAULT_TASK].argmax(1).numpy()
    labels = list(range(len(classes)))
    kwargs = {"labels": labels, "target_names": classes, "zero_division": 0}
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    accuracy = float((y_true == y_pred).mean())
    title = f"{run.run_dir.name}: accuracy {accuracy:.1%} on {len(y_true)} images\n{source}"
    png = plot_confusion_matrix(cm, classes, run.run_dir / "confusion_matrix.png", title)
    result = Evaluation(
        source=source,
        classes=classes,
        accuracy=accuracy,
        report=classification_report(y_true, y_pred, output_dict=True, **kwargs),
        report_text=classification_report(y_true, y_pred, digits=4, **kwargs),
        confusion=cm,
        skipped=skipped,
        confusion_png=png,
    )
    (run.run_dir / "evaluation.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result
