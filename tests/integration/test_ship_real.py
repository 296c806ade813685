"""Export and serve the real ants/bees probe: verification, accuracy, answers, web page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from headstart.cli.main import main
from headstart.export import export_run
from headstart.serve.app import ServeConfig, create_app
from tests.browser import browser_page
from tests.serving import running_server

pytestmark = pytest.mark.integration

ANT = "val/ants/10308379_1b6c72e180.jpg"
BEE = "val/bees/1032546534_06907fe3b3.jpg"


@pytest.fixture(scope="module")
def probe_run(hymenoptera: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ship")
    out = root / "probe"
    args = ["--no-progress", "train", str(hymenoptera), "--epochs", "5", "--out", str(out)]
    # its own feature cache: the probe test in test_train_real counts cold computations
    assert main([*args, "--cache-dir", str(root / "cache")]) == 0
    return out


def test_export_verifies_and_keeps_the_accuracy(probe_run: Path) -> None:
    manifest = json.loads((probe_run / "manifest.json").read_text())
    [result] = export_run(probe_run, progress=False)
    v = result.verification
    assert v.passed and v.images == 153 and v.max_abs_diff <= 1e-4
    assert v.top1_agree == {"class": 153}
    torch_acc, onnx_acc = v.accuracy["class"]
    assert torch_acc == onnx_acc == pytest.approx(manifest["metrics"]["val_acc"])


def test_server_answers_real_images(probe_run: Path, hymenoptera: Path) -> None:
    [result] = export_run(probe_run, progress=False)
    with TestClient(create_app(ServeConfig(model=str(result.path)))) as client:
        files = [("file", (Path(p).name, (hymenoptera / p).read_bytes(), "image/jpeg"))
                 for p in (ANT, BEE)]  # fmt: skip
        answer = client.post("/predict?top_k=1", files=files)
        assert answer.status_code == 200
        labels = [r["predictions"]["class"][0]["label"] for r in answer.json()["results"]]
        assert labels == ["ants", "bees"]
        gif = hymenoptera / "train/ants/imageNotFound.gif"  # a real placeholder GIF: still an image
        assert (
            client.post("/predict", files=[("file", ("x.gif", gif.read_bytes()))]).status_code
            == 200
        )


def test_web_page_shows_bees_for_a_real_bee(probe_run: Path, hymenoptera: Path) -> None:
    app = create_app(ServeConfig(model=str(probe_run)))
    with running_server(app) as url, browser_page() as b:
        b.page.goto(url + "/")
        b.page.set_input_files("#file", str(hymenoptera / BEE))
        b.page.wait_for_selector(".top-label")
        assert b.page.inner_text(".top-label") == "bees"
        assert b.errors == []


def test_a_multilayer_probe_of_lite0_exports_and_quantizes(
    hymenoptera: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headstart.errors import ExportError

    # ONNX Runtime's percentile calibration took 45 of the export's 100 s on 128 images;
    # what this test guards (the taps' graph quantizes and verifies) needs no more than 32
    monkeypatch.setattr("headstart.export.CALIBRATION_IMAGES", 32)

    out = tmp_path / "ml"
    args = ["--no-progress", "train", str(hymenoptera), "--layers", "all", "--out", str(out)]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    # Lite0's TF "same" padding, read through the taps, exports as constants and verifies
    try:
        export_run(out, quantize="static", progress=False)
    except ExportError as e:  # int8 may be refused on this machine's speed or accuracy,
        assert "so it was not kept" in str(e)  # but the quantizer must not fail
    sidecar = json.loads((out / "model.onnx.json").read_text())
    assert sidecar["verification"]["passed"] and sidecar["verification"]["images"] == 153
