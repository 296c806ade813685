"""The warm-started head of the strategies that train the backbone, and the probe line it
draws. Tiny model, generated images: the mechanics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from headstart.backbones import create_backbone
from headstart.cli.main import main
from headstart.training.device import seed_everything
from headstart.training.verdict import below_probe
from tests.conftest import TINY
from tests.unit.conftest import FAST, train_cli

TRAIN = ["--no-progress", "train", *FAST[:-1], "--epochs", "1", "--lr", "0"]


def test_the_head_is_fitted_before_the_backbone_trains(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # with --lr 0 nothing moves during training: the saved head is the warm start's
    out = tmp_path / "run"
    printed, manifest = train_cli(
        [*TRAIN, str(trainval_dataset), "--strategy", "finetune"], out, capsys
    )
    warm = manifest["warm_head"]
    assert "head: warm-started on the frozen backbone's features" in printed
    assert f"(probe {warm['probe_val_acc']:.4f})" in printed  # beside every epoch
    saved = load_file(str(out / "model.safetensors"))
    head = saved["heads.class.1.weight"]
    assert head.abs().sum() > 0  # a zero-initialised head, fitted
    seed_everything(0)  # the backbone as the run created it: the warm start left it untouched
    pretrained = create_backbone(TINY, "none").module.state_dict()
    body = {k.removeprefix("backbone."): v for k, v in saved.items() if k.startswith("backbone.")}
    assert body.keys() == pretrained.keys()
    assert all(torch.equal(v, pretrained[k]) for k, v in body.items())
    # the run's validation accuracy at lr 0 is the warm head's own
    assert manifest["metrics"]["val_acc"] == pytest.approx(warm["val_acc"])
    # the line to beat is what --strategy probe scores on the same split, not the warm head
    _, probe = train_cli([*TRAIN, str(trainval_dataset)], tmp_path / "probe", capsys)
    assert probe["metrics"]["val_acc"] == pytest.approx(warm["probe_val_acc"])
    assert probe["head_cv"]["l2"] == warm["probe_l2"]


def test_no_warm_head_starts_from_zero(trainval_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [*TRAIN, str(trainval_dataset), "--strategy", "finetune", "--no-warm-head",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "manifest.json").read_text())["warm_head"] is None
    head = load_file(str(out / "model.safetensors"))["heads.class.1.weight"]
    assert torch.equal(head, torch.zeros_like(head))


def test_a_run_below_the_probe_says_so_with_the_fix() -> None:
    lines = below_probe("finetune", 0.80, 0.90, 100, 1e-3)
    assert lines[0] == "finetune ended below the probe (80.00% vs 90.00%, 10 of 100 images)."
    assert "Likely cause" in lines[1] and "--lr 0.0001" in lines[1]
    assert below_probe("finetune", 0.91, 0.90, 100, 1e-3) == []
    assert "within noise" in below_probe("partial", 0.89, 0.90, 100, 1e-3)[1]
    # fitting the training images worse than the probe: not adapted, raise the LR
    lines = below_probe("finetune", 0.74, 0.75, 525, 1e-5, train_acc=0.76, start_train_acc=0.85)
    assert "has not adapted" in lines[1] and "--lr 0.0001" in lines[1]
    # fitting them better but generalising worse: eroded, lower the LR
    lines = below_probe("finetune", 0.80, 0.90, 100, 1e-3, train_acc=0.99, start_train_acc=0.95)
    assert "too high" in lines[1] and "--lr 0.0001" in lines[1]
    # one image apart (ants/bees: 93.46% vs 94.12% of 153): noise, whatever the training
    # accuracies say; the reading is only what a larger gap would mean
    lines = below_probe("finetune", 143 / 153, 144 / 153, 153, 1e-5, 0.9795, 0.9836)
    assert lines[1].startswith("  That is within noise") and "Likely cause" not in lines[1]
    assert "would mean it has not adapted" in lines[1]
    # with the training set's size: 1 of 244 images apart says neither cause
    lines = below_probe("finetune", 0.90, 0.95, 153, 1e-5, 0.9795, 0.9836, n_train=244)
    assert "Likely cause: not clear from the training accuracies" in lines[1]
    assert "1 of 244 images apart" in lines[1] and "lr-find" in lines[1]
    assert "too low" in lines[1] and "--lr 0.0001" not in lines[1]  # no direction is named
    lines = below_probe("finetune", 0.90, 0.95, 153, 1e-5, 0.90, 0.9836, n_train=244)
    assert "has not adapted" in lines[1]  # 20 images apart: a reading
    # within noise on both counts: no cause at all
    lines = below_probe("finetune", 143 / 153, 144 / 153, 153, 1e-5, 0.9795, 0.9836, n_train=244)
    assert lines[1] == "  That is within noise, so prefer the cheaper probe here."
