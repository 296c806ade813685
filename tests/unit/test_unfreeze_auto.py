"""``--unfreeze-from auto``: partial starts at the earliest stage the multi-layer probe reads,
or at the family's default when it reads only the last stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.cli.main import main
from headstart.training import unfreeze
from headstart.training.regularise import Choice
from headstart.training.unfreeze import earliest
from tests.unit.conftest import FAST, train_cli

TRAIN = ["--no-progress", "train", *FAST[:-1], "--epochs", "1", "--strategy", "partial"]
STAGES = ["stem", "blocks.0", "blocks.1", "blocks.2", "conv_head"]


def test_the_earlier_of_the_default_and_the_first_stage_read() -> None:
    assert earliest(STAGES, "blocks.2", "blocks.0") == "blocks.0"  # earlier stages carry it
    assert earliest(STAGES, "blocks.2", "conv_head") == "blocks.2"  # the last alone: default
    assert earliest(STAGES, "blocks.2", "stem") == "stem"
    assert earliest(STAGES, "blocks.2", "not.a.stage") == "blocks.2"


def _reads(k: int, names: list[str]) -> Choice:
    return Choice(k, 0.1, {(k, 0.1): 0.9}, 3, 40, tuple(names))


@pytest.mark.parametrize("reads", [1, 3])
def test_partial_trains_from_the_chosen_stage(
    reads: int, trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    real = unfreeze.fit_head_by_cv
    chosen = {}

    def fixed(model, taps, *args, **kwargs):  # the real fit, then the stage count forced
        choice, loss, acc = real(model, taps, *args, **kwargs)
        chosen["names"] = choice.stage_names
        return _reads(reads, list(choice.stage_names)), loss, acc

    monkeypatch.setattr(unfreeze, "fit_head_by_cv", fixed)
    out, manifest = train_cli([*TRAIN, str(trainval_dataset), "--unfreeze-from", "auto"],
                              tmp_path / "run", capsys)  # fmt: skip
    record = manifest["unfreeze_from"]
    trained = list(manifest["strategy"]["phases"][0]["lr_mult"])
    first_read = chosen["names"][-reads]
    expected = record["default"] if reads == 1 else first_read
    assert record["stage"] == expected == trained[0]  # the plan trains from the choice
    assert record["stages_read"] == reads and record["rule"] == "auto"
    assert f"partial: unfreezes from {expected}" in out
    if reads == 1:  # the last stage alone: the family's default, and it says so
        assert "the default" in out


def test_auto_needs_the_feature_cache(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [*TRAIN, str(trainval_dataset), "--unfreeze-from", "auto", "--no-cache",
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--unfreeze-from auto chooses the stage from every stage's cached features" in err
    assert not (tmp_path / "r" / "manifest.json").exists()
