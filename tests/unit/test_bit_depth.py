"""Images with more than 8 bits of grey (12-bit cameras' 16-bit files): read at their depth,
recorded in the run, and read the same way by evaluate, predict, export and serve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.backbones import Preprocessing
from headstart.cli.main import main
from headstart.imaging import load_rgb, white_level_of
from tests.unit.conftest import FAST, train_cli


def _deep(path: Path, values: np.ndarray) -> Path:
    """A 16-bit greyscale PNG (PIL mode I;16) holding ``values``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)
    return path


def _twelve_bit_classes(root: Path) -> Path:
    """Two classes of noisy 12-bit images (dim and bright), ten each."""
    rng = np.random.default_rng(0)
    for name, mean in (("dim", 1200), ("bright", 2800)):
        for i in range(10):
            _deep(root / name / f"{i}.png", rng.normal(mean, 400, (48, 48)).clip(0, 4095))
    return root


def _gradient(top: int) -> np.ndarray:
    return np.linspace(0, top, 48 * 48).reshape(48, 48)


def test_twelve_bit_images_keep_their_grey_levels(tmp_path: Path) -> None:
    path = _deep(tmp_path / "cell.png", _gradient(4095))
    assert Image.open(path).mode == "I;16"
    as_sixteen = np.asarray(load_rgb(path))  # 0-65535 scaled to 8 bits
    assert as_sixteen.max() == 15 and len(np.unique(as_sixteen)) == 16
    at_depth = np.asarray(load_rgb(path, 4095))
    assert at_depth.max() == 255 and len(np.unique(at_depth)) == 256
    assert (at_depth[..., 0] == at_depth[..., 2]).all()  # grey stays grey
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((8, 8, 3), 77, np.uint8)).save(photo)
    assert (np.asarray(load_rgb(photo, 4095)) == 77).all()  # 8-bit files are not rescaled


def test_the_white_level_is_the_bit_depth_the_images_use(tmp_path: Path) -> None:
    twelve = [_deep(tmp_path / f"a{i}.png", _gradient(3000 + 300 * i)) for i in range(3)]
    assert white_level_of(twelve) == (4095, 3600, "integer")
    dim = _deep(tmp_path / "dim.png", _gradient(200))  # a 16-bit file holding 8-bit values
    assert white_level_of([dim]) == (255, 200, "integer")
    full = _deep(tmp_path / "full.png", _gradient(65535))
    assert white_level_of([*twelve, full]) is None  # all 16 bits: the default already
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert white_level_of([photo, broken]) is None
    assert white_level_of([photo, broken, *twelve]) == (4095, 3600, "integer")


def test_sixteen_bit_colour_tiffs_are_said_to_read_at_8_bits(tmp_path: Path) -> None:
    import tifffile

    from headstart.data import load_split
    from headstart.data.split import white_level

    rng = np.random.default_rng(0)
    for name, mean in (("dim", 1200), ("bright", 2800)):  # a 12-bit colour camera's files
        for i in range(4):
            rgb = rng.normal(mean, 300, (24, 24, 3)).clip(0, 4095).astype(np.uint16)
            (tmp_path / "d" / name).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(tmp_path / "d" / name / f"{i}.tif", rgb, photometric="rgb")
    level, note = white_level(load_split(tmp_path / "d", val_fraction=0.25))
    assert level is None and note.startswith("warning: 6 of 6 sampled images are colour images")
    assert "the brightest reads 15 of 255)" in note and "nearly black" in note


def test_sixteen_bit_colour_pngs_are_said_to_read_at_8_bits(tmp_path: Path) -> None:
    # Pillow opens a PNG of 16 bits a channel as RGB, keeping each channel's top byte: a
    # 12-bit camera's values (under 4096) read as 0-15; written here by hand (Pillow cannot)
    import struct
    import zlib

    from headstart.data import load_split
    from headstart.data.split import white_level
    from headstart.imaging import load_rgb

    def png16(path: Path, rgb: np.ndarray) -> None:
        rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
        head = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 16, 2, 0, 0, 0)

        def chunk(kind: bytes, data: bytes) -> bytes:
            crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
            return struct.pack(">I", len(data)) + kind + data + crc

        body = chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(4):
            rgb = rng.integers(0, 4096, (24, 24, 3)).astype(np.uint16)
            png16(tmp_path / "d" / name / f"{i}.png", rgb)
    assert np.asarray(load_rgb(tmp_path / "d" / "a" / "0.png")).max() <= 15
    level, note = white_level(load_split(tmp_path / "d", val_fraction=0.25))
    assert level is None and "colour images of 16 bits a channel (TIFF or PNG)" in note
    assert note.startswith("warning: 6 of 6") and "nearly black" in note
    # an 8-bit colour PNG is not one of them
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "eight.png")
    from headstart.imaging import deep_colour_of

    assert deep_colour_of([tmp_path / "eight.png"]) is None


def test_floating_point_images_in_0_1_are_not_read_as_black(tmp_path: Path) -> None:
    """32-bit float TIFFs (mode F): each used to be scaled by its own maximum's range, so
    values in 0-1 came out as 0 or 1 of 255."""
    paths = []
    for i, top in enumerate((0.9, 0.75)):
        paths.append(tmp_path / f"{i}.tif")
        Image.fromarray(_gradient(top).astype(np.float32), mode="F").save(paths[-1])
    assert Image.open(paths[0]).mode == "F"
    assert np.asarray(load_rgb(paths[0])).max() <= 1  # black
    assert white_level_of(paths) == (1, pytest.approx(0.9), "float")
    assert np.asarray(load_rgb(paths[0], 1)).max() == 229  # 0.9 of white
    wide = tmp_path / "wide.tif"
    Image.fromarray(_gradient(3000.5).astype(np.float32), mode="F").save(wide)
    assert white_level_of([wide]) == (4095, 3000.5, "float")


def test_the_preprocessing_record_keeps_8_bit_runs_unchanged() -> None:
    prep = Preprocessing(224, 256, "bicubic", (0.5,) * 3, (0.5,) * 3)
    assert "white_level" not in prep.to_dict()  # feature-cache keys of 8-bit data unchanged
    deep = Preprocessing.from_dict({**prep.to_dict(), "white_level": 4095})
    assert deep.white_level == 4095 and deep.to_dict()["white_level"] == 4095
    assert Preprocessing.from_dict(prep.to_dict()).white_level is None  # older manifests


def test_every_training_read_honours_the_white_level(tmp_path: Path) -> None:
    """The decoded-image cache, plain reads, and the feature cache (the probe's path)."""
    import torch

    from headstart.cache import Cache
    from headstart.cache.decoded import image_reader
    from headstart.cache.features import FeatureSource, cached_features
    from headstart.data import Sample, eval_transform

    path = _deep(tmp_path / "cell.png", _gradient(4095))
    plain = Preprocessing(32, 32, "bilinear", (0.0,) * 3, (1.0,) * 3)
    deep = Preprocessing.from_dict({**plain.to_dict(), "white_level": 4095})
    cache = Cache(tmp_path / "cache")
    for where in (cache, None):
        assert np.asarray(image_reader(deep, where)(path)).max() > 200
        assert np.asarray(image_reader(plain, where)(path)).max() <= 15

    def brightest(prep: Preprocessing) -> float:
        source = FeatureSource("b", "w", prep.to_dict(), "pool")
        features, _ = cached_features(cache, source, lambda x: x.amax((2, 3)), [Sample(path, 0)],
                                      [eval_transform(prep)], ["clean"], device=torch.device("cpu"),
                                      progress=False)  # fmt: skip
        return float(features.max())

    assert brightest(deep) > 0.8 and brightest(plain) < 0.07


@pytest.mark.parametrize("strategy", ["probe", "finetune"])  # cached features; images
def test_a_run_on_twelve_bit_images_reads_them_at_their_depth_everywhere(
    strategy: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _twelve_bit_classes(tmp_path / "data")
    argv = ["--no-progress", "train", str(tmp_path / "data"), *FAST[:-1], "--strategy", strategy,
            "--epochs", "1", "--precision", "fp32"]  # fmt: skip
    printed, manifest = train_cli(argv, tmp_path / "run", capsys)
    assert "read with 4,095 as white rather than 65,535, which would keep 16 of 256" in printed
    assert manifest["preprocessing"]["white_level"] == 4095
    run = tmp_path / "run"
    image = tmp_path / "data" / "bright" / "0.png"

    from headstart.runtime.predictor import Predictor
    from headstart.serve.app import decode_image

    predictor = Predictor.load(run)
    assert predictor.white_level == 4095
    read = predictor.predict_paths([image], top_k=2)[0].top["class"]
    at_depth = predictor.top(predictor.probabilities([load_rgb(image, 4095)]), 2)[0]["class"]
    as_sixteen = predictor.top(predictor.probabilities([load_rgb(image)]), 2)[0]["class"]
    assert read == at_depth != as_sixteen
    served = decode_image(image.read_bytes(), "x.png", 10**6, predictor.white_level)
    assert np.array_equal(np.asarray(served), np.asarray(load_rgb(image, 4095)))
    from fastapi.testclient import TestClient

    from headstart.serve.app import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(model=str(run)))) as client:
        upload = [("file", ("x.png", image.read_bytes(), "image/png"))]
        top = client.post("/predict?top_k=2", files=upload).json()["results"][0]["predictions"]
    assert [(t["label"], pytest.approx(t["probability"], abs=1e-5)) for t in top["class"]] == read
    if strategy == "probe":  # one export is enough: it is verified against the run
        assert main(["--no-progress", "export", str(run)]) == 0
        meta = json.loads((run / "model.onnx.json").read_text())
        assert meta["preprocessing"]["white_level"] == 4095
        assert "4095 as white" in meta["preprocessing"]["steps"][0]
        onnx = Predictor.load(run / "model.onnx")
        assert onnx.predict_paths([image], top_k=2)[0].top["class"][0][0] == read[0][0]


def test_recommend_reads_every_candidate_at_the_datas_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import headstart.recommend.run as run

    seen = []
    for name in ("backbone_evidence", "domain_evidence"):
        original = getattr(run, name)

        def spy(cfg, ready, *args, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(ready.backbone.preprocessing.white_level)
            return _original(cfg, ready, *args, **kwargs)

        monkeypatch.setattr(run, name, spy)
    data = _twelve_bit_classes(tmp_path / "data")
    argv = ["--no-progress", "recommend", str(data), *FAST[2:-1], "--out", str(tmp_path / "rec")]
    assert main(argv) == 0
    assert "read with 4,095 as white" in capsys.readouterr().out
    assert seen and set(seen) == {4095}  # the evidence and the multi-layer probe's
