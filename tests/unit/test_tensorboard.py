"""``--log tensorboard``: a real run's event files, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from headstart.cli.main import main
from headstart.report import write_report
from headstart.training.objective import Objective
from tests.unit.conftest import FAST

GRADUAL = ["--strategy", "gradual", "--epochs", "3", "--unfreeze-every", "1", "--lr", "0.01"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EventAccumulator]:
    """A tiny gradual-unfreezing run with --log tensorboard, and its events read back."""
    from tests.conftest import make_trainval

    root = tmp_path_factory.mktemp("tb")
    data = make_trainval(root / "data")
    out = root / "run"
    assert main(["--no-progress", "train", str(data), *FAST[:-1], *GRADUAL, "--log", "tensorboard",
                 "--out", str(out)]) == 0  # fmt: skip
    events = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return out, events


def test_every_epoch_has_losses_accuracies_and_the_ci(logged: tuple) -> None:
    out, events = logged
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for tag, key in [("loss/train", "train_loss"), ("loss/val", "val_loss"),
                     ("accuracy/train", "train_acc"), ("accuracy/val", "val_acc")]:  # fmt: skip
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [h["epoch"] for h in history]
        assert [e.value for e in scalars] == pytest.approx([h[key] for h in history], rel=1e-5)
    low = [e.value for e in events.Scalars("accuracy/val_ci_low")]
    high = [e.value for e in events.Scalars("accuracy/val_ci_high")]
    assert low == pytest.approx([h["val_acc_ci"][0] for h in history], rel=1e-5)
    assert all(lo <= h["val_acc"] <= hi for lo, hi, h in zip(low, high, history, strict=True))


def test_each_parameter_group_has_its_learning_rate(logged: tuple) -> None:
    """Gradual unfreezing: the head trains from epoch 1, earlier stages join later, so the
    per-stage LR curves start at different epochs."""
    _, events = logged
    lrs = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
           if tag.startswith("lr/")}  # fmt: skip
    assert "lr/head" in lrs and lrs["lr/head"] == [1, 2, 3]
    assert len(lrs) >= 3
    assert any(steps[0] > 1 for steps in lrs.values())  # a stage unfrozen later


def test_confusion_matrix_curves_and_hparams_are_written(logged: tuple) -> None:
    out, events = logged
    tags = events.Tags()
    assert {"confusion_matrix", "curves"} <= set(tags["images"])
    image = events.Images("confusion_matrix")[-1]
    assert image.width > 100 and image.encoded_image_string.startswith(b"\x89PNG")
    assert "_hparams_/experiment" in events.summary_metadata
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tensorboard"] == "tb"
    best = json.loads((out / "metrics.jsonl").read_text().splitlines()[manifest["best_epoch"] - 1])
    assert sum(map(sum, best["val_confusion"]["class"])) == best["val_n"]


def test_the_report_links_to_it(logged: tuple, tmp_path: Path) -> None:
    out, _ = logged
    html = write_report(out, tmp_path / "report.html").read_text()
    assert "tensorboard --logdir" in html and "tb" in html


def test_confusion_and_recall_agree_with_a_hand_count() -> None:
    import torch

    logits = {"t": torch.tensor([[2.0, 0, 0], [0, 2, 0], [2, 0, 0], [0, 0, 2], [0, 2, 0]])}
    targets = {"t": torch.tensor([0, 1, 1, 2, -1])}  # -1: missing, not counted
    confusion = Objective.confusion(logits, targets)
    assert confusion == {"t": [[1, 0, 0], [1, 1, 0], [0, 0, 1]]}
    assert Objective.recall(confusion) == {"t": [1.0, 0.5, 1.0]}


def test_without_the_package_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from headstart.errors import ConfigError
    from headstart.training.tensorboard import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"headstart\[tensorboard\]"):
        TensorBoardLog(Path("/nonexistent"))
