"""Calibration, test-time augmentation and error analysis (issue 6, parts 3 and 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.backbones import Preprocessing
from headstart.cli.main import main
from headstart.data import tta_transform
from headstart.data.near_duplicates import perceptual_hashes
from headstart.evaluation.analysis import likely_label_errors, near_duplicates, top_losses
from headstart.evaluation.calibration import calibration
from headstart.serve import Predictor
from headstart.training import load_run
from tests.conftest import make_image

CLASSES = ["ants", "bees"]


def reference_ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE written as a plain loop over bins (lower edge open, upper closed)."""
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return total


def test_ece_matches_a_reference_implementation() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 4)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 4, 500)
    c = calibration(probs, y)
    assert c.ece == pytest.approx(reference_ece(probs, y), abs=1e-9)
    assert c.counts.sum() == 500
    assert 0 < c.ece < 1


def test_ece_is_zero_when_confidence_matches_accuracy() -> None:
    probs = np.tile([0.8, 0.2], (10, 1))
    y = np.array([0] * 8 + [1] * 2)  # 80% right at 80% confidence
    assert calibration(probs, y).ece == pytest.approx(0.0, abs=1e-9)
    overconfident = np.tile([0.99, 0.01], (10, 1))
    assert calibration(overconfident, y).ece == pytest.approx(0.19)


def test_top_losses_are_the_wrong_ones_worst_first() -> None:
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.05, 0.95], [0.6, 0.4], [0.2, 0.8]])
    y = np.array([0, 0, 0, 1, 1])
    paths = [f"img{i}.jpg" for i in range(5)]
    losses = top_losses(paths, probs, y, CLASSES)
    assert [s.path for s in losses] == ["img2.jpg", "img1.jpg", "img3.jpg"]
    assert losses[0].given == "ants" and losses[0].predicted == "bees"
    assert losses[0].probability == pytest.approx(0.95)
    assert [s.path for s in top_losses(paths, probs, y, CLASSES, k=1)] == ["img2.jpg"]


def test_likely_label_errors_rank_and_mark_confident_rejections() -> None:
    right = [[0.95, 0.05]] * 8 + [[0.05, 0.95]] * 8
    probs = np.array([*right, [0.02, 0.98], [0.45, 0.55], [0.96, 0.04]])
    y = np.array([0] * 8 + [1] * 8 + [0, 0, 1])
    paths = [f"img{i}.jpg" for i in range(len(y))]
    errors = likely_label_errors(paths, probs, y, CLASSES)
    assert [s.path for s in errors] == ["img16.jpg", "img18.jpg", "img17.jpg"]
    marks = {s.path: s.confident for s in errors}
    assert marks == {"img16.jpg": True, "img18.jpg": True, "img17.jpg": False}
    assert [s.to_dict()["confident"] for s in errors] == [True, True, False]  # JSON, report
    assert errors[1].given == "bees" and errors[1].predicted == "ants"


def test_near_duplicates_find_resized_copies_across_splits(tmp_path: Path) -> None:
    train = [make_image(tmp_path / f"train/{i}.png", (120, 90, 60), 64, seed=i) for i in range(6)]
    val = [make_image(tmp_path / f"val/{i}.png", (120, 90, 60), 64, seed=50 + i) for i in range(4)]
    copy = tmp_path / "val/copy.jpg"
    Image.open(train[3]).resize((80, 80)).save(copy, quality=90)  # resized, recompressed
    val.append(copy)
    read = lambda p: Image.open(p).convert("RGB")  # noqa: E731
    pairs = near_duplicates(
        [p.name for p in train], perceptual_hashes(train, read),
        [p.name for p in val], perceptual_hashes(val, read),
    )  # fmt: skip
    assert [(d.train, d.evaluated) for d in pairs] == [("3.png", "copy.jpg")]
    assert pairs[0].distance <= 4


def test_tta_views_and_their_average() -> None:
    prep = Preprocessing(32, 40, "bilinear", (0.5,) * 3, (0.5,) * 3)
    views = tta_transform(prep)(Image.new("RGB", (60, 50), (10, 200, 30)))
    assert views.shape == (10, 3, 32, 32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))

    class Engine:  # any engine: numpy batch in, logits per task out
        name = "test"

        def __init__(self) -> None:
            self.meta = {"tasks": {"class": ["a", "b", "c"]}, "preprocessing": prep.to_dict()}

        def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {"class": model(torch.from_numpy(batch)).numpy()}

    batch = torch.randn(2, 10, 3, 32, 32)
    got = Predictor(Engine()).probabilities_of(batch.numpy())["class"]
    with torch.no_grad():
        expected = model(batch.flatten(0, 1)).softmax(-1).view(2, 10, 3).mean(1).numpy()
    assert np.allclose(got, expected, atol=1e-6)


def test_predict_with_tta_averages_the_crops(
    trained_run: Path, trained_run_once: tuple[Path, Path]
) -> None:
    trainval_dataset = trained_run_once[1]
    predictor = Predictor.load(trained_run)
    image = Image.open(next((trainval_dataset / "val" / "red").iterdir())).convert("RGB")
    run = load_run(trained_run)
    with torch.no_grad():
        crops = tta_transform(run.preprocessing)(image)
        expected = run.model.eval()(crops)["class"].softmax(-1).mean(0).numpy()
    got = predictor.probabilities([image], tta=True)["class"][0]
    assert np.allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, predictor.probabilities([image])["class"][0])  # not one crop


def test_evaluate_reports_calibration_tta_losses_and_leakage(
    trained_run: Path,
    trained_run_once: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trainval_dataset = trained_run_once[1]
    held_out = tmp_path / "held_out"
    shutil.copytree(trainval_dataset / "val", held_out)
    leaked = held_out / "red" / "leaked.jpg"
    Image.open(trainval_dataset / "train" / "red" / "3.png").resize((40, 40)).save(leaked)
    args = ["--no-progress", "evaluate", str(trained_run), str(held_out), "--tta"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "without TTA" in out and "ECE" in out and "top losses" in out
    assert "likely label errors" in out
    assert "(in-sample; `cv` scores them out of fold)" in out  # a scratch run: no refit
    assert f"train/red/3.png ~ {leaked}" in out
    ev = json.loads((trained_run / "evaluation.json").read_text())
    assert ev["tta"].startswith("ten crops")
    assert ev["train_images"] == 32
    assert [(d["train"], Path(d["evaluated"]).name) for d in ev["near_duplicates"]] == [
        ("train/red/3.png", "leaked.jpg")
    ]
    assert 0 <= ev["calibration"]["ece"] <= 1 and ev["without_tta"]["accuracy"] >= 0
    assert len(ev["top_losses"]) == 13 - round(ev["accuracy"] * 13)
    assert np.allclose(np.sum(ev["confusion_matrix_normalised"], axis=1), 1)
    for name in ("confusion_matrix.png", "reliability.png", "top_losses.png", "roc.png"):
        assert (trained_run / name).stat().st_size > 1000
    auc = ev["roc_auc"]["per_class"]["red"]  # blue, red: the second class is the positive
    assert 0 <= auc["ci"][0] <= auc["auc"] <= auc["ci"][1] <= 1
    assert f"ROC AUC {auc['auc']:.4f}" in out and "positive class 'red'" in out
