"""A multi-task model on the real solar-cell data (elpv): module type + defect grade."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headstart.cli.main import main

pytestmark = pytest.mark.integration


def test_multitask_probe_on_elpv(
    elpv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every fourth cell (656 of 2,624, every grade of both types): the backbone's cold pass
    # over all of them was the suite's second-longest test (71 s) and asserted nothing more
    rows = (elpv / "tasks.csv").read_text().splitlines()
    labels = tmp_path / "tasks.csv"
    labels.write_text("\n".join([rows[0], *rows[1::4]]) + "\n")
    out = tmp_path / "multi"
    args = ["--no-progress", "train", "--labels", str(labels), "--images-root", str(elpv),
            "--task-weights", "type=1,defect=2", "--class-weights", "balanced",
            "--epochs", "5", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["tasks"] == {"type": ["mono", "poly"],
                          "defect": ["defective", "likely", "none", "possible"]}  # fmt: skip
    assert m["data"]["train"] + m["data"]["val"] == 656
    per_task = m["metrics"]["val_acc_per_task"]
    assert per_task["type"] > 0.85 and per_task["defect"] > 0.5

    # the training-image analysis is covered on ants/bees; here it would add 525 images
    assert main(["--no-progress", "evaluate", str(out), "--no-analysis"]) == 0
    report = capsys.readouterr().out
    assert "task defect: accuracy" in report and "likely" in report
    assert (out / "confusion_matrix_type.png").is_file()
    assert (out / "confusion_matrix_defect.png").is_file()
