"""Early stopping on a metric where higher is better; decisions come back with a reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Tracks the best value of a metric and says when ``patience`` epochs passed without gain.

    >>> es = EarlyStopping(patience=1)
    >>> es.update(0.9, 0).improved, es.update(0.8, 1).should_stop
    (True, True)
    """

    patience: int | None
    min_delta: float = 0.0
    best: float = float("-inf")
    best_epoch: int = -1

    @dataclass(frozen=True)
    class Decision:
        """The outcome of one update."""

        improved: bool
        should_stop: bool
        reason: str

    def update(self, value: float, epoch: int) -> EarlyStopping.Decision:
        """Record ``value`` for ``epoch`` and decide."""
        if value > self.best + self.min_delta:
            self.best, self.best_epoch = value, epoch
            return self.Decision(True, False, f"new best {value:.4f}")
        waited = epoch - self.best_epoch
        if self.patience is not None and waited >= self.patience:
            return self.Decision(
                False,
                True,
                f"no improvement for {waited} epochs (best {self.best:.4f} "
                f"at epoch {self.best_epoch + 1})",
            )
        return self.Decision(False, False, f"no improvement for {waited} epoch(s)")
