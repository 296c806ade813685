"""Defaults that scale with the data: the backbone LR from the training-image count, the head
multiplier from how the head starts, and what a run records of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from headstart.cli.main import main
from headstart.config import DataConfig, StrategyConfig, TrainConfig, load_config
from headstart.finetune.scaling import MAX_LR, MIN_LR, scaled_lr
from headstart.training.setup import resolve_config
from headstart.training.train import finished_result
from tests.unit.conftest import FAST, train_cli

TRAIN = ["--no-progress", "train", *FAST[:-1], "--epochs", "1"]


def test_the_lr_grows_with_the_images_between_its_bounds() -> None:
    counts = [10, 250, 500, 1000, 2000, 2500, 50_000]
    lrs = [scaled_lr(n) for n in counts]
    assert lrs == sorted(lrs) and lrs[0] == MIN_LR and lrs[-1] == MAX_LR
    assert scaled_lr(500) == pytest.approx(2 * scaled_lr(250))  # proportional in between


def test_the_head_multiplier_follows_the_warm_start() -> None:
    def resolved(**strategy: object) -> StrategyConfig:
        cfg = TrainConfig(DataConfig(root="x"), strategy=StrategyConfig(**strategy))  # type: ignore[arg-type]
        return resolve_config(cfg).strategy

    assert resolved(name="finetune").head_lr_mult == 10.0  # over a warm-started head
    assert resolved(name="finetune", warm_head=False).head_lr_mult == 100.0  # over a zero one
    assert resolved(name="finetune", head_lr_mult=3.0).head_lr_mult == 3.0  # given: kept
    assert resolved(name="finetune").lr is None  # scaled once the data is read
    assert resolved(name="probe").lr == 1e-3  # fixed


def test_a_run_records_the_scaled_lr_and_its_config_keeps_the_rule(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    argv = [*TRAIN, str(trainval_dataset), "--strategy", "finetune"]
    printed, manifest = train_cli(argv, out, capsys)
    n = manifest["data"]["train"]
    assert manifest["strategy"]["lr"] == pytest.approx(scaled_lr(n))
    assert manifest["strategy"]["head_lr_mult"] == 10.0
    assert manifest["lr_rule"].startswith(f"{scaled_lr(n):.2g} for {n:,} training images")
    assert f"lr: {manifest['lr_rule']}" in printed
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["strategy"]["lr"] is None  # the rule, so a repeat on other data scales again
    # resume of a finished run (compare/cv --resume) accepts it and reports the LR it ran at
    kept = finished_result(out, resolve_config(load_config(out / "config.yaml")), None, print)
    assert kept.config.strategy.lr == pytest.approx(scaled_lr(n))


def test_a_given_lr_is_kept_and_no_rule_is_recorded(trainval_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [*TRAIN, str(trainval_dataset), "--strategy", "finetune", "--lr", "3e-4",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["strategy"]["lr"] == pytest.approx(3e-4) and manifest["lr_rule"] is None
