"""Freezing, BatchNorm policy, plans and parameter groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from headstart.backbones import create_backbone
from headstart.config import OptimConfig
from headstart.finetune import apply_bn_policy, apply_phase, make_plan, param_groups
from headstart.model import Classifier
from headstart.training import fit
from tests.conftest import TINY


def tiny_classifier(num_classes: int = 2) -> Classifier:
    torch.manual_seed(0)
    bb = create_backbone(TINY, "none")
    return Classifier(bb.module, bb.num_features, {"class": num_classes})


def test_head_is_sized_from_the_backbone_and_starts_at_zero() -> None:
    model = tiny_classifier(3)
    linear = model.heads["class"][1]
    assert linear.in_features == create_backbone(TINY, "none").num_features
    assert linear.out_features == 3
    assert not linear.weight.any() and not linear.bias.any()
    assert model(torch.randn(2, 3, 64, 64))["class"].shape == (2, 3)


def test_probe_optimizes_only_the_head() -> None:
    model = tiny_classifier()
    phase = make_plan("probe").phase_at(0)
    apply_phase(model, phase)
    groups = param_groups(model, phase, 1e-3, 0.01)
    in_optimizer = {id(p) for g in groups for p in g["params"]}
    head = {id(p) for p in model.heads.parameters()}
    assert in_optimizer == head
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_finetune_groups_have_discriminative_lrs_and_no_decay_on_biases() -> None:
    model = tiny_classifier()
    phase = make_plan("finetune", head_lr_mult=10).phase_at(0)
    apply_phase(model, phase)
    groups = param_groups(model, phase, 1e-4, 0.05)
    lrs = {(g["stage"], g["weight_decay"] > 0): g["lr"] for g in groups}
    assert lrs[("backbone", True)] == pytest.approx(1e-4)
    assert lrs[("head", True)] == pytest.approx(1e-3)
    for g in groups:
        assert all((p.ndim > 1) == (g["weight_decay"] > 0) for p in g["params"])
    n_opt = sum(p.numel() for g in groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in model.parameters())


def test_bn_policies() -> None:
    model = tiny_classifier()
    apply_phase(model, make_plan("probe").phase_at(0))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for policy, expect_training in (("frozen", False), ("train", True), ("eval", False)):
        model.train()
        apply_bn_policy(model, policy)  # type: ignore[arg-type]
        assert all(bn.training == expect_training for bn in bns), policy
    apply_phase(model, make_plan("finetune").phase_at(0))
    model.train()
    apply_bn_policy(model, "frozen")  # trainable BN layers keep training under 'frozen'
    assert all(bn.training for bn in bns)


def _loader(n: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 64, 64, generator=g)
    y = torch.arange(n) % 2
    return DataLoader(TensorDataset(x, y), batch_size=8)


def test_frozen_batchnorm_statistics_do_not_move_during_a_probe() -> None:
    model = tiny_classifier()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert before
    fit(model, make_plan("probe"), _loader(), _loader(), OptimConfig(epochs=1), 1e-2,
        torch.device("cpu"), progress=False)  # fmt: skip
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert model.heads["class"][1].weight.abs().sum() > 0  # the head did train


def test_bn_train_policy_does_move_statistics() -> None:
    model = tiny_classifier()
    key = next(k for k in model.state_dict() if k.endswith("running_mean"))
    before = model.state_dict()[key].clone()
    fit(model, make_plan("probe", bn="train"), _loader(), _loader(), OptimConfig(epochs=1),
        1e-2, torch.device("cpu"), progress=False)  # fmt: skip
    assert not torch.equal(before, model.state_dict()[key])


def test_best_epoch_weights_are_restored() -> None:
    model = tiny_classifier()
    snapshots: list[dict[str, torch.Tensor]] = []
    result = fit(
        model, make_plan("scratch"), _loader(), _loader(), OptimConfig(epochs=4, patience=None),
        0.05, torch.device("cpu"),
        on_epoch=lambda s: snapshots.append({k: v.clone() for k, v in model.state_dict().items()}),
        progress=False,
    )  # fmt: skip
    best = result.best_epoch
    assert result.best.val_acc == max(h.val_acc for h in result.history)
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[best - 1][k]), k


def test_early_stopping_stops_after_patience() -> None:
    model = tiny_classifier()
    optim = OptimConfig(epochs=20, patience=2)
    result = fit(model, make_plan("probe"), _loader(), _loader(), optim, 0.0, torch.device("cpu"),
                 progress=False)  # fmt: skip
    assert len(result.history) == 3  # lr 0: nothing improves after epoch 1
    assert "early stop" in result.stop_reason
