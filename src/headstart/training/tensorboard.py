"""``--log tensorboard``: a run's figures as TensorBoard event files in ``RUN/tb/``.

Per epoch: training and validation loss and accuracy, the accuracy's 95% interval (its
bounds as two more curves), each task's accuracy and the learning rate of every parameter
group's stage. At the end: the best epoch's confusion matrix per task and the training
curves as images, and the hyperparameters with the final figures (TensorBoard's HPARAMS
tab). Written with PyTorch's own ``SummaryWriter``; watch it with
``tensorboard --logdir RUN/tb``.

The run folder may be published under another name when it finishes (``--overwrite``
trains beside the old run), so the epochs' writer is closed before that, and the end's
images go to a second event file in the published folder; TensorBoard reads both as one run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import ConfigError
from headstart.training.history import EpochStats

TB_DIR = "tb"


def _writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        raise ConfigError(
            "ConfigError: --log tensorboard needs the tensorboard package. Install it with "
            "pip install 'headstart[tensorboard]' (or pip install tensorboard)."
        ) from None
    return SummaryWriter


class TensorBoardLog:
    """Epoch figures to ``run_dir/tb``; ``resume_from`` (the next epoch when resuming)
    purges events a crashed run wrote past its saved state."""

    def __init__(self, run_dir: Path, resume_from: int | None = None) -> None:
        self.dir = Path(run_dir) / TB_DIR
        self._writer = _writer_class()(str(self.dir), purge_step=resume_from)

    def epoch(self, stats: EpochStats) -> None:
        """One epoch's scalars, at step = epoch."""
        w, step = self._writer, stats.epoch
        w.add_scalar("loss/train", stats.train_loss, step)
        w.add_scalar("loss/val", stats.val_loss, step)
        w.add_scalar("accuracy/train", stats.train_acc, step)
        w.add_scalar("accuracy/val", stats.val_acc, step)
        if stats.val_acc_ci:
            w.add_scalar("accuracy/val_ci_low", stats.val_acc_ci[0], step)
            w.add_scalar("accuracy/val_ci_high", stats.val_acc_ci[1], step)
        if len(stats.val_acc_per_task) > 1:
            for task, acc in stats.val_acc_per_task.items():
                w.add_scalar(f"accuracy/val_{task}", acc, step)
        for stage, lr in (stats.lrs or {"all": stats.lr}).items():
            w.add_scalar(f"lr/{stage}", lr, step)
        w.add_scalar("time/epoch_seconds", stats.seconds, step)
        w.flush()

    def close(self) -> None:
        """Flush and close the epochs' event file."""
        self._writer.close()


def log_final(
    run_dir: Path,
    best: EpochStats,
    tasks: dict[str, list[str]],
    curves: Path | None,
    hparams: dict[str, Any],
) -> Path:
    """The end of a run, in ``run_dir/tb``: the best epoch's confusion matrices and the
    training curves as images, the hyperparameters with the best figures. Returns the folder."""
    from headstart.plots import plot_confusion_matrix

    folder = Path(run_dir) / TB_DIR
    writer = _writer_class()(str(folder))
    step = best.epoch
    with tempfile.TemporaryDirectory() as tmp:
        for task, matrix in best.val_confusion.items():
            name = "confusion_matrix" if len(tasks) == 1 else f"confusion_matrix/{task}"
            png = plot_confusion_matrix(
                matrix, tasks[task], Path(tmp) / "cm.png", f"{task}: best epoch {step}"
            )
            writer.add_image(name, _png(png), step, dataformats="HWC")
    if curves is not None and curves.exists():
        writer.add_image("curves", _png(curves), step, dataformats="HWC")
    metrics = {"hparam/best_val_acc": best.val_acc, "hparam/best_val_loss": best.val_loss}
    writer.add_hparams(_flat(hparams), metrics, run_name=".", global_step=step)
    writer.close()
    return folder


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config to TensorBoard's flat hyperparameters (numbers, strings and bools;
    anything else as its text)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif value is not None:
            out[name] = ",".join(map(str, value)) if isinstance(value, Sequence) else str(value)
    return out
