"""The learning-rate range test: the rule on synthetic curves, the band it finds on a tiny
real problem, what it leaves untouched, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from headstart.cli.main import main
from headstart.finetune import Phase, Plan
from headstart.model import Classifier
from headstart.training.lr_find import MARGIN, divergence_onset, pick_lr, range_test, smooth
from headstart.training.objective import Objective
from tests.unit.conftest import FAST


def test_the_rule_keeps_the_default_below_a_third_of_the_onset_of_divergence() -> None:
    lrs = [10 ** (-7 + i / 10) for i in range(80)]  # 1e-7 .. 1e0
    # noisy and flat (one bump of 1.6x that falls back), then diverging from 1e-3
    loss = [0.2 + (0.12 if i == 20 else 0.01 * (i % 3)) for i in range(80)]
    loss = [
        v * (1 if lr < 1e-3 else 1 + 100 * (lr - 1e-3)) for v, lr in zip(loss, lrs, strict=True)
    ]
    onset = divergence_onset(lrs, loss)
    assert onset is not None and 1e-3 <= onset < 1.5e-2  # not the bump at 1e-5
    assert pick_lr(lrs, loss, 1e-5) == (1e-5, onset)  # a default below the cap stands
    assert pick_lr(lrs, loss, 1e-1)[0] == pytest.approx(onset / MARGIN)  # one above is capped
    flat = [0.2] * 80
    assert pick_lr(lrs, flat, 1e-2) == (1e-2, None)  # never diverged: nothing to cap


def test_the_range_test_finds_where_the_loss_diverges_and_restores_the_model() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1600, 8, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    flip = torch.rand(1600, generator=gen) < 0.15  # label noise: huge steps then cost loss
    y[flip] = 1 - y[flip]
    model = Classifier(nn.Identity(), 8, {"class": 2})
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    plan = Plan("probe", [Phase(0, {"head": 1.0})], "frozen")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    test = range_test(model, plan, loader, 0.0, torch.device("cpu"), Objective(), default=10.0,
                      progress=False)  # fmt: skip
    # the loss falls to the noise floor, then explodes; a default far too high is capped at a
    # third of the onset, past the fall of the loss and short of the explosion
    assert test.smoothed[0] > min(test.smoothed) + 0.1 and test.stopped.startswith("loss exploded")
    assert test.onset is not None and test.pick == pytest.approx(test.onset / MARGIN)
    below = [s for lr, s in zip(test.lrs, test.smoothed, strict=True) if lr <= test.pick]
    assert min(below) < test.smoothed[0] - 0.1  # the loss has fallen by the pick
    assert len(test.lrs) <= len(loader) and test.epochs <= 1.0  # at most one epoch here
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_smooth_is_bias_corrected() -> None:
    assert smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])


def test_lr_find_cli_writes_the_curve_and_train_lr_auto_uses_the_pick(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "find"
    argv = ["--no-progress", "lr-find", str(trainval_dataset), *FAST[:-1], "--strategy",
            "finetune", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    found = json.loads((out / "lr_find.json").read_text())
    assert (out / "lr_find.png").stat().st_size > 0
    assert f"lr-find: base LR {found['pick']:.2g}" in printed
    run = tmp_path / "run"
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--strategy",
            "finetune", "--epochs", "1", "--lr", "auto", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["lr_find"]["pick"] == pytest.approx(found["pick"])  # the same test
    assert manifest["strategy"]["lr"] == pytest.approx(found["pick"])
    assert (run / "lr_find.png").exists()
