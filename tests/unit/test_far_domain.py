"""Tools for data far from ImageNet: multi-layer probe, BatchNorm re-estimation, input size,
temperature scaling. Tiny models and generated images: the mechanics, not the accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from headstart.backbones import create_backbone
from headstart.cli.main import main
from headstart.evaluation.calibration import calibration
from headstart.evaluation.temperature import cross_fitted_ece, fit_temperature
from headstart.finetune.bn import adapt_batchnorm, batchnorms, statistics
from headstart.multilayer import StageTaps
from headstart.training import load_run
from headstart.training.lbfgs import fit_heads
from headstart.training.objective import Objective
from headstart.training.regularise import PENALTIES, largest_class, pick, stage_counts
from tests.conftest import TINY, make_class_folders
from tests.unit.conftest import FAST

TRAIN = ["--no-progress", "train", *FAST[:-1], "--epochs", "2"]


def test_taps_read_every_stage() -> None:
    bb = create_backbone(TINY, "none")
    taps = StageTaps(bb.module, bb.spec.family).eval()
    stages = list(bb.stages())
    assert taps.stage_names == stages  # one tap at the end of every stage
    x = torch.randn(2, 3, 64, 64)
    before = taps.raw(x)
    assert before.shape == (2, taps.num_features) == (2, sum(taps.dims))
    with torch.no_grad():  # change only the first block: the early features must move
        next(bb.module.blocks[0].parameters()).mul_(2)
    moved = (taps.raw(x) - before).abs().amax(0) > 0
    first = taps.dims[0]  # the stem's mean and std
    assert not moved[:first].any() and moved[first : first + taps.dims[1]].any()


def test_taps_standardise_with_the_training_statistics() -> None:
    bb = create_backbone(TINY, "none")
    taps = StageTaps(bb.module, bb.spec.family).eval()
    raw = taps.raw(torch.randn(16, 3, 64, 64))
    taps.fit_statistics(raw)
    z = taps.normalize(raw)
    assert torch.allclose(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4)
    assert torch.isfinite(z).all()


def test_a_multilayer_probe_trains_saves_loads_and_exports(
    trainval_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, str(trainval_dataset), "--layers", "all", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layers"] == "all" and manifest["head_cv"]["l2"] in PENALTIES
    cv = manifest["head_cv"]
    tried = {(c["stages"], c["l2"]) for c in cv["scores"]}
    n = len(create_backbone(TINY, "none").stages())
    assert tried == {(k, l2) for k in stage_counts(n) for l2 in PENALTIES}
    run = load_run(out)
    assert run.model.num_features == run.model.taps.num_features == manifest["num_features"]
    assert run.model.taps.stages_used == manifest["stages_read"]
    assert len(manifest["stages_read"]) == cv["stages"]  # the saved model reads what was chosen
    assert float(run.model.taps.std.min()) > 0 and bool(run.model.taps.mean.abs().sum() > 0)
    assert main(["--no-progress", "export", str(out)]) == 0  # verified against PyTorch


def test_static_int8_quantizes_the_network_not_the_taps_arithmetic(
    trainval_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    import headstart.export as export

    out = tmp_path / "run"
    assert main([*TRAIN, str(trainval_dataset), "--layers", "all", "--out", str(out)]) == 0
    monkeypatch.setattr(export, "relative_speed", lambda *a: 2.5)  # the tiny model's speed
    monkeypatch.setattr(export, "accuracy_lost", lambda v: 0.0)  # and accuracy are noise
    _, q = export.export_run(out, quantize="static", progress=False)
    graph = onnx.load(str(q.path)).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    quants = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    quantized = {made_by.get(n.input[0], "input") for n in quants}
    assert "Conv" in quantized  # the network's compute is quantized,
    assert not quantized & {"Cast", "Sub", "Sqrt", "Div"}  # never the std's own arithmetic


def test_a_multilayer_probe_trains_on_every_cached_view_with_folds_by_image(
    trainval_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headstart.training import regularise

    seen = {}
    real = regularise.choose_head

    def spy(model, taps, raw, targets, *args, **kwargs):
        seen["rows"], seen["groups"] = len(raw), kwargs.get("groups")
        return real(model, taps, raw, targets, *args, **kwargs)

    monkeypatch.setattr(regularise, "choose_head", spy)
    out = tmp_path / "views"
    argv = [*TRAIN, str(trainval_dataset), "--layers", "all", "--cached-views", "2", "--augment",
            "texture", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    n = 32  # training images of trainval_dataset
    assert seen["rows"] == 3 * n and sorted(set(seen["groups"])) == list(range(n))
    cv = json.loads((out / "manifest.json").read_text())["head_cv"]
    assert cv["standard_error"] == pytest.approx(  # counts images, not views
        float(
            np.sqrt(
                max(c["accuracy"] for c in cv["scores"])
                * (1 - max(c["accuracy"] for c in cv["scores"]))
                / n
            )
        )
    )


def test_stage_taps_probe_the_backbone_where_and_as_it_is() -> None:
    """``recommend`` taps a backbone its frozen pass already moved to the GPU: the probe
    image that sizes the stages follows the backbone's device and dtype (a bfloat16 module
    stands in for the GPU here; test_cuda taps one on the GPU)."""
    bb = create_backbone(TINY, "none")
    expected = StageTaps(bb.module, bb.spec.family).dims
    taps = StageTaps(bb.module.to(torch.bfloat16), bb.spec.family)
    assert taps.dims == expected


def test_use_top_zeroes_the_features_of_the_stages_not_read() -> None:
    bb = create_backbone(TINY, "none")
    taps = StageTaps(bb.module, bb.spec.family).eval()
    raw = taps.raw(torch.randn(4, 3, 64, 64)) + 1.0
    taps.use_top(1)
    z = taps.normalize(raw)
    last = taps.dims[-1]
    assert taps.stages_used == taps.stage_names[-1:]
    assert not z[:, :-last].any() and z[:, -last:].abs().sum() > 0
    taps.use_top(len(taps.dims))
    assert taps.stages_used == taps.stage_names and taps.normalize(raw)[:, 0].abs().sum() > 0


def test_the_lbfgs_head_is_scikit_learns_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    from headstart.model import Classifier

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=gen, dtype=torch.float64)
    y = (x[:, :3] @ torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64) > 0).long()
    y[x[:, 3] > 1.0] = 2  # a third class
    model = Classifier(torch.nn.Identity(), 6, {"class": 3}).double()
    l2 = 0.05
    fit_heads(model, x, {"class": y}, Objective(), l2, max_iter=500)
    ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x, y)
    head = model.heads["class"][-1]
    # the softmax is unchanged by a constant added to every class: compare centred weights
    ours = head.weight.detach() - head.weight.detach().mean(0)
    theirs = torch.as_tensor(ref.coef_) - torch.as_tensor(ref.coef_).mean(0)
    assert torch.allclose(ours, theirs, atol=1e-4)
    probs = torch.softmax(head(x), 1).detach().numpy()
    assert np.allclose(probs, ref.predict_proba(x.numpy()), atol=1e-4)


def test_the_one_standard_error_rule_prefers_fewer_stages() -> None:
    # within noise (1 point on 200 images): the last stage alone; clearly better: more stages
    assert pick({(1, 1.0): 0.90, (5, 0.1): 0.91, (9, 0.1): 0.915}, 200) == (1, 1.0)
    assert pick({(1, 1.0): 0.70, (5, 0.1): 0.74, (9, 0.1): 0.78}, 2000) == (9, 0.1)
    # the middle set when it is within one error of the best and the last alone is not
    assert pick({(1, 1.0): 0.70, (5, 0.1): 0.775, (9, 0.1): 0.78}, 2000) == (5, 0.1)
    # among one stage set's decays, the best, ties to the stronger
    assert pick({(1, 0.1): 0.8, (1, 10.0): 0.8, (1, 1.0): 0.79}, 100) == (1, 10.0)


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--weight-decay", "0.1"], "leave out --weight-decay"),
        (["--lr", "auto"], "leave out --lr auto"),
        (["--ema", "1"], "leave out --ema"),
    ],
)
def test_multilayer_refuses_what_its_solver_does_not_use(
    option: list[str], says: str, trainval_dataset: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    argv = [*TRAIN, str(trainval_dataset), "--layers", "all", *option, "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert says in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("strategy", ["finetune", "partial"])
def test_multilayer_is_a_probe_option(
    strategy: str, trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [*TRAIN, str(trainval_dataset), "--layers", "all", "--strategy", strategy,
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    assert "--layers all is a probe option" in capsys.readouterr().err


def test_adapt_recomputes_batchnorm_statistics_then_keeps_them() -> None:
    bb = create_backbone(TINY, "none")
    before = statistics(bb.module)
    images = [torch.randn(8, 3, 64, 64) * 3 + 1 for _ in range(3)]
    adapt_batchnorm(bb.module, images, progress=False)
    after = statistics(bb.module)
    assert not torch.allclose(before, after)
    assert all(not m.training for m in batchnorms(bb.module))
    # the first BatchNorm follows the stem convolution: its new running mean is the mean of
    # that convolution's output over every batch (a cumulative average of equal batches)
    first = batchnorms(bb.module)[0]
    with torch.no_grad():
        conv = torch.cat([bb.module.conv_stem(x) for x in images])
    assert torch.allclose(first.running_mean, conv.mean((0, 2, 3)), atol=1e-4)


def test_bn_adapt_trains_with_the_adapted_statistics_fixed(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    argv = [*TRAIN, str(trainval_dataset), "--strategy", "finetune", "--bn", "adapt",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "bn: statistics of" in printed and "re-estimated on 32 training images" in printed
    saved = load_file(str(out / "model.safetensors"))
    # recompute the adaptation alone: training must not have moved the statistics
    from headstart.data import ImageDataset, eval_transform, load_split
    from headstart.training.device import seed_everything

    seed_everything(0)  # as train() does before it creates the (randomly initialised) backbone
    bb = create_backbone(TINY, "none")
    split = load_split(trainval_dataset)
    ds = ImageDataset(split.train, eval_transform(bb.preprocessing))
    batches = [torch.stack([ds[i][0] for i in range(j, min(j + 8, len(ds)))])
               for j in range(0, len(ds), 8)]  # fmt: skip
    adapt_batchnorm(bb.module, batches, progress=False)
    name = next(k for k in saved if k.endswith("running_mean"))
    ours = bb.module.state_dict()[name.removeprefix("backbone.")]
    assert torch.allclose(saved[name], ours, atol=1e-5)


def test_image_size_reaches_the_manifest_and_the_export(
    trainval_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = [*TRAIN, str(trainval_dataset), "--image-size", "96", "--crop-pct", "1.0",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    prep = load_run(out).manifest["preprocessing"]
    assert (prep["input_size"], prep["resize_size"]) == (96, 96)
    assert main(["--no-progress", "export", str(out)]) == 0
    meta = json.loads((out / "model.onnx.json").read_text())
    assert meta["input"]["shape"] == ["batch", 3, 96, 96]
    assert meta["verification"]["images"] == 12


def test_temperature_lowers_the_ece_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 3000)
    guess = np.where(rng.random(3000) < 0.7, y, rng.integers(0, 3, 3000))
    logits = np.eye(3)[guess] * 8.0 + rng.normal(0, 0.5, (3000, 3))  # 70% right, ~100% sure
    t = fit_temperature(logits, y)
    assert t > 2
    before = calibration(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), y).ece
    assert cross_fitted_ece(logits, y) < before / 3


def test_calibrate_stores_a_temperature_that_predict_and_export_apply(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    run = load_run(trained_run)
    raw = run.model(torch.zeros(1, 3, 160, 160))["class"]
    assert main(["--no-progress", "evaluate", str(trained_run), "--calibrate",
                 "--no-analysis"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "temperature" in out and "cross-fitted halves" in out
    t = json.loads((trained_run / "manifest.json").read_text())["temperature"]["class"]
    scaled = load_run(trained_run).model(torch.zeros(1, 3, 160, 160))["class"]
    assert torch.allclose(scaled, raw / t, atol=1e-5)
    assert main(["--no-progress", "export", str(trained_run)]) == 0
    from headstart.export import load_engine

    x = np.zeros((1, 3, 160, 160), dtype=np.float32)
    onnx_logits = load_engine(trained_run / "model.onnx").logits(x)["class"]
    assert np.allclose(onnx_logits, (raw / t).detach().numpy(), atol=1e-4)


def test_orientation_free_tta_is_the_symmetry_group_of_the_square() -> None:
    from PIL import Image

    from headstart.backbones import Preprocessing
    from headstart.data import tta_transform

    prep = Preprocessing(32, 32, "bilinear", (0.0,) * 3, (1.0,) * 3)
    arr = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    views = tta_transform(prep, "texture")(Image.fromarray(arr))
    assert views.shape == (8, 3, 32, 32)
    x = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    group = [torch.rot90(x, k, (1, 2)) for k in range(4)]
    group += [g.flip(2) for g in group]
    for g in group:  # every symmetry present exactly
        assert any(torch.allclose(v, g, atol=1e-6) for v in views)
    assert tta_transform(prep, "photo")(Image.fromarray(arr)).shape[0] == 10


def test_texture_augmentation_rotates_and_keeps_grey_levels() -> None:
    from PIL import Image

    from headstart.backbones import Preprocessing
    from headstart.data import train_transform

    prep = Preprocessing(32, 32, "bilinear", (0.0,) * 3, (1.0,) * 3)
    grey = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8)[None, :] * 8, (32, 1))).convert(
        "RGB"
    )
    t = train_transform(prep, preset="texture")
    torch.manual_seed(0)
    outs = [t(grey) for _ in range(40)]
    assert all(torch.allclose(o[0], o[1]) and torch.allclose(o[1], o[2]) for o in outs)
    horizontal = [bool((o[0, :, -1] - o[0, :, 0]).mean() > 0.3) for o in outs]
    vertical = [bool((o[0, -1, :] - o[0, 0, :]).mean().abs() > 0.3) for o in outs]
    assert any(horizontal) and any(vertical)  # the ramp turned by 90 degrees at times


def test_a_balanced_sampler_draws_every_class_equally_often() -> None:
    from headstart.training.order import SeededOrder, balanced_weights

    targets = [0] * 90 + [1] * 10
    order = SeededOrder(100, torch.Generator().manual_seed(0), balanced_weights(targets))
    drawn = [targets[i] for _ in range(20) for i, _ in order]
    assert 0.4 < float(np.mean(drawn)) < 0.6  # not 0.1


def test_grayscale_data_is_recognised(tmp_path: Path) -> None:
    from PIL import Image

    from headstart.data import load_split
    from headstart.data.split import grayscale_note

    for c, level in (("dark", 60), ("light", 190)):
        for i in range(4):
            p = tmp_path / c / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (40, 40), level + i).save(p)
    note = grayscale_note(load_split(tmp_path, 0.5, 0))
    assert note is not None and "grayscale (4 of 4 sampled)" in note


def test_the_result_prints_recall_per_class(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [*TRAIN, str(trainval_dataset), "--class-weights", "balanced", "--sampler",
            "balanced", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("recall per class: blue ") and "red " in last and "(macro " in last
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert len(manifest["metrics"]["val_recall"]["class"]) == 2


def test_the_recall_line_of_many_classes_shows_the_lowest() -> None:
    from headstart.training.train import recall_line

    names = [f"c{i:03d}" for i in range(102)]
    values: list[float | None] = [1.0 - i / 200 for i in range(102)]
    line = recall_line({"class": values}, {"class": names})
    assert line.startswith("recall per class: the 12 lowest of 102: c101 0.495, c100 0.500")
    assert line.count(", ") == 11 and "c089" not in line and line.endswith("(macro 0.748)")
    few = recall_line({"class": [0.5, None, 1.0]}, {"class": ["a", "b", "c"]})
    assert few == "recall per class: a 0.500, c 1.000 (macro 0.750)"  # all shown, in order


def test_the_heads_folds_count_images_not_their_augmented_views(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, -1])
    assert largest_class(labels) == 3
    assert largest_class(labels, [0, 0, 0, 1, 1, 1, 2]) == 1  # three views of one image each
    one = make_class_folders(tmp_path / "one", {"red": 2, "blue": 2})  # one training image each
    argv = [
        *TRAIN,
        str(one),
        "--layers",
        "all",
        "--cached-views",
        "2",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2  # was an internal error from StratifiedGroupKFold
    said = capsys.readouterr().err
    assert "no class labelled twice" in said and "internal error" not in said
