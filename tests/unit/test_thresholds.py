"""Decision thresholds of two-class tasks: picked for the best F1, stored, and obeyed by
evaluate, predict, serve and the ONNX export; moved by a later temperature, not changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from headstart.cli.main import main
from headstart.evaluation.thresholds import Scores, cross_fitted, f1_threshold
from headstart.evaluation.thresholds import moved_by_temperature as moved
from headstart.runtime.predictor import Predictor
from headstart.serve.app import ServeConfig, create_app
from tests.browser import browser_page
from tests.serving import running_server


def brute_force_f1(scores: np.ndarray, positive: np.ndarray) -> float:
    """The best F1 over every threshold a score can set (each score, and above them all)."""
    return max(Scores.of(scores >= t, positive).f1 for t in [*scores, np.inf])


@pytest.mark.parametrize("seed", range(5))
def test_the_threshold_reaches_the_best_f1(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positive = rng.random(300) < 0.1  # a rare label
    scores = np.round(np.clip(rng.normal(0.2 + 0.3 * positive, 0.15), 0, 1), 2)  # with ties
    t = f1_threshold(scores, positive)
    assert Scores.of(scores >= t, positive).f1 == pytest.approx(brute_force_f1(scores, positive))
    assert t < 0.5  # rare positives scored low: the argmax's 0.5 misses most of them
    assert Scores.of(scores >= t, positive).f1 > Scores.of(scores >= 0.5, positive).f1


def test_saturated_scores_still_leave_a_threshold_a_manifest_takes() -> None:
    positive = np.array([1, 1, 1, 0], bool)
    assert 0 < f1_threshold(np.array([1.0, 1.0, 0.0, 0.0]), positive) < 1  # all or nothing
    assert 0 < f1_threshold(np.zeros(4), positive) < 1  # everything scored 0: take them all
    assert 0 < moved({"x": 1 - 1e-7}, {}, {"x": 0.01})["x"] < 1


def test_cross_fitted_figures_are_not_flattered() -> None:
    rng = np.random.default_rng(0)
    positive, scores = rng.random(400) < 0.2, rng.random(400)  # no signal at all
    in_sample = Scores.of(scores >= f1_threshold(scores, positive), positive).f1
    assert cross_fitted(scores, positive).f1 < in_sample


def test_a_temperature_moves_the_threshold_and_keeps_every_decision() -> None:
    rng = np.random.default_rng(0)
    margin = rng.normal(0, 3, 1000)  # second logit minus the first

    def p(t: float) -> np.ndarray:
        return 1 / (1 + np.exp(-margin / t))

    for before, after in [(1.0, 2.5), (0.5, 1.7), (3.0, 0.8)]:
        t_old = 0.2
        t_new = moved({"x": t_old}, {"x": before}, {"x": after})["x"]
        assert ((p(before) >= t_old) != (p(after) >= t_new)).sum() <= 1  # rounding at the edge


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def set_threshold(run: Path, threshold: float) -> None:
    m = manifest(run)
    m["thresholds"] = {"class": threshold}
    (run / "manifest.json").write_text(json.dumps(m))


@pytest.fixture
def shy_run(trained_run: Path, trained_run_once: tuple[Path, Path]) -> Path:
    """The tiny run with its head's bias moved against 'red' until no validation image
    reaches a probability of 0.5 for it: it still ranks the images, as a model of a rare
    label does, but its argmax never says 'red'."""
    from safetensors.torch import load_file, save_file

    from headstart.training.files import sha256_file

    images = sorted((trained_run_once[1] / "val").rglob("*.png"))
    p = Predictor.load(trained_run).predict_paths(images, top_k=2)
    red = [dict(r.top["class"])["red"] for r in p if "red" in str(r.source)]
    shift = max(np.log(q / (1 - q)) for q in red) + 1.0
    weights = load_file(str(trained_run / "model.safetensors"))
    bias = next(k for k, v in weights.items() if k.startswith("heads") and k.endswith("bias"))
    weights[bias][1] -= float(shift)
    save_file(weights, str(trained_run / "model.safetensors"))
    m = manifest(trained_run)
    m["weights_sha256"] = sha256_file(trained_run / "model.safetensors")
    (trained_run / "manifest.json").write_text(json.dumps(m))
    return trained_run


def test_evaluate_picks_stores_and_removes_thresholds(
    shy_run: Path, trained_run_once: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    argv = ["--no-progress", "evaluate", str(shy_run), "--no-analysis"]
    assert main(argv) == 0
    assert json.loads((shy_run / "evaluation.json").read_text())["accuracy"] == 0.5  # all blue
    capsys.readouterr()
    assert main([*argv, "--thresholds", "f1"]) == 0
    out = capsys.readouterr().out
    assert "task" not in out.split("\n")[0]  # a single task is not named
    assert "decide 'red' at probability >= " in out and "F1 0.000 -> " in out
    stored, fit = (manifest(shy_run)[k]["class"] for k in ("thresholds", "threshold_fit"))
    assert 0 < stored < 0.5 and fit["positives"] == 6 and fit["after"]["f1"] > 0.8  # 12 images
    assert f"decisions: 'red' when its probability is at least {stored:.3f}" in out
    evaluated = json.loads((shy_run / "evaluation.json").read_text())
    assert evaluated["threshold"] == stored and evaluated["accuracy"] == 1.0
    assert main([*argv, "--thresholds", "none"]) == 0
    assert "no decision thresholds" in capsys.readouterr().out
    assert "thresholds" not in manifest(shy_run)


def test_a_threshold_no_better_than_the_argmax_is_not_kept(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--no-progress", "evaluate", str(trained_run), "--no-analysis"]
    assert main(argv) == 0
    assert json.loads((trained_run / "evaluation.json").read_text())["accuracy"] == 1.0
    capsys.readouterr()
    assert main([*argv, "--thresholds", "f1"]) == 0  # the argmax is already right everywhere
    out = capsys.readouterr().out
    assert "not kept: no better than the most probable class" in out
    assert "thresholds" not in manifest(trained_run)
    assert "threshold_fit" in manifest(trained_run)  # the figures stay on record


def test_a_stored_threshold_decides_in_evaluate_predict_serve_and_onnx(
    trained_run: Path, trained_run_once: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    images = sorted((trained_run_once[1] / "val").rglob("*.png"))
    plain = Predictor.load(trained_run).predict_paths(images, top_k=2)
    assert all(not r.decisions for r in plain)  # no threshold: no decisions, as before
    set_threshold(trained_run, 1 - 1e-9)  # nothing reaches it: every image is 'blue'
    assert main(["--no-progress", "evaluate", str(trained_run), "--no-analysis"]) == 0
    evaluated = json.loads((trained_run / "evaluation.json").read_text())
    assert evaluated["accuracy"] == 0.5  # the 6 blue of 12 images
    assert evaluated["confusion_matrix"] == [[6, 0], [6, 0]]
    capsys.readouterr()
    assert main(["--no-progress", "predict", str(trained_run), *map(str, images), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["decisions"]["class"]["label"] for a in answers] == ["blue"] * len(images)
    assert [a["predictions"] for a in answers] == [r.to_dict()["predictions"] for r in plain]
    assert main(["--no-progress", "predict", str(trained_run), str(images[-1])]) == 0
    assert "-> blue (threshold 1.000)" in capsys.readouterr().out
    assert main(["--no-progress", "export", str(trained_run)]) == 0
    verified = json.loads((trained_run / "model.onnx.json").read_text())["verification"]
    assert verified["accuracy"]["class"] == {"pytorch": 0.5, "exported": 0.5}  # its decisions
    onnx = Predictor.load(trained_run / "model.onnx").predict_paths(images[-1:])[0]
    assert onnx.decisions["class"].label == "blue"
    with TestClient(create_app(ServeConfig(model=str(trained_run / "model.onnx")))) as c:
        files = [("file", ("a.png", images[-1].read_bytes(), "image/png"))]
        result = c.post("/predict", files=files).json()["results"][0]
    assert result["decisions"] == {"class": {"label": "blue", "threshold": 1.0}}  # 6 digits
    assert result["predictions"]["class"][0]["label"] == "red"  # the probabilities unchanged


def test_the_web_page_shows_the_decision(trained_run: Path, trained_run_once: tuple) -> None:
    red = next((trained_run_once[1] / "val" / "red").iterdir())
    set_threshold(trained_run, 1 - 1e-9)
    with (
        running_server(create_app(ServeConfig(model=str(trained_run)))) as url,
        browser_page() as b,
    ):
        b.page.goto(url + "/")
        b.page.set_input_files("#file", str(red))
        b.page.wait_for_selector(".top-label")
        assert b.page.inner_text(".task h2") == "class: blue (its threshold 1.000)"


def test_calibrating_later_keeps_the_decisions(
    shy_run: Path, trained_run_once: tuple[Path, Path]
) -> None:
    images = sorted((trained_run_once[1] / "val").rglob("*.png"))

    def decided() -> list[str]:
        answers = Predictor.load(shy_run).predict_paths(images)
        return [r.decisions["class"].label for r in answers]

    assert main(["--no-progress", "evaluate", str(shy_run), "--no-analysis",
                 "--thresholds", "f1"]) == 0  # fmt: skip
    before = decided()
    assert main(["--no-progress", "evaluate", str(shy_run), "--no-analysis",
                 "--calibrate"]) == 0  # fmt: skip
    m = manifest(shy_run)
    assert m["thresholds"]["class"] != m["threshold_fit"]["class"]["threshold"]  # moved
    assert decided() == before


def test_calibrate_with_thresholds_takes_one_pass_and_fits_what_two_commands_fit(
    shy_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import shutil

    import headstart.evaluation.evaluate as evaluate
    import headstart.training as training
    import headstart.training.checkpoint as checkpoint

    apart = shutil.copytree(shy_run, tmp_path / "apart")
    argv = ["--no-progress", "evaluate", "--no-analysis"]
    assert main([*argv, str(apart), "--calibrate"]) == 0
    assert main([*argv, str(apart), "--thresholds", "f1"]) == 0
    passes: list[bool] = []
    real = evaluate._scores
    monkeypatch.setattr(evaluate, "_scores",
                        lambda *a, **k: passes.append(True) or real(*a, **k))  # fmt: skip
    loads: list[bool] = []
    real_load = checkpoint.load_run
    for module in (checkpoint, training):  # where the CLI and as_loaded each find it
        monkeypatch.setattr(module, "load_run",
                            lambda *a, **k: loads.append(True) or real_load(*a, **k))  # fmt: skip
    assert main([*argv, str(shy_run), "--calibrate", "--thresholds", "f1"]) == 0
    # the thresholds and the evaluation reuse the calibration's logits, and its loaded run
    assert len(passes) == 1 and len(loads) == 1
    one, two = manifest(shy_run), manifest(apart)
    assert one["temperature"]["class"] == pytest.approx(two["temperature"]["class"], rel=1e-6)
    assert one["thresholds"]["class"] == pytest.approx(two["thresholds"]["class"], rel=1e-4)
    # and the evaluation printed after them is the one a plain pass computes
    passes.clear()
    assert main([*argv, str(apart)]) == 0 and len(passes) == 1
    one, two = (json.loads((r / "evaluation.json").read_text()) for r in (shy_run, apart))
    assert one["accuracy"] == two["accuracy"] and one["threshold"] == pytest.approx(
        two["threshold"], rel=1e-4
    )
    assert one["calibration"]["ece"] == pytest.approx(two["calibration"]["ece"], abs=1e-4)


def test_thresholds_refuse_runs_without_two_class_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.conftest import make_class_folders
    from tests.unit.conftest import FAST

    data = make_class_folders(tmp_path / "d", {"red": 8, "blue": 8, "green": 8})
    out = tmp_path / "run"
    assert main(["--no-progress", "train", str(data), *FAST[:-1], "--epochs", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["--no-progress", "evaluate", str(out), "--thresholds", "f1"]) == 2
    err = capsys.readouterr().err
    assert "two-class tasks" in err and "class (3 classes)" in err and "Traceback" not in err
    set_threshold(out, 0.3)  # a threshold on a three-class task: refused on load
    assert main(["--no-progress", "predict", str(out), str(data / "red" / "0.png")]) == 2
    assert "not a two-class task" in capsys.readouterr().err
