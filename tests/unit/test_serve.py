"""The prediction server: answers, micro-batching, every bad input a 4xx, and the web page."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from headstart.serve import Predictor
from headstart.serve.app import ServeConfig, create_app
from tests.browser import browser_page
from tests.dicom_files import write_dicom
from tests.serving import running_server


def png_bytes(
    size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def red_image(trained_run_once: tuple[Path, Path]) -> Path:
    return next((trained_run_once[1] / "val" / "red").iterdir())


@pytest.fixture
def client(trained_run: Path) -> TestClient:
    config = ServeConfig(model=str(trained_run), max_file_mb=0.5, max_files=3, max_pixels=2_000_000)
    with TestClient(create_app(config), raise_server_exceptions=False) as c:
        yield c


def test_health_and_metadata(client: TestClient, trained_run: Path) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_id"].startswith(trained_run.name)
    meta = client.get("/metadata").json()
    assert meta["tasks"] == {"class": ["blue", "red"]}
    assert meta["preprocessing"]["input_size"] == 160 and meta["engine"] == "pytorch"


def test_predict_matches_the_predictor(
    client: TestClient, trained_run: Path, red_image: Path
) -> None:
    files = [("file", ("a.png", red_image.read_bytes(), "image/png")),
             ("file", ("b.png", png_bytes(colour=(40, 40, 200)), "image/png"))]  # fmt: skip
    answer = client.post("/predict?top_k=2", files=files)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["filename"] for r in results] == ["a.png", "b.png"]
    expected = Predictor.from_run(trained_run, "cpu").predict_paths([red_image], top_k=2)[0]
    top = results[0]["predictions"]["class"]
    assert [t["label"] for t in top] == [label for label, _ in expected.top["class"]]
    assert top[0]["probability"] == pytest.approx(expected.top["class"][0][1], abs=1e-5)
    assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buf, "PNG")  # 9 MP of zeros: a few kB compressed
    return buf.getvalue()


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"files": [("file", ("notes.txt", b"hello, not an image", "text/plain"))]}, 400,
         "not an image"),
        ({"files": [("file", ("cut.png", png_bytes()[:60], "image/png"))]}, 400, "truncated"),
        ({"files": [("file", ("empty.png", b"", "image/png"))]}, 400, "empty"),
        ({"files": [("image", ("a.png", png_bytes(), "image/png"))]}, 422, "field 'file'"),
        ({"data": {"file": "just text"}}, 415, "multipart/form-data"),
        ({"content": b""}, 422, "multipart/form-data"),
        ({"files": [("file", ("big.png", np.random.default_rng(0).bytes(600_000), "image/png"))]},
         413, "0.5 MB limit"),
        ({"files": [("file", ("bomb.png", _bomb(), "image/png"))]}, 413, "pixels"),
        ({"files": [("file", (f"{i}.png", png_bytes(), "image/png")) for i in range(4)]}, 413,
         "more than 3 files"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_4xx_that_says_what_was_wrong(
    client: TestClient, request_kwargs: dict, status: int, message: str
) -> None:
    answer = client.post("/predict", **request_kwargs)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert client.get("/health").status_code == 200  # still serving


def test_bad_query_and_routes_are_json_4xx(client: TestClient) -> None:
    files = [("file", ("a.png", png_bytes(), "image/png"))]
    for url, status in (("/predict?top_k=0", 422), ("/predict?top_k=abc", 422)):
        answer = client.post(url, files=files)
        assert answer.status_code == status and "top_k" in answer.json()["error"]
    assert client.get("/nope").json()["status"] == 404
    assert client.get("/predict").status_code == 405


def test_a_huge_declared_body_is_refused_before_reading(client: TestClient) -> None:
    headers = {"content-type": "multipart/form-data; boundary=x", "content-length": str(10**9)}
    answer = client.post("/predict", content=b"--x--", headers=headers)
    assert answer.status_code == 413 and "MB" in answer.json()["error"]


def test_concurrent_requests_are_batched(trained_run: Path) -> None:
    app = create_app(ServeConfig(model=str(trained_run), max_wait_ms=200, max_batch=64))

    async def main() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                files = [("file", ("a.png", png_bytes(), "image/png"))]
                answers = await asyncio.gather(*(c.post("/predict", files=files) for _ in range(8)))
                return [a.status_code for a in answers]

    assert asyncio.run(main()) == [200] * 8
    stats = app.state.service.batcher.stats
    assert stats.images == 8 and stats.batches < 8 and stats.largest > 1


def test_web_page_shows_the_top_label(trained_run: Path, red_image: Path, tmp_path: Path) -> None:
    expected = Predictor.from_run(trained_run, "cpu").predict_paths([red_image], top_k=1)[0]
    with (
        running_server(create_app(ServeConfig(model=str(trained_run)))) as url,
        browser_page() as b,
    ):
        b.page.goto(url + "/")
        b.page.wait_for_function("document.getElementById('model').textContent.includes('model')")
        b.page.set_input_files("#file", str(red_image))
        b.page.wait_for_selector(".top-label")
        assert b.page.inner_text(".top-label") == expected.top["class"][0][0]
        assert len(b.page.query_selector_all(".row")) == 2  # both classes, as bars
        assert b.page.inner_text("#error") == ""
        b.page.set_input_files("#file", files=[{"name": "x.png", "mimeType": "image/png",
                                                "buffer": b"garbage"}])  # fmt: skip
        b.page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "not an image" in b.page.inner_text("#error")
        dicom = write_dicom(tmp_path / "red.dcm", np.full((48, 48), 3000, np.uint16))
        b.page.set_input_files("#file", str(dicom))  # predicted; the browser cannot preview it
        b.page.wait_for_function("document.getElementById('error').textContent === ''")
        b.page.wait_for_selector(".top-label")
        b.page.wait_for_function(
            "getComputedStyle(document.getElementById('preview')).display === 'none'"
        )
        assert b.errors == [] or all("400" in e or "dcm" in e for e in b.errors)


def test_serving_an_onnx_export_gives_the_same_answer(trained_run: Path, red_image: Path) -> None:
    from headstart.export import export_run

    [result] = export_run(trained_run, progress=False)
    files = [("file", ("a.png", red_image.read_bytes(), "image/png"))]
    answers = {}
    for model in (trained_run, result.path):
        with TestClient(create_app(ServeConfig(model=str(model)))) as c:
            assert c.get("/metadata").json()["engine"] in ("pytorch", "onnxruntime")
            answers[model] = c.post("/predict", files=files).json()["results"][0]
    torch_top, onnx_top = (answers[m]["predictions"]["class"] for m in (trained_run, result.path))
    assert [t["label"] for t in torch_top] == [t["label"] for t in onnx_top]
    assert torch_top[0]["probability"] == pytest.approx(onnx_top[0]["probability"], abs=1e-5)


def test_serve_cli_refuses_a_missing_or_corrupt_model_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from headstart.cli.main import main

    assert main(["serve", str(tmp_path / "nothing.onnx")]) != 0
    assert "does not exist" in " ".join(capsys.readouterr().err.split())  # wrapped text
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert main(["serve", str(bad)]) != 0
    captured = capsys.readouterr()
    assert "cannot be loaded by ONNX Runtime" in " ".join(captured.err.split())
    assert "serving" not in captured.out
