"""What a training run records per epoch, and its outcome."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EpochStats:
    """One epoch's figures, as written to ``metrics.jsonl``."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    train_seconds: float = 0.0  # the training part of ``seconds`` (the rest is validation)
    val_acc_per_task: dict[str, float] = field(default_factory=dict)  # val_acc selects on it
    val_acc_ci: tuple[float, float] | None = None  # 95% Wilson interval when val_acc is one task's
    val_n: int = 0  # validation images labelled for the task(s) val_acc is on
    val_recall: dict[str, list[float | None]] = field(default_factory=dict)  # per task, class
    val_confusion: dict[str, list[list[int]]] = field(default_factory=dict)  # per task
    lrs: dict[str, float] = field(default_factory=dict)  # per parameter group's stage

    def to_dict(self) -> dict[str, float]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochStats:
        """Inverse of :meth:`to_dict` (a ``metrics.jsonl`` line, a saved state's history)."""
        ci = d.get("val_acc_ci")
        return cls(**{**d, "val_acc_ci": tuple(ci) if ci else None})

    def line(self, epochs: int) -> str:
        """The one-line summary printed after each epoch."""
        tasks = ""
        if len(self.val_acc_per_task) > 1:
            tasks = " (" + ", ".join(f"{t} {a:.4f}" for t, a in self.val_acc_per_task.items()) + ")"
        ci = f" [{self.val_acc_ci[0]:.3f}, {self.val_acc_ci[1]:.3f}]" if self.val_acc_ci else ""
        lr = f"lr {self.lr:.2e}" if self.lr > 0 else "no lr (head solved)"  # the probe's L-BFGS
        return (
            f"epoch {self.epoch:>2}/{epochs}  train_loss {self.train_loss:.4f}  "
            f"train_acc {self.train_acc:.4f}  val_loss {self.val_loss:.4f}  "
            f"val_acc {self.val_acc:.4f}{ci}{tasks}  {lr}  {self.seconds:.1f}s"
        )


@dataclass
class FitResult:
    """History, the best epoch (1-based) and why training stopped."""

    history: list[EpochStats]
    best_epoch: int
    stop_reason: str

    @property
    def best(self) -> EpochStats:
        """Stats of the restored epoch."""
        return self.history[self.best_epoch - 1]
