"""``compare_strategies``: race strategies on the same data, split, seed and epoch budget."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headstart.config import TrainConfig
from headstart.errors import ConfigError
from headstart.finetune import STRATEGIES
from headstart.plots import plot_comparison
from headstart.tables import text_table
from headstart.training import train
from headstart.training.members import check_choices, member_config
from headstart.training.verdict import below_probe

BACKBONE_TRAINING = ("partial", "finetune", "gradual", "lp-ft")


@dataclass(frozen=True)
class CompareRow:
    """One strategy's outcome."""

    strategy: str
    trainable_params: list[int]  # per phase
    best_val_acc: float
    best_epoch: int
    final_val_acc: float
    final_train_acc: float
    seconds_per_epoch: float
    total_seconds: float
    run_dir: str
    lr: float = 0.0
    start_train_acc: float | None = None  # its warm head's, on the frozen features
    val_acc_per_epoch: list[float] = field(default_factory=list)


@dataclass
class Comparison:
    """All rows, the validation-set size (for the noise floor) and the verdict lines."""

    rows: list[CompareRow]
    n_val: int
    verdict: list[str]
    json_path: Path
    png_path: Path

    def table(self) -> str:
        """The comparison as an aligned text table."""
        head = ["strategy", "trainable", "best val", "(epoch)", "final val", "final train"]
        head += ["s/epoch", "total s"]
        rows = [head]
        for r in self.rows:
            first, last = r.trainable_params[0], r.trainable_params[-1]
            trainable = f"{first:,}" if first == last else f"{first:,}->{last:,}"
            rows.append([
                r.strategy, trainable, f"{r.best_val_acc:.4f}", f"{r.best_epoch}",
                f"{r.final_val_acc:.4f}", f"{r.final_train_acc:.4f}", f"{r.seconds_per_epoch:.1f}",
                f"{r.total_seconds:.0f}",
            ])  # fmt: skip
        return text_table(rows)


def parse_strategies(text: str) -> list[str]:
    """``"probe,finetune"`` -> ``["probe", "finetune"]``, validated, duplicates refused."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    if bad or not names or len(set(names)) != len(names):
        raise ConfigError(
            f"ConfigError: --strategies {text!r}: expected distinct names from "
            f"{', '.join(STRATEGIES)}" + (f"; unknown: {', '.join(bad)}." if bad else ".")
        )
    return names


def verdict(
    rows: Sequence[CompareRow], n_val: int, mixed: bool = False, n_train: int | None = None
) -> list[str]:
    """Who won, by how much, whether that is more than noise, and fine-tuning warnings
    (``mixed``: the runs trained on blends; ``n_train`` training images: see
    :func:`below_probe`)."""
    ranked = sorted(rows, key=lambda r: (-r.best_val_acc, -r.final_val_acc, r.total_seconds))
    one_image = 100.0 / max(n_val, 1)
    lines = []
    if len(ranked) > 1:
        win, second = ranked[0], ranked[1]
        gap = 100 * (win.best_val_acc - second.best_val_acc)
        images = round(gap / one_image)
        lines.append(
            f"winner: {win.strategy} ({win.best_val_acc:.2%} best val accuracy), "
            f"{gap:.1f} points ({images} of {n_val} images) ahead of {second.strategy}."
        )
        if images <= 2:
            lines.append(
                f"  With {n_val} validation images one image is {one_image:.2f} points: "
                "a lead this small is within noise."
            )
    else:
        lines.append(f"only {ranked[0].strategy} ran: {ranked[0].best_val_acc:.2%}.")
    by_name = {r.strategy: r for r in rows}
    probe = by_name.get("probe")
    for name in BACKBONE_TRAINING:
        r = by_name.get(name)
        if probe is not None and r is not None:
            lines += below_probe(name, r.final_val_acc, probe.final_val_acc, n_val, r.lr,
                                 r.final_train_acc, r.start_train_acc, mixed, n_train)  # fmt: skip
    return lines


def compare_strategies(
    cfg: TrainConfig,
    strategies: Sequence[str],
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    resume: bool = False,
) -> Comparison:
    """Train each strategy with ``cfg`` (same data, split, seed, epochs; early stopping off so
    every strategy gets the full budget) and write ``compare.json`` and ``compare.png``.
    ``resume``: keep members that finished, continue the interrupted one (see ``train``)."""
    check_choices(cfg, [{"strategy.name": name} for name in strategies], "compare")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[CompareRow] = []
    n_val = n_train = 0
    for name in strategies:
        echo(f"\n=== {name} ===")
        run_cfg, note = member_config(
            cfg, {"strategy.name": name, "optim.patience": None, "out": str(out / name)}
        )
        if note:
            echo(note)
        result = train(run_cfg, overwrite=overwrite, echo=echo, progress=progress, resume=resume)
        hist = result.fit.history
        n_val, n_train = len(result.split.val), len(result.split.train)
        warm = json.loads((result.run_dir / "manifest.json").read_text()).get("warm_head") or {}
        rows.append(
            CompareRow(
                strategy=name,
                trainable_params=result.trainable_per_phase,
                lr=result.config.strategy.lr or 0.0,
                start_train_acc=warm.get("train_acc"),
                best_val_acc=result.fit.best.val_acc,
                best_epoch=result.fit.best_epoch,
                final_val_acc=hist[-1].val_acc,
                final_train_acc=hist[-1].train_acc,
                seconds_per_epoch=sum(h.seconds for h in hist) / len(hist),
                total_seconds=result.seconds,  # a kept run's own, from its manifest
                run_dir=str(result.run_dir),
                val_acc_per_epoch=[h.val_acc for h in hist],
            )
        )
    lines = verdict(rows, n_val, cfg.optim.mixes, n_train)
    png = plot_comparison({r.strategy: r.val_acc_per_epoch for r in rows}, out / "compare.png")
    payload: dict[str, Any] = {
        "data": cfg.data.root,
        "backbone": cfg.model.backbone,
        "epochs": cfg.optim.epochs,
        "seed": cfg.seed,
        "n_val": n_val,
        "rows": [asdict(r) for r in rows],
        "verdict": lines,
    }
    (out / "compare.json").write_text(json.dumps(payload, indent=1))
    return Comparison(rows, n_val, lines, out / "compare.json", png)
