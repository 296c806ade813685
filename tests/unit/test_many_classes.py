"""Datasets of many classes (Flowers-102, CUB-200 shaped): the terminal and the PNGs stay
readable and fast, and ``evaluation.json`` keeps everything whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.cli.main import main
from headstart.evaluation.confusions import most_confused, weakest_report
from tests.conftest import make_image
from tests.unit.conftest import FAST

CLASSES = 40


def test_weakest_report_ranks_by_recall_and_puts_classes_without_images_last() -> None:
    from sklearn.metrics import classification_report

    names = [f"c{i:02d}" for i in range(CLASSES)]
    y_true = np.repeat(np.arange(CLASSES - 1), 2)  # the last class has no images
    y_pred = y_true.copy()
    y_pred[[1, 3, 5]] = y_true[[1, 3, 5]] + 1  # c00, c01, c02 half right
    y_pred[6:8] = 9  # c03 never right
    kwargs = {"labels": list(range(CLASSES)), "target_names": names, "zero_division": 0}
    text = classification_report(y_true, y_pred, digits=4, **kwargs)
    report = classification_report(y_true, y_pred, output_dict=True, **kwargs)
    lines = weakest_report(text, report, names).splitlines()
    rows = [line.split()[0] for line in lines[3:15]]
    assert rows[:4] == [
        "c03",
        "c01",
        "c02",
        "c00",
    ]  # F1 breaks ties: c00 kept precision and "c39" not in rows
    assert lines[-3].split()[0] == "accuracy" and len(lines) == 19
    pairs = most_confused(np.array([[0, 2], [1, 0]]), ["a", "b"])
    assert pairs == [("a", "b", 2, 1.0), ("b", "a", 1, 1.0)]


def test_many_classes_train_and_evaluate_condense(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "many"
    for c in range(CLASSES):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        for i in range(4 if c else 2):
            make_image(data / f"class {c:02d}" / f"{i}.png", colour, size=32, seed=10 * c + i)
    out = tmp_path / "run"
    assert (
        main(["--no-progress", "train", str(data), *FAST[:-1], "--epochs", "1", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    summary = printed.split("model:")[0].splitlines()
    assert len(summary) == 1 + 12 + 2  # head, the 12 with fewest images, the rest, total
    assert summary[1].split()[:3] == ["class", "00", "train"]  # the fewest first
    assert "(28 more classes)" in printed

    assert main(["--no-progress", "evaluate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"the 12 classes of lowest recall, of {CLASSES}" in printed
    assert f"most confused of {CLASSES} classes" in printed
    assert "true \\ pred" not in printed  # no 40-column matrix in the terminal
    ev = json.loads((out / "evaluation.json").read_text())
    assert np.array(ev["confusion_matrix"]).shape == (CLASSES, CLASSES)
    assert len([k for k in ev["report"] if k.startswith("class")]) == CLASSES
    with Image.open(out / "confusion_matrix.png") as im:
        assert max(im.size) <= 2000  # at most 30 classes drawn, not a 40-class poster
