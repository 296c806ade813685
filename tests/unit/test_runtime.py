"""The torch-free runtime: NumPy/Pillow preprocessing equal to torchvision's, and
``headstart predict model.onnx`` in a process where importing torch fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.backbones.preprocessing import Preprocessing
from headstart.cli.main import main
from headstart.data import eval_transform
from headstart.export import export_run
from headstart.imaging import load_rgb
from headstart.runtime.preprocess import preprocess
from tests.conftest import HYMENOPTERA

ROOT = Path(__file__).resolve().parents[2]
# a process in which `import torch` (and torchvision) raises ImportError
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "
    "from headstart.cli.main import main; code = main(sys.argv[1:]); "
    "assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m]]; "
    "sys.exit(code)"
)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize(("width", "height"), [(97, 61), (61, 97), (300, 300), (640, 427)])
def test_numpy_preprocessing_equals_torchvisions(
    interpolation: str, width: int, height: int
) -> None:
    rng = np.random.default_rng(width * height)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    prep = Preprocessing(224, 256, interpolation, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))  # type: ignore[arg-type]
    expected = eval_transform(prep)(image).numpy()
    got = preprocess(image, prep.to_dict())
    assert got.shape == expected.shape == (3, 224, 224) and got.dtype == np.float32
    assert float(np.abs(got - expected).max()) < 1e-5


def test_numpy_preprocessing_on_real_photos() -> None:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"no dataset at {HYMENOPTERA}")
    prep = Preprocessing(224, 256, "bicubic", (0.5,) * 3, (0.5,) * 3)  # type: ignore[arg-type]
    files = sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[:8]
    for path in files:
        image = load_rgb(path)
        diff = np.abs(preprocess(image, prep.to_dict()) - eval_transform(prep)(image).numpy())
        assert float(diff.max()) < 1e-5, path


def test_predict_with_an_onnx_export_never_imports_torch(
    trained_run: Path, trainval_dataset: Path, capsys: pytest.CaptureFixture
) -> None:
    export_run(trained_run, progress=False)
    images = str(trainval_dataset / "val")
    cmd = [sys.executable, "-c", NO_TORCH, "predict", str(trained_run / "model.onnx"), images,
           "--json", "--top-k", "2"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    onnx_side = json.loads(done.stdout)
    assert main(["predict", str(trained_run), images, "--json", "--top-k", "2"]) == 0
    torch_side = json.loads(capsys.readouterr().out)
    assert len(onnx_side) == len(torch_side) == 12
    for a, b in zip(onnx_side, torch_side, strict=True):
        assert a["source"] == b["source"]
        pa, pb = a["predictions"]["class"], b["predictions"]["class"]
        assert [p["label"] for p in pa] == [p["label"] for p in pb]
        assert all(abs(x["probability"] - y["probability"]) < 1e-4 for x, y in zip(pa, pb))


def test_tta_is_one_path_for_every_engine(
    trained_run: Path, trainval_dataset: Path, capsys: pytest.CaptureFixture
) -> None:
    """--tta with the ONNX export (torch-free) gives the run folder's (PyTorch) figures."""
    export_run(trained_run, progress=False)
    image = str(next((trainval_dataset / "val" / "red").iterdir()))
    answers = []
    for model in (trained_run / "model.onnx", trained_run):
        assert main(["predict", str(model), image, "--tta", "--json", "--top-k", "2"]) == 0
        answers.append(json.loads(capsys.readouterr().out)[0]["predictions"]["class"])
    onnx_side, torch_side = answers
    assert [p["label"] for p in onnx_side] == [p["label"] for p in torch_side]
    assert all(abs(a["probability"] - b["probability"]) < 1e-4
               for a, b in zip(onnx_side, torch_side))  # fmt: skip
    assert main(["predict", str(trained_run), image, "--json", "--top-k", "2"]) == 0
    plain = json.loads(capsys.readouterr().out)[0]["predictions"]["class"]
    assert plain != torch_side  # ten views averaged, not the one centre crop


@pytest.mark.parametrize(("width", "height"), [(97, 61), (61, 97), (300, 300)])
def test_numpy_ten_crops_equal_torchvisions(width: int, height: int) -> None:
    """The one TTA implementation reproduces torchvision's TenCrop (the pre-runtime path)."""
    from torchvision import transforms as T

    from headstart.runtime.preprocess import TEN_CROP, tta_views

    rng = np.random.default_rng(width + height)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    prep = Preprocessing(48, 56, "bilinear", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))  # type: ignore[arg-type]
    normalise = T.Compose([T.ToTensor(), T.Normalize(prep.mean, prep.std)])
    crops = T.Compose([T.Resize(56), T.TenCrop(48)])(image)
    expected = np.stack([normalise(c).numpy() for c in crops])
    got = tta_views(image, prep.to_dict(), TEN_CROP)
    assert got.shape == expected.shape == (10, 3, 48, 48)
    assert float(np.abs(got - expected).max()) < 1e-5


SERVE_NO_TORCH = """
import sys, json
sys.modules['torch'] = None; sys.modules['torchvision'] = None
from fastapi.testclient import TestClient
from headstart.serve.app import ServeConfig, create_app
with TestClient(create_app(ServeConfig(model=sys.argv[1]))) as client:
    with open(sys.argv[2], 'rb') as f:
        r = client.post('/predict', files={'file': ('x.png', f.read())})
    bad = client.post('/predict', files={'file': ('x.png', b'not an image')})
assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m]]
print(json.dumps({'ok': r.status_code, 'bad': bad.status_code, 'body': r.json()}))
"""


def test_serving_an_onnx_export_never_imports_torch(
    trained_run: Path, trainval_dataset: Path
) -> None:
    export_run(trained_run, progress=False)
    image = sorted((trainval_dataset / "val" / "red").glob("*.png"))[0]
    cmd = [sys.executable, "-c", SERVE_NO_TORCH, str(trained_run / "model.onnx"), str(image)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ok"] == 200 and out["bad"] == 400
    labels = [p["label"] for p in out["body"]["results"][0]["predictions"]["class"]]
    assert sorted(labels) == ["blue", "red"]
