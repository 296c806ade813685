"""The members of a race (compare, cv, --strategy auto) leave out the options they have
nothing to apply to and say so; anything else a member refuses stops the race up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from headstart.cli.main import main
from headstart.config import TrainConfig
from headstart.training.members import member_config
from tests.unit.conftest import FAST

GIVEN = {"model.drop_path": 0.1, "optim.cutmix": 1.0, "optim.mixup": 0.2, "optim.ema": 1.0,
         "optim.weight_decay": 0.05, "strategy.lr": "auto"}  # fmt: skip
OFF = {"model.drop_path": None, "optim.cutmix": 0.0, "optim.mixup": 0.0, "optim.ema": None,
       "optim.weight_decay": None, "strategy.lr": None}  # fmt: skip
PROBE = {"strategy.name": "probe"}


@pytest.mark.parametrize(
    ("choice", "left_out", "shown"),
    [
        ({"strategy.name": "finetune"}, [], ""),  # its backbone trains: every option applies
        (PROBE, ["model.drop_path", "optim.cutmix"], "--drop-path 0.1, --cutmix 1"),
        ({**PROBE, "data.cache": False}, ["model.drop_path"], "--drop-path 0.1"),  # a box: images
        ({**PROBE, "model.layers": "all"}, list(OFF),
         "--drop-path 0.1, --cutmix 1, --mixup 0.2, --ema 1, --weight-decay 0.05, --lr auto"),
    ],
)  # fmt: skip
def test_a_member_leaves_out_only_what_it_has_nothing_to_apply_to(
    choice: dict, left_out: list[str], shown: str
) -> None:
    cfg = TrainConfig().with_overrides(GIVEN)
    member, note = member_config(cfg, choice)
    assert member == cfg.with_overrides({**choice, **{k: OFF[k] for k in left_out}})
    if left_out:
        assert note is not None and f"has nothing to apply {shown} to;" in note
    else:
        assert note is None


def test_compare_applies_drop_path_and_cutmix_to_the_fine_tune_and_says_the_probe_cannot(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "race"
    argv = ["--no-progress", "compare", str(trainval_dataset), "--strategies", "probe,finetune",
            *FAST[:-1], "--epochs", "1", "--drop-path", "0.1", "--cutmix", "1",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "note: a probe has nothing to apply --drop-path 0.1, --cutmix 1 to" in said
    probe, finetune = (yaml.safe_load((out / n / "config.yaml").read_text()) for n in
                       ("probe", "finetune"))  # fmt: skip
    assert (probe["model"]["drop_path"], probe["optim"]["cutmix"]) == (None, 0.0)
    assert (finetune["model"]["drop_path"], finetune["optim"]["cutmix"]) == (0.1, 1.0)
    manifest = json.loads((out / "finetune" / "manifest.json").read_text())
    assert manifest["mixing"] == {"mixup": 0.0, "cutmix": 1.0}


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["compare", "--strategies", "probe,finetune", "--layers", "all"], "a probe option"),
        (["compare", "--strategies", "probe,finetune", "--layers", "all", "--cv", "2"],
         "a probe option"),
        (["train", "--strategy", "auto", "--no-cache"], "without --no-cache"),  # layers all
    ],
)  # fmt: skip
def test_a_race_refuses_up_front_what_one_of_its_members_refuses(
    command: list[str], says: str, trainval_dataset: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    argv = ["--no-progress", command[0], str(trainval_dataset), *command[1:], *FAST[:-1],
            "--epochs", "1", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    assert says in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "r").exists()  # the probe, listed first, never trained
