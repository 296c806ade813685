"""``--drop-path``: stochastic depth while the backbone trains, nothing at evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from timm.layers import DropPath
from torch import nn
from torchvision.ops import StochasticDepth

from headstart.backbones import create_backbone
from headstart.cli.main import main
from headstart.errors import ConfigError
from tests.unit.conftest import FAST, served_val_loss, train_cli

LITE0 = "tf_efficientnet_lite0"  # residual blocks (the tiny test network has none to skip)
SMALL = ["--backbone", LITE0, "--weights", "none", "--image-size", "32"]


def test_timm_blocks_drop_their_branches_deeper_more_often_and_only_in_training() -> None:
    assert not any(isinstance(m, DropPath) for m in create_backbone(LITE0, "none").module.modules())
    backbone = create_backbone(LITE0, "none", drop_path=0.4)
    rates = [m.drop_prob for m in backbone.module.modules() if isinstance(m, DropPath)]
    assert len(rates) >= 3 and rates == sorted(rates) and 0 < rates[0] < rates[-1] <= 0.4
    x = torch.randn(4, 3, 64, 64)
    net = backbone.module
    for m in net.modules():  # timm starts each residual branch at zero: wake them
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
    torch.manual_seed(0)
    with torch.no_grad():
        trained = [net.train()(x) for _ in range(2)]
        evaluated = [net.eval()(x) for _ in range(2)]
    assert not torch.equal(trained[0], trained[1])  # branches dropped at random
    assert torch.equal(evaluated[0], evaluated[1])
    # no parameter of its own: the weights load into the architecture built without it
    plain = create_backbone(LITE0, "none").module.eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(plain(x), evaluated[0])


def test_torchvision_rates_are_set_where_the_architecture_has_them() -> None:
    net = create_backbone("efficientnet_b0", "none", drop_path=0.3).module
    rates = [m.p for m in net.modules() if isinstance(m, StochasticDepth)]
    assert rates and max(rates) == pytest.approx(0.3 * (len(rates) - 1) / len(rates))
    own = create_backbone("efficientnet_b0", "none").module  # torchvision's own 0.2
    assert max(m.p for m in own.modules() if isinstance(m, StochasticDepth)) < 0.2
    with pytest.raises(ConfigError, match="resnet18 has no stochastic depth"):
        create_backbone("resnet18", "none", drop_path=0.1)


def test_a_fine_tune_trains_with_it_and_serves_what_it_validated(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], *SMALL, "--strategy",
            "finetune", "--epochs", "1", "--precision", "fp32", "--lr", "1e-3",
            "--no-warm-head"]  # fmt: skip
    train_cli(argv, tmp_path / "plain", capsys)
    out, manifest = train_cli([*argv, "--drop-path", "0.3"], tmp_path / "with", capsys)
    assert "drop path 0.3," in out
    plain, dropped = (
        [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("plain", "with")
    )
    assert [h["train_loss"] for h in dropped] != [h["train_loss"] for h in plain]
    config = yaml.safe_load((tmp_path / "with" / "config.yaml").read_text())
    assert config["model"]["drop_path"] == 0.3
    # predict builds the backbone without it; evaluation ran every branch, so it agrees
    served = served_val_loss(tmp_path / "with")
    assert manifest["metrics"]["val_loss"] == pytest.approx(served, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--drop-path", "1"], "expected a rate from 0 to below 1"),
        (["--drop-path", "0.2", "--strategy", "probe"], "a probe's is frozen"),
    ],
)
def test_refusals_say_why_before_any_work(
    trainval_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    option: list[str],
    message: str,
) -> None:
    argv = ["train", str(trainval_dataset), *FAST[:-1], "--strategy", "finetune", *option]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
