"""Freezing, BatchNorm policy, plans and parameter groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from headstart.backbones import create_backbone
from headstart.config import OptimConfig
from headstart.finetune import (
    StrategyOptions,
    apply_bn_policy,
    apply_phase,
    backbone_stage_names,
    param_groups,
)
from headstart.finetune import make_plan as _make_plan
from headstart.model import Classifier
from headstart.training import fit
from tests.conftest import TINY


def tiny_classifier(num_classes: int = 2) -> Classifier:
    torch.manual_seed(0)
    bb = create_backbone(TINY, "none")
    return Classifier(bb.module, bb.num_features, {"class": num_classes}, 0.0, bb.spec.family)


TINY_STAGES = backbone_stage_names(tiny_classifier())


def make_plan(name: str, epochs: int = 10, **options: object):
    return _make_plan(StrategyOptions(name, **options), TINY_STAGES, epochs)  # type: ignore[arg-type]


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
    assert lrs[("blocks.0", True)] == pytest.approx(1e-4)
    assert lrs[("conv_head", True)] == pytest.approx(1e-4)
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


def test_keep_last_ships_the_last_epoch_and_trains_every_epoch() -> None:
    model = tiny_classifier()
    optim = OptimConfig(epochs=4, patience=1, keep="last")  # lr 0 and patience 1 would stop
    result = fit(model, make_plan("probe"), _loader(), _loader(), optim, 0.0, torch.device("cpu"),
                 progress=False)  # fmt: skip
    assert len(result.history) == 4 and "early stop" not in result.stop_reason
    assert result.best_epoch == 4 and result.best is result.history[-1]
    scratch = tiny_classifier()
    state, snapshots = scratch.state_dict, []
    fit(scratch, make_plan("scratch"), _loader(), _loader(),
        OptimConfig(epochs=3, patience=None, keep="last"), 0.05, torch.device("cpu"),
        on_epoch=lambda s: snapshots.append({k: v.clone() for k, v in state().items()}),
        progress=False)  # fmt: skip
    for k, v in scratch.state_dict().items():
        assert torch.equal(v, snapshots[-1][k]), k  # the last epoch's, whichever scored best


def test_early_stopping_stops_after_patience() -> None:
    model = tiny_classifier()
    optim = OptimConfig(epochs=20, patience=2)
    result = fit(model, make_plan("probe"), _loader(), _loader(), optim, 0.0, torch.device("cpu"),
                 progress=False)  # fmt: skip
    assert len(result.history) == 3  # lr 0: nothing improves after epoch 1
    assert "early stop" in result.stop_reason


def _trainable_stages(model: Classifier, phase_index: int, plan: object) -> set[str]:
    apply_phase(model, plan.phases[phase_index])  # type: ignore[attr-defined]
    from headstart.finetune import stage_params

    return {s for s, ps in stage_params(model).items() if all(p.requires_grad for _, p in ps)}


def test_tiny_backbone_has_named_stages() -> None:
    assert TINY_STAGES[0] == "stem" and TINY_STAGES[-1] == "conv_head"
    assert TINY_STAGES[1:-1] == [f"blocks.{i}" for i in range(len(TINY_STAGES) - 2)]


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("probe", {}, {"head"}),
        ("partial", {"unfreeze_from": "conv_head"}, {"conv_head", "head"}),
        ("finetune", {}, {*TINY_STAGES, "head"}),
        ("scratch", {}, {*TINY_STAGES, "head"}),
        ("gradual", {}, {"head"}),
        ("lp-ft", {}, {"head"}),
    ],
)
def test_each_strategy_first_phase_trainable_set(
    name: str, options: dict, expected: set[str]
) -> None:
    model = tiny_classifier()
    plan = make_plan(name, **options)
    assert _trainable_stages(model, 0, plan) == expected
    groups = param_groups(model, plan.phases[0], 1e-3, 0.01)
    assert {g["stage"] for g in groups} == expected
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert not frozen & {id(p) for g in groups for p in g["params"]}


def test_partial_default_starts_at_the_last_stage_without_a_family_default() -> None:
    plan = make_plan("partial")
    assert set(plan.phases[0].lr_mult) == {TINY_STAGES[-1], "head"}


def test_unknown_stage_is_a_clear_error() -> None:
    from headstart.errors import ConfigError

    with pytest.raises(ConfigError, match="not a stage of this backbone"):
        make_plan("partial", unfreeze_from="layer4")
    with pytest.raises(ConfigError, match="--stage-lr"):
        make_plan("finetune", stage_lr={"nope": 1.0})


def test_lr_decay_and_explicit_stage_lrs() -> None:
    decayed = make_plan("finetune", lr_decay=0.5, head_lr_mult=10).phases[0].lr_mult
    n = len(TINY_STAGES)
    assert decayed[TINY_STAGES[-1]] == 1.0 and decayed[TINY_STAGES[-2]] == 0.5
    assert decayed["stem"] == pytest.approx(0.5 ** (n - 1))
    assert decayed["head"] == 10
    given = {"blocks.0": 0.01, "conv_head": 1.0, "head": 10.0}
    explicit = make_plan("finetune", stage_lr=given).phases[0].lr_mult
    assert explicit["stem"] == 0.01  # takes the next named stage's multiplier
    assert explicit["blocks.1"] == 1.0 and explicit["head"] == 10.0
    frozen = make_plan("finetune", stage_lr={"stem": 0, "blocks.0": 0}).phases[0].lr_mult
    assert "stem" not in frozen and "blocks.0" not in frozen


def test_resnet_per_layer_recipe_is_expressible() -> None:
    """layer1/2 x0.01, layer3 x0.1, layer4 x1, head x10."""
    stages = ["stem", "layer1", "layer2", "layer3", "layer4"]
    recipe = {"layer1": 0.01, "layer2": 0.01, "layer3": 0.1, "layer4": 1.0, "head": 10.0}
    mult = _make_plan(StrategyOptions("finetune", stage_lr=recipe), stages, 10).phases[0].lr_mult
    assert {k: mult[k] for k in recipe} == recipe


def test_gradual_unfreezes_one_stage_every_k_epochs() -> None:
    plan = make_plan("gradual", epochs=8, unfreeze_every=2)
    starts = [p.start_epoch for p in plan.phases]
    assert starts == [0, 2, 4, 6]
    added = [sorted(set(b.lr_mult) - set(a.lr_mult)) for a, b in zip(plan.phases, plan.phases[1:])]
    assert added == [[TINY_STAGES[-1]], [TINY_STAGES[-2]], [TINY_STAGES[-3]]]


def test_lp_ft_probes_then_fine_tunes_everything_slowly() -> None:
    plan = make_plan("lp-ft", epochs=6)
    assert [p.start_epoch for p in plan.phases] == [0, 3]
    assert set(plan.phases[0].lr_mult) == {"head"} and plan.phases[0].lr_mult["head"] == 10  # warm
    assert set(plan.phases[1].lr_mult) == {*TINY_STAGES, "head"}
    assert max(plan.phases[1].lr_mult.values()) == 1.0


def test_gradual_adds_groups_without_resetting_state() -> None:
    """Newly unfrozen stages join the optimizer with their own warmup; the head keeps its
    AdamW state (its step count keeps growing across the transition)."""
    from headstart.training.loop import enter_phase

    model = tiny_classifier()
    plan = make_plan("gradual", epochs=4, unfreeze_every=1)
    opt = enter_phase(model, None, plan.phases[0], 1e-3, 0.0, step=0)
    assert {g["stage"] for g in opt.param_groups} == {"head"}
    head_w = model.heads["class"][1].weight
    model(torch.randn(2, 3, 64, 64))["class"].sum().backward()
    opt.step()
    state_before = opt.state[head_w]["step"].clone()
    opt = enter_phase(model, opt, plan.phases[1], 1e-3, 0.0, step=5)
    assert {g["stage"] for g in opt.param_groups} == {"head", TINY_STAGES[-1]}
    new = [g for g in opt.param_groups if g["stage"] == TINY_STAGES[-1]]
    assert all(g["start_step"] == 5 for g in new)
    assert torch.equal(opt.state[head_w]["step"], state_before)

    from headstart.training.schedule import set_group_lrs

    set_group_lrs(opt, 5, 100, 0, 0.01, group_warmup_steps=4)
    head_lr = next(g["lr"] for g in opt.param_groups if g["stage"] == "head")
    new_lr = new[0]["lr"]
    head_base = 1e-3 * plan.phases[1].lr_mult["head"]
    assert new_lr == pytest.approx(new[0]["base_lr"] * head_lr / head_base / 4)


def test_gradual_fit_trains_more_parameters_each_phase() -> None:
    model = tiny_classifier()
    first = {k: v.clone() for k, v in model.state_dict().items()}
    plan = make_plan("gradual", epochs=3, unfreeze_every=1)
    last: dict[str, torch.Tensor] = {}

    def snapshot(_: object) -> None:
        last.update({k: v.clone() for k, v in model.state_dict().items()})

    fit(model, plan, _loader(), _loader(), OptimConfig(epochs=3, patience=None), 1e-2,
        torch.device("cpu"), on_epoch=snapshot, progress=False)  # fmt: skip
    changed = {k for k, v in last.items() if not torch.equal(v, first[k])}
    touched = {k.split(".")[1] for k in changed if k.startswith("backbone.")}
    assert any(k.startswith("heads.") for k in changed)
    # conv_head and the last block trained; the stem never did
    assert "conv_head" in touched or "bn2" in touched
    assert not any(k.startswith("backbone.conv_stem") for k in changed)


def test_partial_keeps_frozen_stage_statistics_bit_identical() -> None:
    model = tiny_classifier()
    plan = make_plan("partial", unfreeze_from="conv_head", bn="frozen")
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    fit(model, plan, _loader(), _loader(), OptimConfig(epochs=1), 1e-2, torch.device("cpu"),
        progress=False)  # fmt: skip
    after = model.state_dict()
    moved = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert moved == {"backbone.bn2.running_mean", "backbone.bn2.running_var"}
