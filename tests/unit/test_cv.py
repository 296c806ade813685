"""Cross-validation: folds, interval arithmetic, the corrected paired test, the command."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from headstart.cli.main import main
from headstart.data import Sample
from headstart.evaluation.cv import StrategyCV, corrected_paired_t, make_folds, t_interval
from tests.conftest import TINY, make_class_folders


def test_folds_are_stratified_disjoint_and_cover_everything() -> None:
    samples = [Sample(Path(f"{i}.png"), int(i < 30)) for i in range(90)]  # 30 vs 60
    folds = make_folds(samples, 5, 2, seed=0)
    assert len(folds) == 10
    for r in range(2):
        vals = [s for _, va in folds[5 * r : 5 * r + 5] for s in va]
        assert sorted(str(s.path) for s in vals) == sorted(str(s.path) for s in samples)
    for tr, va in folds:
        assert not {s.path for s in tr} & {s.path for s in va}
        assert Counter(s.target for s in va) == {1: 6, 0: 12}  # the 1:2 ratio in every fold


def test_t_interval_matches_scipy_reference() -> None:
    from scipy import stats

    values = [0.94, 0.96, 0.95, 0.97, 0.93]
    sem = np.std(values, ddof=1) / math.sqrt(len(values))
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sem)
    assert t_interval(values) == pytest.approx(ref)


def test_an_accuracy_interval_stays_within_0_and_1() -> None:
    folds = StrategyCV("probe", [1.0, 0.923, 0.846, 0.846, 1.0])  # 5 folds of 13 images
    assert t_interval(folds.fold_acc)[1] > 1  # the t-interval itself reaches past 100%
    low, high = folds.ci()
    assert high == 1.0 and low == pytest.approx(t_interval(folds.fold_acc)[0])


def test_corrected_paired_t_is_more_cautious_than_the_plain_one() -> None:
    from scipy import stats

    a = [0.95, 0.96, 0.94, 0.97, 0.95]
    b = [0.93, 0.95, 0.93, 0.95, 0.94]
    plain = stats.ttest_rel(a, b).pvalue
    corrected = corrected_paired_t(a, b, test_train_ratio=0.25)
    assert corrected > plain  # the variance is inflated by (1/J + n_val/n_train) / (1/J)
    d = np.subtract(a, b)
    t = d.mean() / math.sqrt((1 / 5 + 0.25) * np.var(d, ddof=1))
    assert corrected == pytest.approx(2 * stats.t.sf(abs(t), 4))
    assert corrected_paired_t(a, a, 0.25) == 1.0


def test_cv_command_runs_shared_folds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.evaluation.evaluate as evaluate

    data = make_class_folders(tmp_path / "d", {"red": 10, "blue": 10})
    (data / "red" / "0.png").rename(data / "blue" / "mislabelled.png")  # a red one called blue
    passes: list[int] = []
    real = evaluate._scores
    monkeypatch.setattr(
        evaluate, "_scores", lambda p, s, *a, **k: passes.append(len(s)) or real(p, s, *a, **k)
    )
    args = ["--no-progress", "cv", str(data), "--folds", "3", "--strategy", "probe",
            "--strategy", "partial", "--unfreeze-from", "blocks.4", "--backbone", TINY,
            "--workers", "0", "--batch-size", "8", "--epochs", "2",
            "--out", str(tmp_path / "cv")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3-fold cross-validation x 1" in out and "95% CI" in out
    assert "probe vs partial" in out or "partial vs probe" in out
    result = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert set(result["strategies"]) == {"probe", "partial"}
    assert all(len(s["fold_acc"]) == 3 for s in result["strategies"].values())
    for k, acc in enumerate(result["strategies"]["partial"]["fold_acc"], start=1):
        manifest = json.loads(
            (tmp_path / "cv" / "partial" / f"fold{k}" / "manifest.json").read_text()
        )
        # each fold keeps its last epoch, chosen without its held-out images, and what the
        # fold scores is the saved model's (the out-of-fold probabilities come from it)
        assert manifest["best_epoch"] == 2 and manifest["metrics"]["val_acc"] == acc
    # every image scored once, by the fold that held it out: a probe's from its cached
    # features, the partial runs' by a pass over each fold's held-out images
    assert sorted(passes) == [6, 7, 7]  # 20 images in 3 folds: the partial runs' only
    for name, summary in result["strategies"].items():
        errors = summary["likely_label_errors"]["class"]
        assert "blue/mislabelled.png" in [e["path"] for e in errors], name
        assert all(e["given"] != e["predicted"] for e in errors)
    assert "likely label errors (partial): " in out and "blue/mislabelled.png  given blue" in out


def test_out_of_fold_probabilities_average_over_repeats_and_skip_blank_labels() -> None:
    from headstart.data import MISSING
    from headstart.evaluation.cv_errors import OutOfFold

    held_out = OutOfFold(Path("/data"))
    classes = {"a": ["x", "y"], "b": ["p", "q"]}
    one = [Sample(Path("/data/1.png"), {"a": 0, "b": MISSING}), Sample(Path("/data/2.png"),
           {"a": 1, "b": 0})]  # fmt: skip
    held_out.add(one, {"a": np.array([[0.2, 0.8], [0.1, 0.9]]),
                       "b": np.array([[0.5, 0.5], [0.3, 0.7]])}, classes)  # fmt: skip
    held_out.add(one[:1], {"a": np.array([[0.6, 0.4]]), "b": np.array([[0.5, 0.5]])}, classes)
    errors = held_out.label_errors()
    # 1.png: mean of 0.2 and 0.6 for its label x, so y (0.6) wins; 2.png agrees on task a
    assert [(e.path, e.predicted, round(e.probability, 6)) for e in errors["a"]] == [
        ("1.png", "y", 0.6)
    ]
    assert [e.path for e in errors["b"]] == ["2.png"]  # 1.png has no label for b


def test_compare_cv_uses_shared_folds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_class_folders(tmp_path / "d", {"red": 8, "blue": 8})
    args = ["--no-progress", "compare", str(data), "--cv", "2", "--strategies", "probe,scratch",
            "--backbone", TINY, "--workers", "0", "--batch-size", "8", "--epochs", "1",
            "--out", str(tmp_path / "cmp")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2-fold cross-validation" in out and "corrected resampled t-test" in out
    result = json.loads((tmp_path / "cmp" / "cv.json").read_text())
    assert set(result["strategies"]) == {"probe", "scratch"} and result["verdict"]


def test_folds_of_a_labels_csv_stratify_by_every_task() -> None:
    """Multi-task targets (dicts, blanks allowed) are stratified by their joint classes;
    combinations rarer than the folds fall back to the first task's class."""
    samples = [Sample(Path(f"{i}.png"), {"a": i % 2, "b": (i // 2) % 2}) for i in range(40)]
    samples.append(Sample(Path("odd.png"), {"a": 1, "b": -1}))  # one of its kind
    folds = make_folds(samples, 4, 1, seed=0)
    for _, va in folds:
        joint = Counter((s.target["a"], s.target["b"]) for s in va if s.target["b"] >= 0)
        assert len(joint) == 4 and set(joint.values()) <= {2, 3}  # 10 of each over 4 folds
        assert len(va) in (10, 11)
    assert sorted(str(s.path) for _, va in folds for s in va) == sorted(
        str(s.path) for s in samples
    )


def test_cv_on_a_labels_csv_trains_every_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cv --labels` (a multi-task CSV) runs its folds with every task's head, no traceback."""
    from tests.unit.test_multitask import make_table

    csv = make_table(tmp_path / "t", n=24)
    args = ["--no-progress", "cv", "--labels", str(csv), "--folds", "2", "--strategy", "probe",
            "--backbone", TINY, "--workers", "0", "--batch-size", "8", "--epochs", "1",
            "--out", str(tmp_path / "cv")]  # fmt: skip
    assert main(args) == 0
    assert f"2-fold cross-validation x 1 on --labels {csv} (24 images)" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "cv" / "probe" / "fold1" / "manifest.json").read_text())
    assert set(manifest["tasks"]) == {"colour", "size"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cv", "--patience", "3"], "leave out --patience and --keep best"),
        (["cv", "--keep", "best"], "an early stop or a best epoch would be chosen on the images"),
        (["compare", "--cv", "3", "--keep", "best"], "leave out --patience and --keep best"),
        (["compare", "--patience", "3"], "compare trains every strategy for all its epochs"),
    ],
)
def test_options_cross_validation_would_ignore_are_refused(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_class_folders(tmp_path / "d", {"red": 4, "blue": 4})
    out = tmp_path / "out"
    assert main(["--no-progress", argv[0], str(data), *argv[1:], "--out", str(out)]) == 2
    assert message in " ".join(capsys.readouterr().err.split())  # the terminal wraps it
    assert not out.exists()  # refused before anything trains
