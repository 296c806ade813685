"""A short pilot of the cheapest unfreezing strategy, when the budget allows.

The probes' evidence says what the frozen features can do; whether training the last stage
pays is measured here, cheaply: ``partial`` (the last stage group and the head train, over
features the cache keeps for everything in front of it) for :data:`PILOT_EPOCHS` epochs from
the warm-started head, on the same split. It runs only when ``--budget`` is given and the
pilot's estimate is at most a quarter of it, and it is shown as evidence beside the probes
(the pick still rests on the probes: two epochs say whether unfreezing starts to pay, not
what ten would reach).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from headstart.config import TrainConfig
from headstart.data import DataSplit
from headstart.recommend.evidence import BackboneEvidence

PILOT_EPOCHS = 2
PILOT_SHARE = 0.25  # of --budget, at most


@dataclass(frozen=True)
class Pilot:
    """What the pilot measured."""

    strategy: str
    epochs: int
    val_acc: float
    val_ci: tuple[float, float] | None
    n_val: int
    probe_val: float | None  # the probe's accuracy on the same split (the warm start's line)
    seconds: float

    def lines(self) -> list[str]:
        """The pilot in plain words."""
        ci = f" [{self.val_ci[0]:.1%}, {self.val_ci[1]:.1%}]" if self.val_ci else ""
        line = (
            f"  pilot: {self.strategy} for {self.epochs} epochs scores {self.val_acc:.2%}{ci} "
            f"on {self.n_val} validation images in {self.seconds:.0f} s"
        )
        if self.probe_val is not None:
            gap = self.val_acc - self.probe_val
            line += f", {gap:+.2%} against the probe's {self.probe_val:.2%} on the same split"
        return [line]

    def to_dict(self) -> dict:
        """For ``recommend.json``."""
        return asdict(self)


def pilot_estimate(e: BackboneEvidence) -> float:
    """Seconds the pilot should take: one frozen pass over the images for the cached prefix,
    and its epochs, each a fraction of that pass."""
    return e.probe_seconds() * (1.0 + 0.5 * PILOT_EPOCHS)


def pilot_fits(e: BackboneEvidence, budget_s: float | None) -> bool:
    """Whether the budget allows the pilot (no budget given: no pilot)."""
    return budget_s is not None and pilot_estimate(e) <= PILOT_SHARE * budget_s


def run_pilot(cfg: TrainConfig, backbone: str, split: DataSplit, progress: bool) -> Pilot:
    """Train ``partial`` for :data:`PILOT_EPOCHS` epochs on ``split`` in a scratch folder;
    ``cfg`` is the user's (its data options; the strategy's defaults are partial's)."""
    from headstart.training import train

    with tempfile.TemporaryDirectory(prefix="headstart-pilot-") as tmp:
        pilot = cfg.with_overrides({
            "strategy.name": "partial", "model.backbone": backbone, "model.layers": "last",
            "optim.epochs": PILOT_EPOCHS, "out": str(Path(tmp) / "pilot"),
        })  # fmt: skip
        start = time.perf_counter()
        result = train(pilot, split=split, echo=lambda _: None, progress=progress, plots=False)
        seconds = time.perf_counter() - start
        manifest = json.loads((result.run_dir / "manifest.json").read_text())
    best = result.fit.best
    warm = (manifest.get("warm_head") or {}).get("probe_val_acc")
    return Pilot("partial", PILOT_EPOCHS, best.val_acc, best.val_acc_ci, best.val_n, warm, seconds)
