"""DICOM files read as radiologists see them: the modality rescale, the file's window, the
stored bit depth without one, MONOCHROME1 inverted; and refused, with the reason, when they
hold no single image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from headstart.data import load_split, read_labels_csv
from headstart.data.scan import audit_image
from headstart.imaging import load_rgb
from headstart.serve.app import UploadError, decode_image
from tests.dicom_files import encapsulated, write_dicom

RAMP = np.tile(np.linspace(0, 4095, 64).round().astype(np.uint16), (48, 1))  # 12-bit, 0 to 4095


def grey(path: Path) -> np.ndarray:
    """The first row of the image as every reader sees it (RGB, one channel)."""
    return np.asarray(load_rgb(path))[0, :, 0].astype(int)


def test_without_a_window_the_stored_bit_depth_is_the_range(tmp_path: Path) -> None:
    row = grey(write_dicom(tmp_path / "a.dcm", RAMP))
    assert (row[0], row[-1]) == (0, 255) and np.all(np.diff(row) >= 0)
    half = grey(write_dicom(tmp_path / "half.dcm", RAMP // 2))  # not stretched to its own max
    assert half[-1] == 127  # 2047 of 4095


def test_the_files_window_lut_and_rescale_and_monochrome1(tmp_path: Path) -> None:
    window = grey(write_dicom(tmp_path / "w.dcm", RAMP, WindowCenter=2048, WindowWidth=1024))
    at = np.linspace(0, 4095, 64)
    assert np.all(window[at < 1536] == 0) and np.all(window[at > 2560] == 255)
    standard = np.clip((at - 2047.5) / 1023 + 0.5, 0, 1) * 255  # DICOM PS3.3 C.11.2.1.2.1
    assert np.abs(window - standard).max() <= 1
    # CT-style: stored 0-4095 with intercept -1024 (Hounsfield units), window in those units
    ct_tags = {"RescaleSlope": 1, "RescaleIntercept": -1024, "WindowCenter": 40, "WindowWidth": 400}
    ct = grey(write_dicom(tmp_path / "ct.dcm", RAMP, **ct_tags))
    hu = at - 1024
    assert np.all(ct[hu < -160] == 0) and np.all(ct[hu > 240] == 255)
    lut = Dataset()  # a VOI LUT (here one that inverts) wins over the window
    lut.LUTDescriptor, lut.LUTData = [4096, 0, 12], [4095 - v for v in range(4096)]
    lut["LUTDescriptor"].VR, lut["LUTData"].VR = "US", "US"
    by_lut = grey(write_dicom(tmp_path / "lut.dcm", RAMP, VOILUTSequence=[lut]))
    assert np.array_equal(by_lut, 255 - np.round(RAMP[0] / 4095 * 255))
    inverted = grey(write_dicom(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1"))
    assert np.array_equal(inverted, 255 - grey(write_dicom(tmp_path / "a.dcm", RAMP)))


def test_files_without_one_image_are_skipped_with_the_reason(tmp_path: Path) -> None:
    frames = np.stack([RAMP, RAMP])
    write_dicom(tmp_path / "cine.dcm", frames, NumberOfFrames=2)
    assert "2 frames" in audit_image(tmp_path / "cine.dcm")
    good = write_dicom(tmp_path / "good.dcm", RAMP).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(good[: len(good) // 2])
    assert audit_image(tmp_path / "cut.dcm").startswith("unreadable")
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    assert audit_image(tmp_path / "fake.dcm").startswith("unreadable")
    assert audit_image(tmp_path / "good.dcm") is None


def test_folders_csv_ids_and_uploads_read_dicom(tmp_path: Path) -> None:
    for c, level in (("clear", 800), ("opacity", 3200)):
        for i in range(4):
            write_dicom(tmp_path / "d" / c / f"{c}{i}.dcm", np.full((32, 32), level, np.uint16))
    split = load_split(tmp_path / "d", val_fraction=0.5)
    assert len(split.train) + len(split.val) == 8 and split.classes == ["clear", "opacity"]
    # RSNA's labels: patientId without extension
    (tmp_path / "labels.csv").write_text(
        "patientId,Target\n"
        + "".join(f"opacity/opacity{i},1\nclear/clear{i},0\n" for i in range(4))
    )
    table = read_labels_csv(tmp_path / "labels.csv", images_root=tmp_path / "d")
    assert {s.path.suffix for s in table.samples} == {".dcm"} and len(table.samples) == 8
    data = (tmp_path / "d" / "opacity" / "opacity0.dcm").read_bytes()
    assert np.asarray(decode_image(data, "x.dcm", 10_000))[0, 0, 0] == 199  # 3200 of 4095
    with pytest.raises(UploadError, match="more than the limit"):  # checked before decoding
        decode_image(data, "x.dcm", 1000)
    with Image.open(io.BytesIO(data)) as im:
        assert (im.format, im.mode, im.size) == ("DICOM", "L", (32, 32))


def test_jpeg_compressed_dicom_is_read_and_a_missing_decoder_is_named(tmp_path: Path) -> None:
    from pydicom.uid import JPEGBaseline8Bit, JPEGLosslessSV1

    pixels = (RAMP // 16).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, "JPEG", quality=95)
    path = encapsulated(tmp_path / "rsna.dcm", pixels, JPEGBaseline8Bit, jpeg.getvalue())
    assert np.abs(grey(path) - pixels[0]).max() <= 2  # decoded through Pillow's JPEG
    lossless = encapsulated(tmp_path / "ll.dcm", pixels, JPEGLosslessSV1, b"\xff\xd8" + b"\0" * 64)
    assert "pip install pylibjpeg" in audit_image(lossless)


def test_photos_never_try_the_dicom_plugin(tmp_path: Path) -> None:
    from unittest import mock

    from headstart.dicom import DicomImageFile

    for name in ("a.jpg", "a.png"):
        Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / name)
    with mock.patch.object(DicomImageFile, "_open", side_effect=AssertionError("tried")):
        for name in ("a.jpg", "a.png"):
            assert load_rgb(tmp_path / name).size == (8, 8)  # matched before it
