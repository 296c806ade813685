"""The probe's head on cached features: L2-regularised logistic regression solved by
L-BFGS, its penalty chosen by cross-validation on the training images (not epochs of AdamW,
which stop short of the solution when there are few images a class)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from headstart.cli.main import main
from headstart.training import load_run
from headstart.training.regularise import LAST_LAYER_PENALTIES
from tests.unit.conftest import FAST

TRAIN = ["--no-progress", "train", *FAST[:-1]]


def test_the_probe_fits_its_head_to_convergence_at_the_chosen_penalty(
    trainval_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    import headstart.plots

    drawn = {}
    real = headstart.plots.plot_penalty_path

    def spy(scores, losses, chosen, path, *args):
        drawn.update(scores=scores, losses=losses, chosen=chosen)
        return real(scores, losses, chosen, path, *args)

    monkeypatch.setattr(sys.modules["headstart.training.train"], "plot_penalty_path", spy)
    out = tmp_path / "probe"
    assert main([*TRAIN, str(trainval_dataset), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "head: L2 " in printed and "(fitted to convergence by L-BFGS)" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    cv = manifest["head_cv"]
    assert {c["l2"] for c in cv["scores"]} == set(LAST_LAYER_PENALTIES)
    assert cv["l2"] in LAST_LAYER_PENALTIES and manifest["best_epoch"] == 1
    assert cv["chosen_by"] == "log-loss"  # the proper score: no ties to the strongest penalty
    assert cv["l2"] == min(cv["scores"], key=lambda c: (c["log_loss"], -c["l2"]))["l2"]
    # its curves.png is the penalty's cross-validation (a probe has no epochs to draw)
    assert drawn["chosen"] == (1, cv["l2"]) and len(drawn["losses"]) == len(LAST_LAYER_PENALTIES)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["--no-progress", "report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "<h2>The head's penalty, chosen by cross-validation</h2>" in html
    # the saved head is the minimiser: the penalised loss's gradient there is about zero
    run = load_run(out)
    split = json.loads((out / "split.json").read_text())
    from headstart.data.transforms import eval_transform
    from headstart.imaging import load_rgb

    tf = eval_transform(run.preprocessing)
    root = Path(split["root"])
    classes = manifest["tasks"]["class"]
    x = torch.stack([tf(load_rgb(root / p)) for p, _ in split["train"]])
    y = torch.tensor([classes.index(t) if isinstance(t, str) else t for _, t in split["train"]])
    with torch.no_grad():
        feats = run.model.backbone(x).float()
    linear = run.model.heads["class"][-1]
    w, b = linear.weight.detach().clone().requires_grad_(), linear.bias.detach().clone()
    loss = torch.nn.functional.cross_entropy(feats @ w.T + b, y) + 0.5 * cv["l2"] * (w**2).sum()
    (grad,) = torch.autograd.grad(loss, w)
    assert float(grad.abs().max()) < 1e-3


def test_a_balanced_sampler_becomes_balanced_class_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from tests.conftest import make_class_folders

    train_module = sys.modules["headstart.training.train"]  # the package exports train()

    seen = {}
    real = train_module.fit_probe_head

    def spy(model, taps, train, val, tail, objective, *args):
        seen["weights"] = objective.class_weights
        return real(model, taps, train, val, tail, objective, *args)

    monkeypatch.setattr(train_module, "fit_probe_head", spy)
    data = make_class_folders(tmp_path / "imbalanced", {"red": 30, "blue": 8})
    out = tmp_path / "run"
    assert main([*TRAIN, str(data), "--sampler", "balanced", "--out", str(out)]) == 0
    assert "balanced class weights" in capsys.readouterr().out
    weights = seen["weights"]["class"]  # blue (index 0) is the rare class: weighed more
    assert float(weights[0]) > float(weights[1])
    # recorded with the head, so that evaluate's out-of-fold refits minimise the same loss
    recorded = json.loads((out / "manifest.json").read_text())["head_cv"]["objective"]
    assert recorded["class_weights"]["class"] == pytest.approx(weights.tolist())


def test_label_errors_of_a_probe_are_scored_out_of_fold() -> None:
    import numpy as np

    from headstart.evaluation.out_of_fold import heads_input, out_of_fold_probabilities
    from headstart.model import Classifier

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = torch.from_numpy(rng.normal(size=(60, 8)).astype(np.float32))
    x[:, 0] += torch.from_numpy(8.0 * y - 4.0)  # class by the first feature
    flipped = 7  # a class-0 image labelled 1: in-sample, a solved head can fit it
    y[flipped] = 1
    model = Classifier(torch.nn.Identity(), 8, {"class": 2})
    with heads_input(model) as features:
        model(x)
    assert torch.equal(features(), x)
    held = out_of_fold_probabilities(model, features(), {"class": y}, l2=1e-2)
    assert held is not None and held["class"].shape == (60, 2)
    assert held["class"][flipped, 1] < 0.5  # a head that never saw it disagrees with it
    others = np.flatnonzero(y == 1)[np.flatnonzero(y == 1) != flipped]
    assert (held["class"][others, 1] > 0.5).all()  # and agrees with the others
    # the run's objective is the one refitted: weighing class 1 up moves class 0 toward it
    from headstart.training.objective import Objective

    weighed = Objective(class_weights={"class": torch.tensor([1.0, 20.0])})
    assert Objective.from_dict(weighed.to_dict()).class_weights["class"].tolist() == [1.0, 20.0]
    tilted = out_of_fold_probabilities(model, features(), {"class": y}, 1e-2, weighed)
    assert tilted is not None
    assert tilted["class"][y == 0, 1].mean() > 2 * held["class"][y == 0, 1].mean()


@pytest.mark.parametrize("layers", ["last", "all"])
def test_evaluate_refits_a_probe_on_the_features_it_trained_on(
    layers: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The label-error analysis reads the probe's cached training features instead of running
    the backbone over the training images again, and finds what the model's pass finds."""
    import json
    import shutil

    import headstart.evaluation.evaluate as evaluate
    from tests.conftest import make_class_folders

    data = make_class_folders(tmp_path / "d", {"red": 14, "blue": 14})
    (data / "red" / "0.png").rename(data / "blue" / "mislabelled.png")  # a red one called blue
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    assert main(["--no-progress", "train", str(data), *FAST[:-1], "--layers", layers,
                 "--cache-dir", str(cache), "--out", str(run)]) == 0  # fmt: skip
    recorded = json.loads((run / "manifest.json").read_text())["inputs"]["features"]
    assert recorded["cache"] == str(cache)
    passes: list[int] = []
    real = evaluate._scores
    monkeypatch.setattr(
        evaluate, "_scores", lambda p, s, *a, **k: passes.append(len(s)) or real(p, s, *a, **k)
    )
    assert main(["--no-progress", "evaluate", str(run)]) == 0
    found = json.loads((run / "evaluation.json").read_text())
    n_val = found["n"]
    assert passes == [n_val]  # the validation images only: the training features were cached
    shutil.rmtree(cache / "features")  # gone: the model runs over the training images again
    passes.clear()
    assert main(["--no-progress", "evaluate", str(run)]) == 0
    again = json.loads((run / "evaluation.json").read_text())
    assert passes == [n_val, found["train_images"]]
    cached, recomputed = found["likely_label_errors"], again["likely_label_errors"]
    assert (
        [e["path"] for e in cached] == [e["path"] for e in recomputed] == ["blue/mislabelled.png"]
    )
    for a, b in zip(cached, recomputed):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-3)


def test_the_penalty_path_is_drawn_at_the_penalties_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    from headstart.plots import plot_penalty_path

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read it back
    penalties = (1.0, 0.1, 0.01, 0.001)
    scores = {(k, l2): 0.8 + 0.01 * k * i for i, l2 in enumerate(penalties) for k in (1, 3)}
    losses = {key: 1 - a for key, a in scores.items()}
    path = plot_penalty_path(scores, losses, (3, 0.01), tmp_path / "c.png", 3, 0.9)
    assert path.read_bytes()[:4] == b"\x89PNG"
    for ax in figures[0].axes:  # both panels: one tick, labelled, per penalty tried
        assert sorted(ax.get_xticks()) == sorted(penalties)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.01", "0.1", "1"]
        assert len(ax.xaxis.get_minorticklocs()) == 0
    plt.close(figures[0])
