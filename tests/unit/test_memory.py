"""`--grad-checkpointing`: the backbone's blocks are recomputed in the backward pass (timm's
checkpointing runs), the run trains the weights the plain run trains, and what cannot be
honoured is refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.utils.checkpoint

from headstart.cli.main import main
from headstart.training import load_run
from tests.unit.conftest import FAST

TRAIN = ["--no-progress", "train", *FAST[:-1], "--epochs", "1", "--no-warm-head"]


def test_checkpointed_fine_tune_recomputes_blocks_and_trains_the_same_weights(
    trainval_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = [*TRAIN, str(trainval_dataset), "--strategy", "finetune", "--lr", "0.01"]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    calls: list[int] = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint",
                        lambda *a, **k: calls.append(1) or real(*a, **k))  # fmt: skip
    capsys.readouterr()
    assert main([*argv, "--grad-checkpointing", "--out", str(tmp_path / "ckpt")]) == 0
    assert "activations are recomputed in the backward pass" in capsys.readouterr().out
    assert calls  # timm's checkpointing ran the blocks
    plain, ckpt = (load_run(tmp_path / r).model.state_dict() for r in ("plain", "ckpt"))
    compared = 0
    for key, value in plain.items():
        torch.testing.assert_close(ckpt[key], value, rtol=1e-4, atol=1e-5)
        compared += int(value.is_floating_point() and key.startswith("backbone."))
    assert compared  # the backbone weights, not only the head


def test_checkpointing_is_refused_under_bn_train_and_a_note_for_cached_features(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [*TRAIN, str(trainval_dataset), "--grad-checkpointing"]
    out = tmp_path / "run"
    assert main([*argv, "--strategy", "finetune", "--bn", "train", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "BatchNorm statistics twice" in captured.err and "Traceback" not in captured.err
    assert "inputs:" not in captured.out  # refused before the loaders were made
    assert main([*argv, "--strategy", "probe", "--out", str(out)]) == 0
    assert "--grad-checkpointing saves nothing here" in capsys.readouterr().out
