"""Image loading, folder scan and audit, splits and transforms."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.backbones import Preprocessing
from headstart.data import audit_image, eval_transform, load_rgb, load_split, train_transform
from headstart.errors import DataError
from tests.conftest import make_class_folders, make_image


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    p = tmp_path / "g.png"
    Image.new("L", (8, 6), 77).save(p)
    im = load_rgb(p)
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (77, 77, 77)


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(p)
    assert load_rgb(p).getpixel((1, 1)) == (255, 255, 255)


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    p = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p)  # pure red in CMYK
    r, g, b = load_rgb(p).getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    p = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (10, 20, 30)).save(p, exif=exif)
    assert load_rgb(p).size == (20, 40)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    p = tmp_path / "d.png"
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(p)
    assert load_rgb(p).getpixel((0, 0))[0] == pytest.approx(127, abs=1)


def _truncated_jpeg(path: Path) -> Path:
    make_image(path.with_suffix(".tmp.jpg"), (100, 100, 100), size=64)
    data = path.with_suffix(".tmp.jpg").read_bytes()
    path.with_suffix(".tmp.jpg").unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("name", "writer", "reason"),
    [
        ("notes.txt", lambda p: p.write_text("hello"), "not an image"),
        ("empty.jpg", lambda p: p.write_bytes(b""), "empty file"),
        ("garbage.png", lambda p: p.write_bytes(b"\x89PNG garbage" * 10), "unreadable"),
        ("cut.jpg", _truncated_jpeg, "truncated"),
        ("imageNotFound.jpg", lambda p: make_image(p, (9, 9, 9)), "placeholder"),
        (
            "flat.gif",
            lambda p: Image.new("P", (30, 30), 3).save(p),
            "placeholder GIF",
        ),
    ],
)
def test_audit_reports_why_a_file_is_skipped(
    tmp_path: Path, name: str, writer: object, reason: str
) -> None:
    path = tmp_path / name
    writer(path)  # type: ignore[operator]
    result = audit_image(path)
    assert result is not None and reason in result


def test_good_image_passes_audit(tmp_path: Path) -> None:
    assert audit_image(make_image(tmp_path / "ok.jpg", (1, 2, 3))) is None


def test_scan_lists_skipped_files_and_keeps_the_rest(split_dataset: Path) -> None:
    (split_dataset / "red" / "readme.txt").write_text("x")
    _truncated_jpeg(split_dataset / "blue" / "broken.jpg")
    split = load_split(split_dataset, val_fraction=0.25, seed=0)
    skipped = {p.name: r for p, r in split.skipped}
    assert set(skipped) == {"readme.txt", "broken.jpg"}
    assert len(split.train) + len(split.val) == 40
    assert "skipped blue/broken.jpg: truncated" in split.summary()


def test_split_is_stratified_and_seeded(split_dataset: Path) -> None:
    a = load_split(split_dataset, val_fraction=0.25, seed=1)
    b = load_split(split_dataset, val_fraction=0.25, seed=1)
    c = load_split(split_dataset, val_fraction=0.25, seed=2)
    assert [s.path for s in a.val] == [s.path for s in b.val]
    assert [s.path for s in a.val] != [s.path for s in c.val]
    assert sorted(s.target for s in a.val) == [0] * 5 + [1] * 5
    assert not {s.path for s in a.val} & {s.path for s in a.train}
    assert a.classes == ["blue", "red"]


def test_train_val_layout_is_used_as_given(trainval_dataset: Path) -> None:
    split = load_split(trainval_dataset)
    assert split.layout == "train/val folders"
    assert (len(split.train), len(split.val)) == (32, 12)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "nope")
    (tmp_path / "data.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match="is an archive: unpack it first"):
        load_split(tmp_path / "data.tar.gz")
    (tmp_path / "labels.csv").write_text("image,class\n")
    with pytest.raises(DataError, match=f"pass it as --labels {tmp_path / 'labels.csv'}"):
        load_split(tmp_path / "labels.csv")


def test_single_class_is_refused(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "one", {"red": 5})
    with pytest.raises(DataError, match="only one class"):
        load_split(tmp_path / "one")


def test_empty_class_folder_is_refused(split_dataset: Path) -> None:
    (split_dataset / "green").mkdir()
    (split_dataset / "green" / "note.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"green.*no usable image.*note.txt"):
        load_split(split_dataset)
    (split_dataset / "red" / "readme.txt").write_text("x")  # skipped, but not in green
    with pytest.raises(DataError) as e:
        load_split(split_dataset)
    assert "note.txt" in str(e.value) and "readme.txt" not in str(e.value)


def test_no_class_folders_is_refused(tmp_path: Path) -> None:
    make_image(tmp_path / "flat" / "a.png", (1, 1, 1))
    with pytest.raises(DataError, match="no class subfolders"):
        load_split(tmp_path / "flat")


def test_val_class_unknown_to_train_is_refused(trainval_dataset: Path) -> None:
    make_class_folders(trainval_dataset / "val", {"green": 2})
    with pytest.raises(DataError, match="green"):
        load_split(trainval_dataset)


def test_train_without_val_is_split_and_test_left_alone(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "d" / "train", {"red": 10, "blue": 10})
    make_class_folders(tmp_path / "d" / "test", {"red": 2, "blue": 2}, seed=50)
    split = load_split(tmp_path / "d", val_fraction=0.2)
    assert (len(split.train), len(split.val)) == (16, 4)
    assert all("train" in s.path.parts for s in split.train + split.val)
    assert "test/ is left alone: `headstart evaluate RUN" in split.summary()


def test_a_folder_that_only_wraps_the_data_is_looked_into(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "xray" / "xray", {"red": 4, "blue": 4})  # unzip's nesting
    (tmp_path / "xray" / "__MACOSX" / "xray").mkdir(parents=True)
    split = load_split(tmp_path / "xray", val_fraction=0.25)
    assert split.classes == ["blue", "red"] and split.root == tmp_path / "xray" / "xray"
    assert f"{tmp_path / 'xray'} only wraps {tmp_path / 'xray' / 'xray'}" in split.summary()
    make_class_folders(tmp_path / "only" / "train", {"red": 4, "blue": 4})  # a layout, kept
    assert "only wraps" not in load_split(tmp_path / "only", val_fraction=0.25).summary()


def test_a_tiny_given_val_folder_is_warned_of(tmp_path: Path, trainval_dataset: Path) -> None:
    make_class_folders(tmp_path / "xray" / "train", {"red": 25, "blue": 25})
    make_class_folders(tmp_path / "xray" / "val", {"red": 2, "blue": 2}, seed=50)
    make_class_folders(tmp_path / "xray" / "test", {"red": 2, "blue": 2}, seed=60)
    summary = load_split(tmp_path / "xray").summary()
    assert "val/ holds only 4 images, against 50 in train/" in summary
    assert f"`headstart train {tmp_path / 'xray' / 'train'}` holds out" in summary
    assert f"`headstart evaluate RUN {tmp_path / 'xray' / 'test'}` then measures" in summary
    assert "holds only" not in load_split(trainval_dataset).summary()  # 12 against 32


PREP = Preprocessing(32, 40, "bilinear", (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))


def test_eval_transform_follows_the_preprocessing_record() -> None:
    x = eval_transform(PREP)(Image.new("RGB", (80, 60), (255, 255, 255)))
    assert x.shape == (3, 32, 32)
    # white (1.0) normalised by each channel's own mean/std
    assert x[:, 0, 0].tolist() == pytest.approx([1.0, 3.0, 1.0])


def test_train_transform_crops_to_input_size_and_augments() -> None:
    torch.manual_seed(0)
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    t = train_transform(PREP, color_jitter=0.4)
    a, b = t(im), t(im)
    assert a.shape == b.shape == (3, 32, 32)
    assert not torch.equal(a, b)


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, as tqdm asks before drawing a bar."""

    def isatty(self) -> bool:
        return True


def test_a_cold_audit_and_hashing_show_bars_on_a_terminal_unless_told_not_to(
    split_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headstart.cache import Cache
    from headstart.data import pool
    from headstart.data.split import load_table_split

    rows = [f"{p.relative_to(split_dataset)},{p.parent.name}" for p in split_dataset.glob("*/*")]
    (split_dataset / "labels.csv").write_text("image,class\n" + "\n".join(rows) + "\n")

    def stderr_of(run: Callable[[], object]) -> str:
        monkeypatch.setattr(sys, "stderr", _Terminal())
        run()
        return sys.stderr.getvalue()

    cold = Cache(tmp_path / "cold")
    quiet = stderr_of(lambda: load_split(split_dataset, cache=cold, group="near-duplicates"))
    assert quiet == ""  # the library's default, and the CLI's --no-progress
    monkeypatch.setattr(pool, "DELAY_S", 0.0)  # the work here is shorter than the real delay
    fresh = Cache(tmp_path / "a")
    shown = stderr_of(
        lambda: load_split(split_dataset, cache=fresh, group="near-duplicates", progress=True)
    )  # a bar of the 40 images with its rate, for the audit and for the hashes
    assert "checking images:" in shown and "hashing images:" in shown
    assert shown.count("/40 [") >= 2 and "img/s" in shown
    csv = stderr_of(lambda: load_table_split(split_dataset / "labels.csv", progress=True))
    assert "checking images:" in csv and "/40 [" in csv
    monkeypatch.setattr(pool, "DELAY_S", 60.0)  # work shorter than the delay draws nothing
    assert stderr_of(lambda: load_split(split_dataset, cache=cold, progress=True)) == ""


def test_a_file_that_cannot_be_opened_is_skipped_with_the_reason(
    split_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file stat can see and open cannot (no read permission; root reads anything, so the
    refusal is simulated): skipped with why, not a traceback, with the cache on."""
    import builtins

    from headstart.cache import Cache

    locked = split_dataset / "red" / "0.png"
    real = builtins.open

    def refusing(file: object, *args: object, **kwargs: object) -> object:
        if isinstance(file, (str, Path)) and Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", refusing)
    split = load_split(split_dataset, cache=Cache(tmp_path / "c"))
    assert [(p, r) for p, r in split.skipped] == [
        (locked, f"unreadable: [Errno 13] Permission denied: '{locked}'")
    ]
