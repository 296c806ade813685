"""`headstart recommend`: the pick rule on made-up evidence, and the command end to end on a
tiny backbone and generated images."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from headstart.backbones import BackboneSpec, register
from headstart.backbones.registry import UnknownBackbone, get_spec
from headstart.cli.main import main
from headstart.finetune.bn import BNShift
from headstart.recommend.domain import DomainEvidence
from headstart.recommend.evidence import BackboneEvidence
from headstart.recommend.pilot import PILOT_EPOCHS, pilot_estimate, pilot_fits
from headstart.recommend.ranking import PICKS, Recommendation, held_out
from tests.conftest import TINY
from tests.unit.conftest import FAST

SECOND = "tiny_efficientnet_twin"


def _evidence(name: str, cv: float, val: float, speed: float) -> BackboneEvidence:
    return BackboneEvidence(name, 1_000_000, 224, 0.0, 0.5, cv, 3, val, (0.0, 1.0), 1000, 250,
                            speed, 1.0)  # fmt: skip


def test_the_pick_is_the_fastest_within_one_standard_error_of_the_best() -> None:
    best = _evidence("big", 0.90, 0.90, 10.0)
    close = _evidence("small", 0.895, 0.895, 40.0)  # SE on 1,250 images at 90%: 0.85 points
    far = _evidence("tiny", 0.80, 0.80, 100.0)
    rec = Recommendation([best, close, far])
    assert held_out(best) == pytest.approx(0.90)
    assert rec.best is close
    assert "4.0x as fast" in "\n".join(rec.reasons())
    climbing = replace(close, curve=((250, 0.80), (500, 0.84), (1000, 0.895)))
    flat = replace(close, curve=((250, 0.88), (500, 0.89), (1000, 0.895)))
    assert Recommendation([best, climbing]).strategy == "finetune"  # +5.5 points > 1 SE
    assert Recommendation([best, flat]).strategy == "probe"  # +0.5 points < 1 SE (2.7)
    # climbing, but 10 epochs x 1000 images x 3 / 40 per s = 750 s over a 10-minute budget
    tight = Recommendation([best, climbing], budget_s=600.0)
    assert tight.strategy == "probe" and "over the budget of 10 min" in "\n".join(tight.reasons())
    assert Recommendation([best, climbing], budget_s=900.0).strategy == "finetune"
    clear = Recommendation([_evidence("big", 0.95, 0.95, 10.0), close])
    assert clear.best.backbone == "big" and "more than one standard error" in clear.reasons()[1]


def _domain(stages_read: int, last: float, multi: float) -> DomainEvidence:
    return DomainEvidence("small", stages_read, 9, last, multi, 1000, multi, (0.0, 1.0), 250,
                          BNShift(40, 0.8, 1.2, 256), 5.0, "blocks.3")  # fmt: skip


def test_far_from_imagenet_the_measured_multi_layer_probe_is_the_pick() -> None:
    close = _evidence("small", 0.895, 0.895, 40.0)
    climbing = replace(close, curve=((250, 0.80), (500, 0.84), (1000, 0.895)))
    far = Recommendation([climbing], domain=_domain(5, 0.80, 0.86))
    assert far.domain is not None and far.domain.far and far.domain.gap == pytest.approx(0.06)
    assert (far.strategy, far.layers) == ("probe", "all")  # measured, though the curve climbs
    assert far.train_args() == "--backbone small --strategy probe --layers all"
    assert far.overrides()["model.layers"] == "all"
    said = "\n".join(far.reasons())
    assert "sits far from ImageNet" in said and "--strategy finetune" in said
    assert "--unfreeze-from auto, which trains the backbone from blocks.3" in said
    assert "variances by a factor of 3.32" in said  # exp(1.2): shown, not acted on
    assert (
        [r for r in far.table().splitlines() if r.endswith("*")][-1]
        .lstrip()
        .startswith("probe --layers all")
    )
    near = Recommendation([climbing], domain=_domain(1, 0.895, 0.895))
    assert (near.strategy, near.layers) == ("finetune", "last")  # earlier stages add noise
    assert "suits this data" in "\n".join(near.reasons())
    assert near.to_dict()["domain"]["far"] is False


def test_every_pick_the_rule_can_make_is_in_picks() -> None:
    """``train --strategy auto`` validates the options under each of ``PICKS`` before the
    recommendation runs; a pick missing from it would fail only after minutes of evidence."""
    close = _evidence("small", 0.895, 0.895, 40.0)
    climbing = replace(close, curve=((250, 0.80), (500, 0.84), (1000, 0.895)))
    made = set()
    for evidence in (close, climbing):
        for domain in (None, _domain(1, 0.895, 0.895), _domain(5, 0.80, 0.86)):
            for budget in (None, 1.0):
                rec = Recommendation([evidence], budget_s=budget, domain=domain)
                made.add((rec.overrides()["strategy.name"], rec.overrides()["model.layers"]))
    listed = {(p["strategy.name"], p["model.layers"]) for p in PICKS}
    assert made == listed  # every pick reachable, and every listed pick reachable


def test_recommend_ranks_the_candidates_with_weights_and_lists_the_rest(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    try:
        get_spec(SECOND)
    except UnknownBackbone:
        register(BackboneSpec(name=SECOND, library="timm", arch="test_efficientnet",
                              default_weights="none", summary="a second tiny candidate",
                              family="timm_efficientnet"))  # fmt: skip
    out = tmp_path / "rec"
    argv = ["--no-progress", "recommend", str(trainval_dataset), *FAST[2:-1], "--backbones",
            f"{TINY},{SECOND},resnet18", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    found = json.loads((out / "recommend.json").read_text())
    assert (out / "recommend.png").stat().st_size > 0
    assert found["pick"] in (TINY, SECOND) and f"--backbone {found['pick']}" in printed
    assert f"--strategy {found['strategy']}" in printed and "learning curve" in printed
    assert "resnet18" in found["skipped"] and "resnet18               skipped" in printed
    for c in found["candidates"]:
        assert 0.0 <= c["knn_acc"] <= 1.0 and 0.0 <= c["held_out"] <= 1.0
        assert c["images_per_s"] > 0 and c["val_ci"][0] <= c["val_acc"] <= c["val_ci"][1]
        assert c["n_train"] + c["n_val"] > 0 and c["logme"] == c["logme"]  # not NaN
        sizes = [n for n, _ in c["curve"]]
        assert len(sizes) == 3 and sizes == sorted(sizes) and sizes[-1] == c["n_train"]
        assert c["curve"][-1][1] == c["val_acc"]
    domain = found["domain"]  # the pick's multi-layer probe and BatchNorm shift
    assert domain["backbone"] == found["pick"] and 1 <= domain["stages_read"] <= domain["stages"]
    assert 0.0 <= domain["last_cv"] <= domain["multi_cv"] + 1e-9 <= 1.0 + 1e-9
    assert domain["bn_mean_shift"] > 0 and "multi-layer probe" in printed
    assert found["train_args"] in printed
    assert found["pilot"] is None  # no --budget: no pilot


def test_with_a_budget_a_short_partial_pilot_is_measured_and_shown(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "rec"
    argv = ["--no-progress", "recommend", str(trainval_dataset), *FAST[2:-1], "--backbones",
            TINY, "--budget", "10m", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    pilot = json.loads((out / "recommend.json").read_text())["pilot"]
    assert pilot["strategy"] == "partial" and pilot["epochs"] == PILOT_EPOCHS
    assert 0.0 <= pilot["val_acc"] <= 1.0 and pilot["n_val"] > 0 and pilot["seconds"] > 0
    assert pilot["probe_val"] is not None  # the warm head's line, on the same split
    assert f"pilot: partial for {PILOT_EPOCHS} epochs scores" in printed
    assert f"partial ({PILOT_EPOCHS} ep)" in printed  # a measured row of the strategy table


def test_the_pilot_runs_only_when_the_budget_allows() -> None:
    e = _evidence("a", 0.9, 0.9, 40.0)  # probe estimate: 1000 + 250 images at 40 per s
    assert not pilot_fits(e, None)
    assert pilot_fits(e, 4 * pilot_estimate(e))
    assert not pilot_fits(e, 4 * pilot_estimate(e) - 1)


def test_train_strategy_auto_trains_the_pick_and_keeps_the_evidence(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "auto"
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--strategy", "auto",
            "--epochs", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    rec = manifest["recommendation"]
    assert rec["pick"] == TINY == manifest["backbone"]  # --backbone given: the only candidate
    assert manifest["strategy"]["name"] == rec["strategy"] in ("probe", "finetune")
    assert f"auto: training with {rec['train_args']}" in printed
    assert manifest["layers"] == rec["layers"]
    from headstart.report import write_report

    html = write_report(out, progress=False).read_text()  # the report shows the decision
    assert f"<code>{rec['train_args']}</code>" in html and "multi-layer probe: CV" in html
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--budget", "10m",
            "--out", str(tmp_path / "no")]  # fmt: skip
    assert main(argv) == 2 and "--budget applies to --strategy auto" in capsys.readouterr().err


def test_recommend_on_a_handful_of_images_per_class(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Four training images a class: the learning curve drops the point with under two a
    class, the penalty's cross-validation uses the folds the data allows (it used to stop
    with an internal error from scikit-learn)."""
    from tests.conftest import make_class_folders

    data = make_class_folders(tmp_path / "few", {"red": 5, "blue": 5})
    out = tmp_path / "rec"
    argv = ["--no-progress", "recommend", str(data), *FAST[2:-1], "--out", str(out)]
    assert main(argv) == 0
    found = json.loads((out / "recommend.json").read_text())
    assert [n for n, _ in found["candidates"][0]["curve"]] == [4, 8]
    capsys.readouterr()
    one = make_class_folders(tmp_path / "one", {"red": 2, "blue": 2})  # one training image each
    assert main([*argv[:2], str(one), *argv[3:]]) == 2  # a clear error, not an internal one
    said = capsys.readouterr().err
    assert "no class labelled twice" in said and "internal error" not in said
