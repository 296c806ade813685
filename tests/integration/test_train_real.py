"""train -> evaluate -> predict on ants/bees with the real offline backbone, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headstart.cli.main import main

pytestmark = pytest.mark.integration


def test_probe_reaches_the_published_accuracy(
    hymenoptera: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "probe"
    assert main(["--no-progress", "train", str(hymenoptera), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"] == "package" and manifest["strategy"]["name"] == "probe"
    assert manifest["trainable_params"] == 1280 * 2 + 2
    assert manifest["metrics"]["val_acc"] >= 0.93  # 94.12% here; 96.2% over 5 folds (cv)
    assert "imageNotFound.gif: placeholder" in capsys.readouterr().out
    # the frozen backbone ran once per image; a second run (another seed) runs it not at all
    assert manifest["inputs"].pop("features")["key"]  # where evaluate finds them again
    assert manifest["inputs"] == {"reads": "features", "boundary": "pooled", "views": 0,
                                  "computed": 397, "reused": 0}  # fmt: skip
    again = tmp_path / "again"
    args = ["--no-progress", "train", str(hymenoptera), "--seed", "1", "--out", str(again)]
    assert main(args) == 0
    second = json.loads((again / "manifest.json").read_text())
    assert (second["inputs"]["computed"], second["inputs"]["reused"]) == (0, 397)
    assert "cached features (pooled; 0 computed, 397 reused" in capsys.readouterr().out

    assert main(["--no-progress", "evaluate", str(out), str(hymenoptera)]) == 0
    report = capsys.readouterr().out
    assert "on 153 images" in report
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(manifest["metrics"]["val_acc"])
    assert evaluation["report"]["ants"]["recall"] > 0.9

    ant = hymenoptera / "val" / "ants" / "10308379_1b6c72e180.jpg"
    assert main(["predict", str(out), str(ant), "--json", "--top-k", "1"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["predictions"]["class"][0]["label"] == "ants"


def test_finetune_defaults_reach_the_probe(hymenoptera: Path, tmp_path: Path) -> None:
    out = tmp_path / "finetune"
    # the default recipe (data-scaled LR, warm head, BatchNorm eval) over 3 of its 10 epochs:
    # on this split validation accuracy is 94.12% from epoch 1 at 3, 5 or 10 epochs (measured),
    # and the suite's longest test takes a third of the time (about 60 s against 175 s)
    args = ["--no-progress", "train", str(hymenoptera), "--strategy", "finetune", "--epochs", "3"]
    assert main([*args, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["reads"] == "images" and manifest["inputs"]["decoded_cache"]
    assert manifest["trainable_params"] == manifest["total_params"]
    assert manifest["metrics"]["val_acc"] >= 0.94
    # the fine-tuned model exports and verifies (BatchNorm in eval, every stage trained)
    from headstart.export import export_run

    [onnx_export] = export_run(out, progress=False)
    v = onnx_export.verification
    assert v.passed and v.top1_agree == {"class": 153} and v.max_abs_diff <= 1e-4
    assert v.accuracy["class"][0] == v.accuracy["class"][1] == manifest["metrics"]["val_acc"]
