"""--ema: the moving average of the weights matches a step-by-step reference, is what a run
validates and ships, and leaves training itself untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from headstart.training.averaging import WeightAverage, ema_decay
from tests.unit.conftest import served_val_loss, with_and_without


def test_the_average_follows_the_warmed_up_decay_step_by_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    names = list(model.state_dict())
    decay = ema_decay(1.0, 4)  # 0.75
    average = WeightAverage(model, names, decay)
    expected = {n: v.clone().double() for n, v in model.state_dict().items()}
    for t in range(1, 13):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(5, 3))  # moves the BatchNorm statistics and its counter
        average.update(model)
        d = min(decay, (1 + t) / (10 + t))
        for n, v in model.state_dict().items():
            if v.is_floating_point():
                expected[n] = d * expected[n] + (1 - d) * v.double()
            else:
                expected[n] = v.clone().double()
    for n in names:
        assert torch.allclose(average.tensors[n].double(), expected[n], atol=1e-6), n
    assert int(average.tensors["1.num_batches_tracked"]) == 12


def test_applied_lends_the_average_and_gives_the_weights_back() -> None:
    model = nn.Linear(2, 1)
    own = {n: v.clone() for n, v in model.state_dict().items()}
    average = WeightAverage(model, list(own), 0.5)
    average.tensors = {n: torch.full_like(v, 7.0) for n, v in own.items()}
    with average.applied(model):
        assert all(bool((v == 7).all()) for v in model.state_dict().values())
    assert all(torch.equal(model.state_dict()[n], v) for n, v in own.items())
    assert all(bool((v == 7).all()) for v in average.tensors.values())


def test_an_ema_run_validates_and_ships_the_average_without_changing_training(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    plain, ema, manifest = with_and_without(["--ema", "1"], trainval_dataset, tmp_path, capsys)
    assert manifest["ema"] == 1.0
    # what was validated (the best epoch's recorded loss) is what predict serves
    served = served_val_loss(tmp_path / "with")
    assert manifest["metrics"]["val_loss"] == pytest.approx(served, rel=1e-5, abs=1e-6)
    assert [h["train_loss"] for h in ema] == [h["train_loss"] for h in plain]  # same steps
    assert [h["val_loss"] for h in ema] != [h["val_loss"] for h in plain]  # other weights
    a, b = (
        load_file(str(tmp_path / "plain" / "model.safetensors")),
        load_file(str(tmp_path / "with" / "model.safetensors")),
    )
    assert any(not torch.equal(a[k], b[k]) for k in a)
