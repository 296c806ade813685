"""BatchNorm folded into convolutions for read-only passes: same outputs, undone exactly,
never where the convolution's output is read elsewhere, never in training mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from headstart.backbones import create_backbone
from headstart.training import TrainResult
from headstart.training.fold import fold_batchnorm, folded_batchnorm
from tests.conftest import TINY


def _randomise_bn(net: nn.Module) -> nn.Module:
    """Running statistics and affine parameters far from the identity, as pretrained ones
    are, so that a wrong fold shows."""
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen))
            m.running_var.copy_(torch.rand(c, generator=gen) * 3 + 0.1)
            m.weight.data.copy_(torch.randn(c, generator=gen))
            m.bias.data.copy_(torch.randn(c, generator=gen))
    return net.eval()


class _ReadTwice(nn.Module):
    """A convolution whose output both a BatchNorm and a residual sum read."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def _fold_counts(monkeypatch: pytest.MonkeyPatch, caller: ModuleType) -> list[int]:
    """How many BatchNorm layers each ``folded_batchnorm`` block that ``caller`` (a module
    of headstart) enters has folded, in order."""
    folded: list[int] = []
    real = caller.folded_batchnorm

    @contextmanager
    def spy(module: nn.Module, example: torch.Tensor | None = None) -> Iterator[int]:
        with real(module, example) as count:
            folded.append(count)
            yield count

    monkeypatch.setattr(caller, "folded_batchnorm", spy)
    return folded


def _train_tiny(tmp_path: Path, overrides: dict | None = None) -> TrainResult:
    """`train` on generated images with the tiny backbone, its run in ``tmp_path / "run"``."""
    from headstart.config import TrainConfig
    from headstart.training import train
    from tests.conftest import make_trainval

    base = {"data.root": str(make_trainval(tmp_path / "data")), "out": str(tmp_path / "run"),
            "model.backbone": TINY, "data.num_workers": 0,
            "data.cache_dir": str(tmp_path / "cache")}  # fmt: skip
    cfg = TrainConfig().with_overrides({**base, **(overrides or {})})
    return train(cfg, echo=lambda s: None, progress=False)


def test_a_folded_network_computes_the_same_and_is_restored_exactly() -> None:
    net = _randomise_bn(create_backbone(TINY, "none").module)
    x = torch.randn(4, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    before, modules = _state(net), [n for n, _ in net.named_modules()]
    with torch.inference_mode():
        expected = net(x)
    rng = torch.get_rng_state()
    with folded_batchnorm(net) as count:
        assert count == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 5
        assert torch.equal(torch.get_rng_state(), rng)  # resumed runs replay the global RNG
        with torch.inference_mode():
            folded = net(x)
        # the convolutions hold the BatchNorm now: their weights changed
        assert not torch.equal(net.conv_stem.weight, before["conv_stem.weight"])
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-5)
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert [n for n, _ in net.named_modules()] == modules
    with torch.inference_mode():
        assert torch.equal(net(x), expected)  # every BatchNorm computes again


def test_a_network_folded_already_is_not_folded_again() -> None:
    # two engines over one loaded run (evaluate's validation pass, then its evaluation) share
    # the backbone: the second finds the work done, and undoing it restores the first fold
    net = _randomise_bn(create_backbone(TINY, "none").module)
    x = torch.randn(2, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = net(x)
    first = fold_batchnorm(net)
    folded = _state(net)
    second = fold_batchnorm(net)
    assert first.count > 5 and second.count == 0
    assert all(torch.equal(v, folded[k]) for k, v in net.state_dict().items())
    with torch.inference_mode():
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)


def test_timms_batchnorm_keeps_its_activation_when_folded() -> None:
    net = _randomise_bn(nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct2d(8, act_layer=nn.ReLU)))
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        expected = net(x)
    folding = fold_batchnorm(net)
    with torch.inference_mode():
        out = net(x)
    assert folding.count == 1 and (out >= 0).all() and (out == 0).any()  # ReLU still applied
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    folding.undo()
    assert net[0].bias is not None  # that convolution had a bias: kept, restored
    with torch.inference_mode():
        assert torch.equal(net(x), expected)


def test_a_convolution_read_elsewhere_too_is_left_alone() -> None:
    net = _randomise_bn(_ReadTwice())
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        expected = net(x)
    with folded_batchnorm(net) as count:
        assert count == 0  # folding would change the residual sum: checked, undone
        with torch.inference_mode():
            assert torch.equal(net(x), expected)
    assert net.conv.bias is not None and "forward" not in vars(net.bn)


def test_batchnorm_in_training_mode_is_not_folded() -> None:
    net = _randomise_bn(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)))
    net.train()
    with folded_batchnorm(net) as count:
        assert count == 0
    assert net[0].bias is None


def test_an_exception_inside_the_block_still_restores() -> None:
    net = _randomise_bn(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)))
    before = _state(net)
    with pytest.raises(KeyError), folded_batchnorm(net):
        raise KeyError("interrupted")
    assert net[0].bias is None and torch.equal(net[0].weight, before["0.weight"])
    assert "forward" not in vars(net[1])


def test_a_probe_reads_folded_features_and_saves_the_backbone_unfolded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.training.inputs as inputs
    from headstart.training import load_run

    folded = _fold_counts(monkeypatch, inputs)
    _train_tiny(tmp_path)
    assert folded and folded[0] > 5  # the feature pass ran with its BatchNorm folded
    saved = load_run(tmp_path / "run").model.backbone.state_dict()
    torch.manual_seed(0)  # what train() does before creating the backbone
    fresh = create_backbone(TINY, "none").module.state_dict()
    assert saved.keys() == fresh.keys()  # no bias the folding added
    assert all(torch.equal(saved[k], fresh[k]) for k in fresh)


def test_a_network_that_reads_feature_maps_folds_on_an_example_of_its_input() -> None:
    tail = _randomise_bn(nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten()))  # fmt: skip
    maps = torch.randn(4, 16, 7, 7)
    assert fold_batchnorm(tail).count == 0  # a small image batch does not fit it
    with torch.inference_mode():
        expected = tail(maps)
    with folded_batchnorm(tail, maps[:2]) as count:
        assert count == 1 and "forward" in vars(tail[1])
        with torch.inference_mode():
            torch.testing.assert_close(tail(maps), expected, rtol=1e-4, atol=1e-5)
    assert "forward" not in vars(tail[1])


def test_a_partial_runs_validation_folds_its_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.training.loop as loop

    folded = _fold_counts(monkeypatch, loop)
    result = _train_tiny(tmp_path, {"strategy.name": "partial", "optim.epochs": 1})
    assert result.fit.history  # it trained, on the frozen prefix's cached maps
    assert folded and all(n > 0 for n in folded)  # each validation pass folded the tail
