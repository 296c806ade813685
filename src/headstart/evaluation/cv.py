"""``headstart cv``: stratified k-fold cross-validation with confidence intervals, and a
paired comparison when several strategies share the folds.

Train and validation images are pooled (or only the training split, with ``keep_test``) and
cut into k stratified folds, repeated ``repeats`` times with different shuffles; every
strategy trains once per fold on the same folds. Frozen strategies read the feature cache,
so k folds of a probe cost little more than one run. Each fold's model also scores the
images it was trained without: their likely label errors, out of fold for every strategy
(:mod:`headstart.evaluation.cv_errors`).

Uncertainty: the mean fold accuracy gets a Student-t interval over folds. Folds share
training images, so their accuracies are correlated and a plain t-test over them is too
confident; the paired comparison of two strategies therefore uses the corrected resampled
t-test of Nadeau and Bengio (2003), which inflates the variance by (1/J + n_val/n_train).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.config import TrainConfig
from headstart.data import Sample
from headstart.errors import DataError
from headstart.evaluation.analysis import Suspect
from headstart.evaluation.cv_errors import OutOfFold
from headstart.stats import CONFIDENCE
from headstart.tables import text_table


@dataclass
class StrategyCV:
    """One strategy's accuracy on every fold, and its summary."""

    strategy: str
    fold_acc: list[float] = field(default_factory=list)
    label_errors: dict[str, list[Suspect]] = field(default_factory=dict)  # per task, out of fold

    @property
    def mean(self) -> float:
        """Mean fold accuracy."""
        return float(np.mean(self.fold_acc))

    @property
    def std(self) -> float:
        """Standard deviation over folds (ddof 1)."""
        return float(np.std(self.fold_acc, ddof=1)) if len(self.fold_acc) > 1 else 0.0

    def ci(self) -> tuple[float, float]:
        """95% Student-t interval for the mean fold accuracy, clipped to [0, 1] (the
        t-interval of a few folds near 100% reaches past it; no accuracy does)."""
        low, high = t_interval(self.fold_acc)
        return max(low, 0.0), min(high, 1.0)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t confidence interval for the mean of ``values``."""
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return (mean, mean)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    return (mean - float(half), mean + float(half))


def corrected_paired_t(a: Sequence[float], b: Sequence[float], test_train_ratio: float) -> float:
    """Two-sided p-value of the corrected resampled t-test (Nadeau & Bengio 2003) for the
    mean difference of paired fold accuracies."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    j = len(d)
    var = np.var(d, ddof=1)
    if j < 2 or var == 0:
        return 1.0 if np.allclose(d, 0) else 0.0
    t = d.mean() / math.sqrt((1 / j + test_train_ratio) * var)
    return float(2 * stats.t.sf(abs(t), j - 1))


def make_folds(
    samples: Sequence[Sample],
    folds: int,
    repeats: int,
    seed: int,
    groups: Sequence[str] | None = None,
) -> list[tuple[list[Sample], list[Sample]]]:
    """(train, val) per fold: stratified (:func:`strata`), every sample in exactly one val
    fold per repeat; with ``groups`` (``--group``), each group's samples in one fold."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is not None and len(set(groups)) < folds:
        raise DataError(
            f"DataError: --group leaves {len(set(groups))} group(s), fewer than the {folds} "
            "folds. Pass fewer --folds, or drop --group."
        )
    y = strata(samples, folds)
    out = []
    with warnings.catch_warnings():  # a class rarer than the folds: sklearn spreads it anyway
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        rng = np.random.RandomState(seed)  # as RepeatedStratifiedKFold draws its repeats
        kind = StratifiedKFold if groups is None else StratifiedGroupKFold
        for _ in range(repeats):
            cut = kind(folds, shuffle=True, random_state=rng).split(y, y, groups)
            out += [([samples[i] for i in tr], [samples[i] for i in va]) for tr, va in cut]
    return out


def strata(samples: Sequence[Sample], folds: int) -> list[str]:
    """What each sample is stratified by: its class; for a labels CSV, its classes in every
    task together, with combinations rarer than the folds pooled by the first task's class
    (a blank cell is a class of its own here)."""
    joint = [str(sorted(s.target.items())) if isinstance(s.target, dict) else str(s.target)
             for s in samples]  # fmt: skip
    counts = Counter(joint)
    first = [str(next(iter(s.target.values()), "")) if isinstance(s.target, dict) else key
             for s, key in zip(samples, joint, strict=True)]  # fmt: skip
    return [key if counts[key] >= folds else f"first task {f}" for key, f in zip(joint, first)]


@dataclass
class CVResult:
    """Per-strategy fold accuracies and what to say about them."""

    folds: int
    repeats: int
    n: int
    rows: list[StrategyCV]
    test_train_ratio: float

    def table(self) -> str:
        """Mean, std and 95% CI per strategy, then every fold's accuracy."""
        head = ["strategy", "mean acc", "std", "95% CI", "folds"]
        body = [
            [r.strategy, f"{r.mean:.4f}", f"{r.std:.4f}", "{:.4f}-{:.4f}".format(*r.ci()),
             " ".join(f"{a:.3f}" for a in r.fold_acc)]
            for r in self.rows
        ]  # fmt: skip
        return text_table([head, *body])

    def verdict(self) -> list[str]:
        """For two or more strategies: is the best one's lead over each other significant?"""
        if len(self.rows) < 2:
            return []
        best = max(self.rows, key=lambda r: r.mean)
        lines = []
        for r in self.rows:
            if r is best:
                continue
            p = corrected_paired_t(best.fold_acc, r.fold_acc, self.test_train_ratio)
            diff = 100 * (best.mean - r.mean)
            word = "significant" if p < 0.05 else "not significant"
            lines.append(
                f"{best.strategy} vs {r.strategy}: {diff:+.2f} points, p = {p:.3f} "
                f"(corrected resampled t-test): {word} at the 5% level."
            )
        return lines

    @staticmethod
    def _summary(r: StrategyCV) -> dict[str, Any]:
        return {"fold_acc": r.fold_acc, "mean": r.mean, "std": r.std, "ci95": list(r.ci()),
                "likely_label_errors": {t: [s.to_dict() for s in errors]
                                        for t, errors in r.label_errors.items()}}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON form written as ``cv.json``."""
        return {
            "folds": self.folds,
            "repeats": self.repeats,
            "images": self.n,
            "strategies": {r.strategy: self._summary(r) for r in self.rows},
            "verdict": self.verdict(),
        }


def cross_validate(
    cfg: TrainConfig,
    strategies: Sequence[str],
    folds: int = 5,
    repeats: int = 1,
    *,
    keep_test: bool = False,
    out_dir: str | Path = "runs/cv",
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    resume: bool = False,
) -> CVResult:
    """Train every strategy on every fold (shared folds); write ``cv.json``. ``resume``:
    keep folds that finished, continue the interrupted one (see ``train``)."""
    from headstart.cache import Cache
    from headstart.training.members import check_choices, member_config
    from headstart.training.setup import load_data
    from headstart.training.train import train

    check_choices(cfg, [{"strategy.name": name} for name in strategies], "cv")
    cache = Cache(cfg.data.cache_dir) if cfg.data.cache else None
    base = load_data(cfg, cache, progress)
    pool = list(base.train) if keep_test else [*base.train, *base.val]
    groups = [base.groups[s.path] for s in pool] if base.groups else None
    fold_sets = make_folds(pool, folds, repeats, cfg.seed, groups)
    out = Path(out_dir)
    rows = []
    for name in strategies:
        row = StrategyCV(name)
        held_out = OutOfFold(Path(base.root).resolve())
        member, note = member_config(cfg, {"strategy.name": name, "optim.keep": "last"})
        for k, (tr, va) in enumerate(fold_sets, start=1):
            echo(f"\n=== {name}, fold {k}/{len(fold_sets)} ===")
            if note and k == 1:
                echo(note)
            split = replace(base, layout="fold", train=tr, val=va, val_fraction=None)  # tasks kept
            run_cfg = member.with_overrides({"out": str(out / name / f"fold{k}")})
            result = train(
                run_cfg, overwrite=overwrite, echo=echo, progress=progress, split=split,
                plots=False, resume=resume,
            )  # fmt: skip
            row.fold_acc.append(result.fit.best.val_acc)  # the last epoch's (keep last)
            held_out.add_run(out / name / f"fold{k}", cfg.device, progress)
        row.label_errors = held_out.label_errors()
        rows.append(row)
    n_val = len(fold_sets[0][1])
    cv = CVResult(folds, repeats, len(pool), rows, n_val / (len(pool) - n_val))
    out.mkdir(parents=True, exist_ok=True)
    (out / "cv.json").write_text(json.dumps(cv.to_dict(), indent=1))
    return cv
