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
    best_loss: float = float("inf")

    @dataclass(frozen=True)
    class Decision:
        """The outcome of one update."""

        improved: bool
        should_stop: bool
        reason: str

    def update(self, value: float, epoch: int, loss: float | None = None) -> EarlyStopping.Decision:
        """Record ``value`` (and optionally a loss) for ``epoch`` and decide.

        An equal ``value`` with a lower ``loss`` also counts as an improvement: on a few
        hundred validation images accuracy moves in steps of one image, and the loss breaks
        ties in favour of the better-calibrated epoch.
        """
        tie_better = (
            value == self.best and loss is not None and loss < self.best_loss - self.min_delta
        )
        if value > self.best + self.min_delta or tie_better:
            self.best, self.best_epoch = value, epoch
            self.best_loss = loss if loss is not None else float("inf")
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
