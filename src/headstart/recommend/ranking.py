"""Rank candidate backbones by their evidence, pick one, and write the table, JSON and plot.

The pick is confirmed by the cached probe, not by a transferability score alone (scores are
known to mislead on some domains, medical images especially): the probe's held-out accuracy
pools its cross-validated accuracy on the training images with its accuracy on the
validation split, and among the backbones within one standard error of the best, the
fastest is picked (the one-standard-error rule the multi-layer probe uses too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from headstart.recommend.domain import DomainEvidence
from headstart.recommend.evidence import BackboneEvidence
from headstart.recommend.pilot import Pilot
from headstart.training.regularise import standard_error

FINETUNE_EPOCHS = 10  # the default epoch budget, for the time estimate


def held_out(e: BackboneEvidence) -> float:
    """The cached probe's held-out accuracy: CV on the training images pooled with val."""
    return (e.cv_acc * e.n_train + e.val_acc * e.n_val) / (e.n_train + e.n_val)


def kendall(a: list[float], b: list[float]) -> float | None:
    """Kendall's tau between two scorings of the same candidates (None under 3, or when
    either gives every candidate the same score: no order to agree with).

    >>> kendall([0.9, 0.9, 0.9], [0.1, 0.2, 0.3]) is None
    True
    """
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


# every pick Recommendation can make, as the config overrides of its strategy and layers
# (tests/unit/test_recommend.py checks that the rule reaches exactly these)
PICKS: tuple[dict[str, str], ...] = (
    {"strategy.name": "probe", "model.layers": "last"},
    {"strategy.name": "probe", "model.layers": "all"},
    {"strategy.name": "finetune", "model.layers": "last"},
)


@dataclass
class Recommendation:
    """The evidence, the skipped candidates and the pick with its reasons."""

    evidence: list[BackboneEvidence]
    skipped: dict[str, str] = field(default_factory=dict)
    budget_s: float | None = None  # the time a fine-tune may take; over it, the probe
    domain: DomainEvidence | None = None  # the pick's multi-layer probe and BatchNorm shift
    pilot: Pilot | None = None  # a short partial run, when the budget allows

    def climbing(self) -> bool:
        """Whether the pick's probe curve still climbs by more than one standard error."""
        pick = self.best
        return pick.curve_gain > standard_error(pick.val_acc, pick.n_val)

    def over_budget(self) -> bool:
        """Whether the pick's estimated fine-tune exceeds ``budget_s``."""
        seconds = FINETUNE_EPOCHS * self.best.finetune_epoch_seconds()
        return self.budget_s is not None and seconds > self.budget_s

    @property
    def layers(self) -> str:
        """``all`` when earlier stages beat the last alone by more than noise, else ``last``."""
        return "all" if self.domain is not None and self.domain.far else "last"

    @property
    def strategy(self) -> str:
        """The strategy the evidence points to: the multi-layer probe where the data sits far
        from ImageNet (a measured accuracy, for one pass over the images); otherwise finetune
        while the probe's curve climbs and the fine-tune fits the budget, else the probe."""
        if self.layers == "all":
            return "probe"
        return "finetune" if self.climbing() and not self.over_budget() else "probe"

    def train_args(self) -> str:
        """The pick as ``headstart train`` options."""
        args = f"--backbone {self.best.backbone} --strategy {self.strategy}"
        return args + (" --layers all" if self.layers == "all" else "")

    def overrides(self) -> dict[str, str]:
        """The pick as config overrides (``train --strategy auto``)."""
        return {
            "strategy.name": self.strategy,
            "model.backbone": self.best.backbone,
            "model.layers": self.layers,
        }

    @property
    def best(self) -> BackboneEvidence:
        """The pick: the fastest backbone within one standard error of the best."""
        top = max(self.evidence, key=held_out)
        n = top.n_train + top.n_val
        close = [
            e
            for e in self.evidence
            if held_out(e) >= held_out(top) - standard_error(held_out(top), n)
        ]
        return max(close, key=lambda e: e.images_per_s)

    def agreement(self) -> dict[str, float | None]:
        """Kendall's tau of each score's ranking with the probe's held-out accuracy."""
        probe = [held_out(e) for e in self.evidence]
        return {
            "logme": kendall([e.logme for e in self.evidence], probe),
            "knn": kendall([e.knn_acc for e in self.evidence], probe),
        }

    def reasons(self) -> list[str]:
        """The pick in plain words."""
        pick, top = self.best, max(self.evidence, key=held_out)
        n = top.n_train + top.n_val
        lines = [
            f"pick: {pick.backbone}: the cached probe scores {held_out(pick):.2%} held out "
            f"(CV {pick.cv_acc:.2%} on {pick.n_train} training images, {pick.val_acc:.2%} on "
            f"{pick.n_val} validation images)"
        ]
        if pick is not top:
            lines.append(
                f"  {top.backbone} scores {held_out(top):.2%}, within one standard error "
                f"({standard_error(held_out(top), n):.2%}) of it, and {pick.backbone} is "
                f"{pick.images_per_s / top.images_per_s:.1f}x as fast here"
            )
        elif len(self.evidence) > 1:
            second = sorted(self.evidence, key=held_out)[-2]
            gap, se = held_out(pick) - held_out(second), standard_error(held_out(top), n)
            lines.append(
                f"  {gap:.2%} above the next ({second.backbone}), more than one standard error "
                f"({se:.2%})"
                if gap > se
                else f"  {second.backbone} is within one standard error ({se:.2%}) but "
                f"{pick.images_per_s / second.images_per_s:.1f}x slower"
            )
        if len(pick.curve) > 1:
            points = ", ".join(f"{n} images {a:.2%}" for n, a in pick.curve)
            se = standard_error(pick.val_acc, pick.n_val)
            verdict = (
                "still climbing (more than one standard error): more capacity will pay, so "
                f"fine-tuning is likely to beat the probe (about "
                f"{FINETUNE_EPOCHS * pick.finetune_epoch_seconds() / 60:.0f} min for "
                f"{FINETUNE_EPOCHS} epochs here)"
                if pick.curve_gain > se
                else "flat (within one standard error): the frozen features already say what "
                "this data can tell; fine-tuning is unlikely to pay"
            )
            lines.append(
                f"  the probe's learning curve on the validation split: {points}: {verdict}"
            )
            if self.climbing() and self.over_budget() and self.layers == "last":
                lines.append(
                    f"  but the fine-tune's estimate is over the budget of "
                    f"{(self.budget_s or 0) / 60:.0f} min: the probe it is"
                )
        if self.domain is not None:
            lines += self.domain.lines()
            if self.layers == "all":
                lines.append(
                    f"  so: the multi-layer probe ({self.domain.held_out:.2%} held out, one pass "
                    "over the images); fine-tuning costs about "
                    f"{FINETUNE_EPOCHS * pick.finetune_epoch_seconds() / 60:.0f} min here and its "
                    "accuracy is not measured: try it with --strategy finetune when that time "
                    "is worth a point or two"
                    + (
                        f", or --strategy partial --unfreeze-from auto, which trains the "
                        f"backbone from {self.domain.first_read}, the earliest stage it reads"
                        if self.domain.first_read
                        else ""
                    )
                )
        if self.pilot is not None:
            lines += self.pilot.lines()
        agree = {k: v for k, v in self.agreement().items() if v is not None}
        if agree:
            names = {"logme": "LogME", "knn": "k-NN"}
            lines.append(
                "  agreement with the probe's ranking (Kendall's tau, 1 = same order): "
                + ", ".join(f"{names[k]} {v:+.2f}" for k, v in agree.items())
            )
        return lines

    def table(self) -> str:
        """One row per candidate, best held-out accuracy first."""
        head = (
            f"{'backbone':<22} {'params':>7} {'px':>4} {'LogME':>7} {'k-NN':>7} {'probe CV':>9} "
            f"{'probe val [95% CI]':>24} {'held out':>9} {'img/s':>6} {'probe s':>8} {'ft s/ep':>8}"
        )
        rows = [head, "-" * len(head)]
        for e in sorted(self.evidence, key=held_out, reverse=True):
            ci = f"{e.val_acc:.2%} [{e.val_ci[0]:.1%}, {e.val_ci[1]:.1%}]"
            mark = " *" if e is self.best else ""
            rows.append(
                f"{e.backbone:<22} {e.params / 1e6:>6.1f}M {e.input_size:>4} {e.logme:>7.3f} "
                f"{e.knn_acc:>7.2%} {e.cv_acc:>9.2%} {ci:>24} {held_out(e):>9.2%} "
                f"{e.images_per_s:>6.0f} {e.probe_seconds():>8.0f} "
                f"{e.finetune_epoch_seconds():>8.0f}{mark}"
            )
        rows += [f"{name:<22} skipped: {why}" for name, why in self.skipped.items()]
        return "\n".join([*rows, "", *self.strategy_table()])

    def strategy_table(self) -> list[str]:
        """The pick's strategies: expected accuracy (measured where it can be) and time."""
        pick, d = self.best, self.domain
        ft = FINETUNE_EPOCHS * pick.finetune_epoch_seconds()
        rows = [("probe", f"{held_out(pick):.2%}", pick.probe_seconds(), "measured")]
        if d is not None:
            rows.append(("probe --layers all", f"{d.held_out:.2%}", pick.probe_seconds(),
                         f"measured (reads {d.stages_read} of {d.stages} stages)"))  # fmt: skip
        if self.pilot is not None:
            p = self.pilot
            rows.append((f"partial ({p.epochs} ep)", f"{p.val_acc:.2%}", p.seconds,
                         "measured on the validation split (pilot)"))  # fmt: skip
        rows.append(("finetune", "?", ft, f"not measured: the probe's curve gains "
                     f"{pick.curve_gain:+.2%} from half the images to all"))  # fmt: skip
        chosen = self.strategy + (" --layers all" if self.layers == "all" else "")
        return [
            f"strategies for {pick.backbone}: expected accuracy (held out) and time here",
            *(
                f"  {name:<20} {acc:>8} {seconds:>7.0f} s  {note}"
                + ("  *" if name == chosen else "")
                for name, acc, seconds, note in rows
            ),
        ]

    def to_dict(self) -> dict:
        """For ``recommend.json``."""
        return {
            "pick": self.best.backbone,
            "strategy": self.strategy,
            "budget_s": self.budget_s,
            "reasons": self.reasons(),
            "layers": self.layers,
            "train_args": self.train_args(),
            "agreement": self.agreement(),
            "domain": self.domain.to_dict() if self.domain else None,
            "pilot": self.pilot.to_dict() if self.pilot else None,
            "candidates": [{**e.to_dict(), "held_out": held_out(e)} for e in self.evidence],
            "skipped": self.skipped,
        }

    def write(self, out: Path) -> tuple[Path, Path]:
        """``recommend.json`` and ``recommend.png`` (held-out accuracy against time) in ``out``."""
        from headstart.plots import plot_recommendation

        out.mkdir(parents=True, exist_ok=True)
        json_path = out / "recommend.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=1))
        points = [
            (e.backbone, e.finetune_epoch_seconds(), held_out(e),
             standard_error(held_out(e), e.n_train + e.n_val), e is self.best)
            for e in self.evidence
        ]  # fmt: skip
        return json_path, plot_recommendation(points, out / "recommend.png")
