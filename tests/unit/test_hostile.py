"""A corpus of bad input and hostile files, each with its exact outcome: trained with a named
skip (or a warning), a clear error with exit 2, or a refusal; never a traceback, and never
code run from a file (every payload would create a marker file, which must not appear)."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.cli.main import main
from headstart.data import load_split, load_table_split
from headstart.errors import DataError
from tests.conftest import TINY, make_class_folders, make_image
from tests.unit.conftest import FAST


def flat(text: str) -> str:
    """A CLI message with its line wrapping undone."""
    return " ".join(text.split())


class Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def hostile_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


# ---- training data: each case adds one bad thing to a good two-class folder -------------


def _png(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _truncated(p: Path) -> None:
    make_image(p.with_suffix(".jpg"), (200, 40, 40), size=64)
    data = p.with_suffix(".jpg").read_bytes()
    p.with_suffix(".jpg").write_bytes(data[: len(data) // 2])


def _loop(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(p.parent, p)  # a folder link back to its own parent


def _self_link(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(p.name, p)


SKIPPED: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # case: (file name in red/, how to make it, words the skip reason must hold)
    "empty file": ("e.png", lambda p: p.write_bytes(b""), "empty file"),
    "not an image": ("notes.txt", lambda p: p.write_text("hello"), "not an image"),
    "garbage named .jpg": ("g.jpg", lambda p: p.write_bytes(os.urandom(500)), "unreadable"),
    "truncated JPEG": ("t.jpg", _truncated, "truncated"),
    "1x3000 strip": ("s.png", lambda p: _png(p, Image.new("RGB", (1, 3000))), "aspect ratio"),
    "3000x2 strip": ("w.png", lambda p: _png(p, Image.new("L", (3000, 2))), "aspect ratio"),
    "broken link": ("b.png", lambda p: os.symlink("/nonexistent/x.png", p), "broken symbolic"),
    "link loop": ("loop", _loop, "symbolic link loop"),
    "self link": ("me.png", _self_link, "unusable symbolic link"),
    "placeholder GIF": (
        "imageNotFound.gif",
        lambda p: Image.new("P", (60, 60), 1).save(p),
        "placeholder",
    ),
    "decompression bomb": (
        "bomb.png",
        lambda p: _png(p, Image.new("1", (20000, 20000))),
        "unreadable",
    ),
}


def _base(root: Path) -> Path:
    return make_class_folders(root, {"red": 4, "blue": 4})


@pytest.mark.parametrize("case", list(SKIPPED))
def test_a_bad_file_is_skipped_with_its_reason(case: str, tmp_path: Path) -> None:
    name, make, reason = SKIPPED[case]
    root = _base(tmp_path / "d")
    make(root / "red" / name)
    split = load_split(root, 0.5, 0)
    paths = {p.name: r for p, r in split.skipped}
    found = paths.get(name) or paths.get(Path(name).with_suffix(".jpg").name)
    assert found is not None and reason in found, split.skipped
    assert len(split.train) + len(split.val) == 8  # the good images all stay


HIDDEN = {
    ".ipynb_checkpoints folder": lambda r: make_image(
        r / "red" / ".ipynb_checkpoints" / "0-checkpoint.png", (0, 0, 0)
    ),
    ".DS_Store file": lambda r: (r / "red" / ".DS_Store").write_bytes(b"\0\1"),
    "__MACOSX folder": lambda r: make_image(r / "blue" / "__MACOSX" / "._0.png", (0, 0, 0)),
    "hidden class folder": lambda r: make_image(r / ".cache" / "x.png", (0, 0, 0)),
}


@pytest.mark.parametrize("case", list(HIDDEN))
def test_hidden_files_and_folders_are_ignored_and_counted(case: str, tmp_path: Path) -> None:
    root = _base(tmp_path / "d")
    HIDDEN[case](root)
    split = load_split(root, 0.5, 0)
    assert split.classes == ["blue", "red"] and split.hidden == 1
    assert len(split.train) + len(split.val) == 8 and not split.skipped
    assert "ignored 1 hidden file(s) and folder(s)" in split.summary()


WORKS = {
    "CMYK JPEG": lambda p: Image.new("CMYK", (40, 40), (0, 200, 200, 0)).save(
        p.with_suffix(".jpg")
    ),
    "16-bit PNG": lambda p: _png(p, Image.fromarray(np.full((40, 40), 60000, np.uint16))),
    "transparent PNG": lambda p: _png(p, Image.new("RGBA", (40, 40), (200, 0, 0, 0))),
    "palette PNG": lambda p: _png(p, Image.new("P", (40, 40), 2)),
    "9:1 panorama": lambda p: _png(p, Image.new("RGB", (360, 40), (200, 40, 40))),
    "large 16-bit grey": lambda p: _png(p, Image.fromarray(np.full((2600, 2100), 9, np.uint16))),
}


@pytest.mark.parametrize("case", list(WORKS))
def test_unusual_but_valid_images_train(case: str, tmp_path: Path) -> None:
    root = _base(tmp_path / "d")
    WORKS[case](root / "red" / "odd.png")
    split = load_split(root, 0.5, 0)
    assert not split.skipped and len(split.train) + len(split.val) == 9


def test_a_class_missing_from_val_is_a_warning(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "train", {"red": 4, "blue": 4, "green": 4})
    make_class_folders(tmp_path / "val", {"red": 2, "blue": 2}, seed=50)
    (tmp_path / "val" / "green").mkdir()
    split = load_split(tmp_path)
    assert "warning: class 'green' has no image in val/" in split.summary()


def test_exact_duplicates_across_train_and_val_are_reported_at_train_time(
    tmp_path: Path,
) -> None:
    make_class_folders(tmp_path / "train", {"red": 4, "blue": 4})
    make_class_folders(tmp_path / "val", {"red": 2, "blue": 2}, seed=50)
    shutil.copy(tmp_path / "train" / "red" / "1.png", tmp_path / "val" / "red" / "copy.png")
    summary = load_split(tmp_path).summary()
    assert "1 validation image(s) are exact copies of training images" in summary
    assert "val/red/copy.png = train/red/1.png" in summary


def test_odd_file_names_print_safely(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _base(tmp_path / "d")
    odd = os.fsencode(root / "red") + b"/caf\xe9\nnew.png"  # not UTF-8, and a newline
    make_image(Path(os.fsdecode(odd)), (200, 40, 40))
    assert main(["--no-progress", "train", str(root), *FAST[:-1], "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 0  # fmt: skip
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) == 9
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(root / "red"), "--json"]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")  # strict UTF-8 output: no lone surrogates
    sources = [r["source"] for r in json.loads(out)]
    assert any(s.endswith("caf\\xe9\\x0anew.png") for s in sources)


# ---- labels CSVs --------------------------------------------------------------------------


def _csv_images(root: Path, n: int = 8) -> list[str]:
    for i in range(n):
        make_image(root / f"{i}.png", (200, 40, 40) if i % 2 else (40, 40, 200), seed=i)
    return [f"{i}.png" for i in range(n)]


def test_a_cp1252_csv_is_read_with_a_note(tmp_path: Path) -> None:
    names = _csv_images(tmp_path)
    rows = [f"{n},{'café' if i % 2 else 'thé'}" for i, n in enumerate(names)]
    (tmp_path / "labels.csv").write_bytes(("image,drink\n" + "\n".join(rows)).encode("cp1252"))
    split = load_table_split(tmp_path / "labels.csv")
    assert split.tasks == {"drink": ["café", "thé"]}
    assert "not UTF-8" in split.summary() and "cp1252" in split.summary()


def test_a_utf8_csv_with_bom_needs_no_note(tmp_path: Path) -> None:
    names = _csv_images(tmp_path)
    rows = [f"{n},{'café' if i % 2 else 'thé'}" for i, n in enumerate(names)]
    (tmp_path / "labels.csv").write_bytes(("image,drink\n" + "\n".join(rows)).encode("utf-8-sig"))
    split = load_table_split(tmp_path / "labels.csv")
    assert split.tasks == {"drink": ["café", "thé"]} and "not UTF-8" not in split.summary()


def test_a_class_with_one_row_trains_and_is_noted(tmp_path: Path) -> None:
    names = _csv_images(tmp_path, 9)
    labels = ["a", "b"] * 4 + ["rare"]
    (tmp_path / "l.csv").write_text(
        "image,kind\n" + "\n".join(f"{n},{c}" for n, c in zip(names, labels))
    )
    split = load_table_split(tmp_path / "l.csv", val_fraction=0.3)
    rare = split.tasks["kind"].index("rare")
    assert rare in split.labels(split.train, "kind")
    assert "class 'rare' of task 'kind' labels only 1 image" in split.summary()


def test_conflicting_labels_leave_the_image_out(tmp_path: Path) -> None:
    names = _csv_images(tmp_path)
    lines = [f"{n},{'a' if i % 2 else 'b'}" for i, n in enumerate(names)]
    lines += ["0.png,a", "1.png,a"]  # 0.png now says a and b; 1.png says a twice
    (tmp_path / "l.csv").write_text("image,kind\n" + "\n".join(lines))
    split = load_table_split(tmp_path / "l.csv", val_fraction=0.3)
    used = {s.path.name for s in [*split.train, *split.val]}
    assert "0.png" not in used and "1.png" in used and len(used) == 7
    assert any("conflicting labels on lines 2, 10" in r for _, r in split.skipped)
    assert "1 repeated row(s) with the same labels kept once" in split.summary()


def test_one_image_named_two_ways_is_one_sample(tmp_path: Path) -> None:
    names = _csv_images(tmp_path)
    lines = [f"{n},{'a' if i % 2 else 'b'}" for i, n in enumerate(names)]
    lines += [f"{tmp_path / '1.png'},a", "./2,b"]  # absolute, and without its extension
    (tmp_path / "l.csv").write_text("image,kind\n" + "\n".join(lines))
    split = load_table_split(tmp_path / "l.csv", val_fraction=0.3)
    used = [s.path.resolve() for s in [*split.train, *split.val]]
    assert len(used) == len(set(used)) == 8
    assert "2 repeated row(s) with the same labels kept once" in split.summary()


def test_a_csv_that_is_not_a_table_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_bytes(b'image,kind\n"0.png,a\n' + b"x" * 200_000)
    with pytest.raises(DataError):
        load_table_split(tmp_path / "l.csv")


# ---- run folders and model files -----------------------------------------------------------

COMMANDS = [
    ["predict", "{run}", "{image}"],
    ["evaluate", "{run}"],
    ["export", "{run}"],
    ["report", "{run}"],
    ["serve", "{run}"],
]


def _edit_manifest(run: Path, **changes: object) -> None:
    m = json.loads((run / "manifest.json").read_text())
    m.update(changes)
    (run / "manifest.json").write_text(json.dumps(m))


MANIFESTS = {
    "tasks as a list": ({"tasks": ["red", "blue"]}, "field 'tasks'"),
    "empty preprocessing": ({"preprocessing": {}}, "field 'preprocessing'"),
    "num_features a string": ({"num_features": "1280"}, "field 'num_features'"),
    "manifest not an object": (None, "holds a JSON list"),
}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("case", list(MANIFESTS))
def test_a_malformed_manifest_is_a_checkpoint_error_naming_the_field(
    case: str, command: list[str], trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    changes, words = MANIFESTS[case]
    if changes is None:
        (trained_run / "manifest.json").write_text("[1, 2]")
    else:
        _edit_manifest(trained_run, **changes)
    image = next(trained_run.parent.rglob("*.png"), None) or make_image(
        trained_run.parent / "x.png", (1, 2, 3)
    )
    argv = [a.format(run=trained_run, image=image) for a in command]
    assert main(["--no-progress", *argv]) == 2
    err = flat(capsys.readouterr().err)
    assert err.startswith("error: CheckpointError:") and words in err


def _replace_weights(run: Path, change: Callable[[dict], None], rehash: bool) -> None:
    from safetensors.torch import load_file, save_file

    from headstart.training.files import sha256_file

    weights = load_file(str(run / "model.safetensors"))
    change(weights)
    save_file(weights, str(run / "model.safetensors"))
    if rehash:
        _edit_manifest(run, weights_sha256=sha256_file(run / "model.safetensors"))


def _nan(w: dict) -> None:
    name = next(k for k in w if k.startswith("heads"))
    w[name][0] = float("nan")


def test_nan_weights_are_refused_everywhere(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    _replace_weights(trained_run, _nan, rehash=True)
    image = make_image(trained_run / "x.png", (1, 2, 3))
    for argv in (["predict", str(trained_run), str(image)], ["serve", str(trained_run)]):
        assert main(argv) == 2
        assert "NaN or infinite" in flat(capsys.readouterr().err)


def test_changed_weights_fail_the_sha256_check(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    _replace_weights(trained_run, lambda w: w[next(iter(w))].mul_(2), rehash=False)
    assert main(["evaluate", str(trained_run)]) == 2
    assert "SHA-256 differs" in flat(capsys.readouterr().err)


def test_a_pickle_in_place_of_the_weights_runs_nothing(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    (trained_run / "model.safetensors").write_bytes(hostile_pickle(marker))
    assert main(["evaluate", str(trained_run)]) == 2
    assert "CheckpointError" in capsys.readouterr().err and not marker.exists()


def test_a_pickled_pt2_is_never_loaded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt2"
    buffer = io.BytesIO()
    torch.save({"x": Payload(marker)}, buffer)  # what a crafted archive carries
    evil.write_bytes(buffer.getvalue())
    assert main(["serve", str(evil)]) == 2
    err = flat(capsys.readouterr().err)
    assert "does not load" in err and "ONNX export" in err and not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, about the payload
def test_a_pickled_weights_file_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pth"
    weights.write_bytes(hostile_pickle(marker))
    root = _base(tmp_path / "d")
    argv = ["train", str(root), *FAST[:-1], "--weights", str(weights), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "WeightsUnavailable" in capsys.readouterr().err and not marker.exists()


def test_an_onnx_export_with_nan_weights_is_refused(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    import onnx
    from onnx import numpy_helper

    assert main(["--no-progress", "export", str(trained_run)]) == 0
    path = trained_run / "model.onnx"
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).size > 10)
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))
    capsys.readouterr()
    assert main(["serve", str(path)]) == 2
    assert "NaN or infinity" in flat(capsys.readouterr().err)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """Saving the model fails as on a full disk until the yielded function frees it."""
    import safetensors.torch

    real = safetensors.torch.save_model

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_model", full)
    yield lambda: monkeypatch.setattr(safetensors.torch, "save_model", real)


def test_a_full_disk_at_the_end_keeps_the_trained_state(
    tmp_path: Path, full_disk: Callable[[], None], capsys: pytest.CaptureFixture
) -> None:
    root = _base(tmp_path / "d")
    out = tmp_path / "run"
    argv = ["--no-progress", "train", str(root), *FAST[:-1], "--strategy", "scratch",
            "--epochs", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = flat(capsys.readouterr().err)
    assert f"could not write {out}/model.safetensors: the disk is full" in err
    assert f"headstart train --resume {out}" in err
    assert not (out / "model.safetensors").exists() and (out / "resume" / "state.json").exists()
    full_disk()
    assert main(["--no-progress", "train", "--resume", str(out)]) == 0  # no training again
    from headstart.training import load_run

    assert load_run(out).manifest["best_epoch"] >= 1


def test_an_unwritable_out_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _base(tmp_path / "d")
    (tmp_path / "file").write_text("not a folder")
    argv = ["train", str(root), *FAST[:-1], "--out", str(tmp_path / "file" / "run")]
    assert main(argv) == 2
    assert "cannot create the run folder" in flat(capsys.readouterr().err)


def test_the_server_refuses_an_extreme_aspect_ratio(trained_run: Path) -> None:
    from fastapi.testclient import TestClient

    from headstart.serve.app import ServeConfig, create_app

    strip = io.BytesIO()
    Image.new("RGB", (1, 3000)).save(strip, "PNG")
    with TestClient(create_app(ServeConfig(model=str(trained_run)))) as client:
        r = client.post("/predict", files={"file": ("strip.png", strip.getvalue())})
    assert r.status_code == 400 and "aspect ratio of 3000:1" in r.json()["error"]


def test_predict_reports_a_refused_image_and_goes_on(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = make_image(tmp_path / "good.png", (200, 40, 40))
    Image.new("RGB", (3000, 1)).save(tmp_path / "strip.png")
    assert main(["predict", str(trained_run), str(good), str(tmp_path / "strip.png")]) == 1
    out = capsys.readouterr().out
    assert "strip.png: ERROR refused:" in out and "good.png: " in out


assert TINY  # the tiny backbone is registered by tests.conftest


RUN_FILES = {
    "split.json not JSON": ("split.json", "{oops", ["evaluate"], "cannot be read as JSON"),
    "split.json val not a list": (
        "split.json",
        '{"root": "/x", "val": 3}',
        ["evaluate"],
        "must be lists of [path, label]",
    ),
    "evaluation.json a list": ("evaluation.json", "[1]", ["report"], None),  # evaluated again
    "metrics.jsonl damaged": ("metrics.jsonl", "{oops\n", ["report"], "not a JSON object"),
}


@pytest.mark.parametrize("case", list(RUN_FILES))
def test_damaged_run_files_are_errors_naming_the_file(
    case: str, trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    name, content, command, words = RUN_FILES[case]
    (trained_run / name).write_text(content)
    code = main(["--no-progress", *command, str(trained_run)])
    err = flat(capsys.readouterr().err)
    if words is None:
        assert code == 0  # a damaged evaluation is simply made again
    else:
        assert code == 2 and err.startswith("error: CheckpointError:") and words in err
        assert name in err


def test_a_full_disk_after_a_probe_says_to_run_it_again(
    tmp_path: Path, full_disk: Callable[[], None], capsys: pytest.CaptureFixture
) -> None:
    root = _base(tmp_path / "d")
    out = tmp_path / "run"
    argv = ["--no-progress", "train", str(root), *FAST[:-1], "--out", str(out)]
    assert main(argv) == 2
    err = flat(capsys.readouterr().err)
    assert "the disk is full" in err and "--resume" not in err  # no state to resume from
    assert "the same command with --overwrite fits the head again" in err
    full_disk()
    assert main([*argv, "--overwrite"]) == 0
