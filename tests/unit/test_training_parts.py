"""Schedule, early stopping and config."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from headstart.config import (
    TrainConfig,
    check_ranges,
    config_from_dict,
    load_config,
    save_config,
)
from headstart.errors import ConfigError
from headstart.training import EarlyStopping, warmup_cosine
from headstart.training.setup import resolve_config


def test_warmup_then_cosine_to_floor() -> None:
    values = [warmup_cosine(s, 100, 10, 0.01) for s in range(101)]
    assert values[0] == pytest.approx(0.1)
    assert values[9] == pytest.approx(1.0)
    assert values[55] == pytest.approx(0.505, abs=1e-3)  # half-way down the cosine
    assert values[100] == pytest.approx(0.01)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_early_stopping_reasons() -> None:
    es = EarlyStopping(patience=2)
    assert es.update(0.5, 0).improved
    assert not es.update(0.5, 1).should_stop
    d = es.update(0.4, 2)
    assert d.should_stop and "no improvement for 2 epochs" in d.reason
    assert es.best_epoch == 0


def test_equal_accuracy_with_lower_loss_is_an_improvement() -> None:
    es = EarlyStopping(patience=3)
    es.update(0.9, 0, loss=0.5)
    assert es.update(0.9, 1, loss=0.4).improved
    assert not es.update(0.9, 2, loss=0.45).improved
    assert es.best_epoch == 1


def test_config_yaml_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig().with_overrides({"optim.epochs": 3, "strategy.name": "finetune"})
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_config_refuses_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"optim": {"epoch": 3}})
    (tmp_path / "bad.yaml").write_text("optim: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": {"drop_path": "abc"}}, "model.drop_path is 'abc'; expected a number or null"),
        ({"optim": {"epochs": 2.5}}, "optim.epochs is 2.5; expected a whole number"),
        ({"optim": {"epochs": True}}, "optim.epochs is True"),
        ({"data": {"tasks": "defect"}}, "data.tasks is 'defect'; expected a list (text each)"),
        ({"strategy": {"lr": "fast"}}, "expected a number or 'auto' or null"),
        ({"optim": {"task_weights": {"a": "x"}}}, "expected a mapping (text to a number)"),
        ({"seed": "0"}, "seed is '0'; expected a whole number"),
        ({"data": {"sampler": "foo"}}, "data.sampler is 'foo'; expected 'shuffle' or 'balanced'"),
        ({"log": "wandb"}, "log is 'wandb'; expected 'tensorboard' or null"),
        ({"optim": {"keep": "first"}}, "optim.keep is 'first'; expected 'best' or 'last'"),
        ({"strategy": {"bn": "on"}}, "expected 'frozen' or 'train' or 'eval' or 'adapt' or null"),
    ],
)
def test_config_refuses_values_of_the_wrong_type(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(values)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.layers", "every", "model.layers is 'every'; expected 'last' or 'all'."),
        ("optim.epochs", 2.5, "optim.epochs is 2.5; expected a whole number."),
    ],
)
def test_a_config_built_in_python_is_checked_before_any_work(
    key: str, value: object, message: str
) -> None:
    cfg = TrainConfig().with_overrides({"data.root": "d", key: value})
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config(cfg)


def test_config_takes_every_type_its_fields_allow() -> None:
    values = {"model": {"dropout": 1, "drop_path": None}, "strategy": {"lr": "auto"},
              "optim": {"task_weights": {"a": 2}}, "data": {"tasks": ["a"]}}  # fmt: skip
    cfg = config_from_dict(values)
    assert (cfg.model.dropout, cfg.strategy.lr, cfg.data.tasks) == (1, "auto", ["a"])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.dropout", 2.0, "--dropout 2.0; expected a rate from 0 to below 1."),
        ("model.dropout", float("nan"), "--dropout nan; expected a rate"),
        ("optim.label_smoothing", 1.5, "--label-smoothing 1.5; expected 0 to below 1."),
        ("data.num_workers", -1, "--workers -1; expected 0 (the main process) or more."),
        ("strategy.head_lr_mult", -1.0, "--head-lr-mult -1.0; expected a multiplier above 0."),
        ("strategy.lr", -1.0, "--lr -1.0; expected a number >= 0 or auto."),
        ("optim.patience", 0, "--patience 0; expected at least 1 epoch."),
        ("data.val_fraction", 1.5, "--val-fraction 1.5; expected a fraction between 0 and 1."),
        ("strategy.stage_lr", {"layer3": -1.0}, "--stage-lr layer3=-1.0; expected multipliers"),
        ("optim.task_weights", {"a": 1.0, "b": float("nan")}, "--task-weights b=nan; expected"),
    ],
)
def test_numbers_outside_their_option_s_range_are_refused(
    key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_ranges(TrainConfig().with_overrides({key: value}))


def test_the_defaults_and_unset_options_are_in_range() -> None:
    check_ranges(TrainConfig())
    check_ranges(TrainConfig().with_overrides({"strategy.lr": "auto", "optim.patience": None}))


def test_wilson_interval_matches_the_closed_form() -> None:
    """Reference: the Wilson score interval written out (Wilson 1927; Brown, Cai & DasGupta
    2001, eq. 4)."""
    import math

    from headstart.stats import wilson_interval

    z = 1.959963984540054
    for k, n in [(147, 153), (0, 10), (10, 10), (3, 7), (500, 1000)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = wilson_interval(k, n)
        assert lo == pytest.approx(max(0.0, centre - half), abs=1e-9)
        assert hi == pytest.approx(min(1.0, centre + half), abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_a_validation_pass_leaves_the_training_order_where_it_was() -> None:
    import torch

    from headstart.training.inputs import _loader

    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 12

        def __getitem__(self, item: int | tuple[int, int]) -> torch.Tensor:
            return torch.zeros(1)  # training items are (index, seed) pairs

    ds = Items()
    gen = torch.Generator().manual_seed(0)
    train = _loader(ds, TrainConfig(), True, gen, workers=0)
    val = _loader(ds, TrainConfig(), False, gen, workers=0)
    before = gen.get_state()
    for _ in range(3):
        list(val)  # each pass of a DataLoader draws a seed from its generator
    assert torch.equal(gen.get_state(), before)
    list(train)
    assert not torch.equal(gen.get_state(), before)  # training still draws its order from it


def test_the_epoch_line_of_a_solved_head_names_no_learning_rate() -> None:
    from headstart.training.history import EpochStats

    stats = EpochStats(1, 0.1, 1.0, 0.2, 0.95, 0.0, 2.0, val_acc_ci=(0.9, 0.98))
    assert "no lr (head solved)" in stats.line(1) and "0.00e+00" not in stats.line(1)
    assert "lr 1.00e-04" in EpochStats(1, 0.1, 1.0, 0.2, 0.95, 1e-4, 2.0).line(10)
