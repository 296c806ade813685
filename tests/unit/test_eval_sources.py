"""What `evaluate` reads: a test set as a labels CSV or a folder, read against the model's
classes, never the images the run trained on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from headstart.cli.main import main
from headstart.errors import DataError
from headstart.evaluation import evaluate_run
from tests.conftest import make_class_folders
from tests.unit.conftest import FAST
from tests.unit.test_multitask import _train, make_table

KW = {"device": "cpu", "progress": False, "analysis": False}


@pytest.fixture
def run_and_data(trained_run: Path, trained_run_once: tuple[Path, Path]) -> tuple[Path, Path]:
    """A private copy of the shared folder run (red and blue) and its train/val folders."""
    return trained_run, trained_run_once[1]


def test_a_test_csv_is_read_against_the_models_classes(
    run_and_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """A CSV naming one of the two classes, in a column not named after the task: its labels
    map to the model's indices (the CSV's own would put 'red' at 0, the model has 'blue')."""
    run, data = run_and_data
    shutil.copytree(data / "val" / "red", tmp_path / "test" / "red")
    red = sorted(p.name for p in (tmp_path / "test" / "red").glob("*.png"))
    (tmp_path / "test.csv").write_text("file,colour\n" + "".join(f"red/{n},red\n" for n in red))
    folder = evaluate_run(run, tmp_path / "test", **KW)
    table = evaluate_run(run, tmp_path / "test.csv", images_root=tmp_path / "test", **KW)
    assert table.single.n == folder.single.n == len(red)
    assert table.single.accuracy == folder.single.accuracy > 0.5
    assert table.source == str(tmp_path / "test.csv")


def test_a_label_the_model_does_not_know_is_refused_by_name(
    run_and_data: tuple[Path, Path], tmp_path: Path
) -> None:
    run, data = run_and_data
    (tmp_path / "t.csv").write_text(f"image,label\n{data / 'val' / 'red' / '0.png'},purple\n")
    with pytest.raises(DataError, match="label\\(s\\) 'purple' the model was not trained on"):
        evaluate_run(run, tmp_path / "t.csv", **KW)
    with pytest.raises(DataError, match=r"nope\.csv does not exist"):
        evaluate_run(run, tmp_path / "nope.csv", **KW)


def test_images_the_run_trained_on_are_left_out(
    run_and_data: tuple[Path, Path], tmp_path: Path
) -> None:
    run, data = run_and_data
    rows = [f"{p},{p.parent.name}" for p in sorted(data.glob("*/*/*.png"))]  # train and val
    (tmp_path / "all.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    ev = evaluate_run(run, tmp_path / "all.csv", **KW)
    own = evaluate_run(run, **KW)
    assert ev.single.n == own.single.n == 12
    assert ev.source.endswith("(32 images the run trained on left out)")
    with pytest.raises(DataError, match=r"every image in .* is one .* trained on"):
        evaluate_run(run, data / "train", **KW)


def test_a_multi_task_model_is_evaluated_on_the_tasks_a_csv_labels(tmp_path: Path) -> None:
    _train(make_table(tmp_path / "train"), tmp_path / "run")
    test = make_table(tmp_path / "test", n=8)
    lines = test.read_text().splitlines()
    test.write_text("\n".join(",".join(r.split(",")[:2]) for r in lines) + "\n")  # no size
    ev = evaluate_run(tmp_path / "run", test, **KW)
    assert list(ev.tasks) == ["colour"] and ev.single.n == 8
    with pytest.raises(DataError, match="tasks colour, size; class subfolders label one task"):
        evaluate_run(tmp_path / "run", tmp_path / "test" / "img", **KW)


def test_train_and_test_folders_train_on_a_split_and_evaluate_on_test(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "d" / "train", {"red": 10, "blue": 10})
    make_class_folders(tmp_path / "d" / "test", {"red": 3, "blue": 3}, seed=50)
    argv = ["--no-progress", "train", str(tmp_path / "d"), *FAST[:-1], "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    ev = evaluate_run(tmp_path / "run", tmp_path / "d", **KW)
    assert ev.source == str(tmp_path / "d" / "test") and ev.single.n == 6
    assert evaluate_run(tmp_path / "run", **KW).single.n == 4  # its own split of train/


def test_a_csv_with_a_split_column_trains_on_its_split_and_evaluates_its_test_rows(
    tmp_path: Path,
) -> None:
    lines = make_table(tmp_path, n=30).read_text().splitlines()
    parts = ["train"] * 20 + ["val"] * 6 + ["test"] * 4
    (tmp_path / "s.csv").write_text(
        "\n".join([f"{lines[0]},split"] + [f"{r},{p}" for r, p in zip(lines[1:], parts)]) + "\n"
    )
    _train(tmp_path / "s.csv", tmp_path / "run")
    assert evaluate_run(tmp_path / "run", **KW).single.n == 6  # val rows
    ev = evaluate_run(tmp_path / "run", tmp_path / "s.csv", **KW)
    assert ev.source.endswith("s.csv (its test rows)") and ev.single.n == 4
