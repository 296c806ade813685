"""Labels CSVs as their sources write them: image ids without extensions, an image column
recognised by its cells, identifier columns kept out of the tasks, many rare classes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from headstart.data import load_table_split, read_labels_csv
from headstart.errors import DataError
from tests.conftest import make_image


def ham_like(root: Path, n: int = 12, sep: str = ",") -> Path:
    """HAM10000's layout: ``lesion_id`` (an identifier), ``image_id`` without extension,
    images in ``images/``, a diagnosis and a few metadata columns."""
    lines = [sep.join(["lesion_id", "isic", "dx", "sex"])]
    for i in range(n):
        make_image(root / "images" / f"ISIC_{i:04d}.jpg", (40 * (i % 2), 90, 160), seed=i)
        lines.append(
            sep.join([f"HAM_{i}", f"ISIC_{i:04d}", "nv" if i % 2 else "mel", "mf"[i % 3 > 0]])
        )
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return root / "meta.csv"


@pytest.mark.parametrize("sep", [",", ";"])
def test_ids_without_extension_in_an_unnamed_column_are_found(tmp_path: Path, sep: str) -> None:
    table = read_labels_csv(ham_like(tmp_path, sep=sep), images_root=tmp_path / "images")
    assert len(table.samples) == 12
    assert {s.path.suffix for s in table.samples} == {".jpg"}
    assert table.samples[0].path == tmp_path / "images" / "ISIC_0000.jpg"
    assert any("image column 'isic'" in n for n in table.notes)


def test_identifier_columns_are_not_tasks_unless_asked(tmp_path: Path) -> None:
    csv = ham_like(tmp_path)
    table = read_labels_csv(csv, images_root=tmp_path / "images")
    assert list(table.tasks) == ["dx", "sex"]
    assert any("lesion_id (more distinct values" in n for n in table.notes)
    asked = read_labels_csv(csv, images_root=tmp_path / "images", tasks=["dx", "lesion_id"])
    assert list(asked.tasks) == ["dx", "lesion_id"] and len(asked.tasks["lesion_id"]) == 12


def test_a_subject_column_of_a_small_table_is_known_by_its_name(tmp_path: Path) -> None:
    """32 patients in 80 rows: too few distinct values to read as an identifier by count, so
    the header's words say it (a ``class_id`` of as many values stays a task)."""
    lines = ["image,Patient ID,class_id,finding"]
    for i in range(80):
        make_image(tmp_path / f"{i}.png", (200, 40, 40), size=16, seed=i)
        lines.append(f"{i}.png,P{i % 32:03d},{i % 32},{'ab'[i % 2]}")
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    table = read_labels_csv(tmp_path / "l.csv")
    assert list(table.tasks) == ["class_id", "finding"]
    assert any("pass --group 'Patient ID'" in n for n in table.notes)


def test_a_named_image_column_may_leave_out_the_extension(tmp_path: Path) -> None:
    for i in range(4):
        make_image(tmp_path / f"{i}.PNG", (200, 40, 40), seed=i)
    (tmp_path / "l.csv").write_text("image_id,c\n0,a\n1,a\n2,b\n3,b\n")
    table = read_labels_csv(tmp_path / "l.csv")
    assert [s.path.name for s in table.samples] == ["0.PNG", "1.PNG", "2.PNG", "3.PNG"]


def test_the_image_column_must_be_one_column(tmp_path: Path) -> None:
    for i in range(4):
        make_image(tmp_path / f"{i}.png", (200, 40, 40), seed=i)
    (tmp_path / "two.csv").write_text("a,b,c\n0,1,x\n1,2,x\n2,3,y\n3,0,y\n")
    with pytest.raises(DataError, match="columns 'a', 'b' all name images"):
        read_labels_csv(tmp_path / "two.csv")
    (tmp_path / "none.csv").write_text("a,c\n7,x\n8,y\n")
    with pytest.raises(DataError, match="no column's cells name images under"):
        read_labels_csv(tmp_path / "none.csv")


def test_a_csv_in_the_working_folder_names_that_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not "images under ." (a bare dot reads as a typo): the folder's own path."""
    monkeypatch.chdir(tmp_path)
    Path("none.csv").write_text("a,c\n7,x\n8,y\n")
    with pytest.raises(DataError, match=re.escape(f"name images under {tmp_path.resolve()}. Name")):
        read_labels_csv(Path("none.csv"))


def test_many_single_image_classes_make_one_note(tmp_path: Path) -> None:
    lines = ham_like(tmp_path, n=16).read_text().splitlines()
    grades = ["a", "b"] * 4 + [str(i) for i in range(8, 16)]  # eight classes of one image
    text = [lines[0] + ",grade"] + [f"{r},{g}" for r, g in zip(lines[1:], grades)]
    (tmp_path / "g.csv").write_text("\n".join(text) + "\n")
    split = load_table_split(tmp_path / "g.csv", tmp_path / "images", tasks=["dx", "grade"])
    notes = [n for n in split.notes if "only 1 image" in n]
    assert len(notes) == 1
    assert notes[0].startswith("note: 8 classes '10', '11', '12', '13', '14', ... of task")


def with_split(root: Path, parts: list[str], column: str = "split") -> Path:
    lines = ham_like(root, n=len(parts)).read_text().splitlines()
    text = [f"{lines[0]},{column}"] + [f"{r},{p}" for r, p in zip(lines[1:], parts)]
    (root / "s.csv").write_text("\n".join(text) + "\n")
    return root / "s.csv"


def test_a_split_column_is_the_split_and_never_a_task(tmp_path: Path) -> None:
    parts = ["train"] * 8 + ["Validation"] * 4 + ["test"] * 4
    split = load_table_split(with_split(tmp_path, parts), tmp_path / "images", seed=3)
    assert "split" not in split.tasks
    names = {s.path.name for s in split.val}
    assert names == {f"ISIC_{i:04d}.jpg" for i in range(8, 12)} and len(split.train) == 8
    assert "8 train, 4 val, 4 test rows; test rows are left out" in split.summary()
    assert "no val row" not in split.summary()
    parts = ["train"] * 8 + ["val", "test"] * 4  # val rows 8, 10, 12, 14: every dx is 'mel'
    split = load_table_split(with_split(tmp_path / "b", parts), tmp_path / "b" / "images")
    assert "warning: class 'nv' of task 'dx' has no val row" in split.summary()


def test_is_valid_false_and_true_and_train_test_only(tmp_path: Path) -> None:
    csv = with_split(tmp_path, ["False", "True"] * 6, column="is_valid")
    split = load_table_split(csv, tmp_path / "images")
    assert (len(split.train), len(split.val)) == (6, 6)
    csv = with_split(tmp_path / "b", ["train"] * 10 + ["test"] * 2)
    split = load_table_split(csv, tmp_path / "b" / "images", val_fraction=0.2)
    assert (len(split.train), len(split.val)) == (8, 2)
    assert all(int(s.path.stem[-4:]) < 10 for s in split.train + split.val)
    csv = with_split(tmp_path / "c", ["train", "holdout"] * 3)
    with pytest.raises(DataError, match="line 3: 'split' is 'holdout'"):
        load_table_split(csv, tmp_path / "c" / "images")


def test_paths_written_on_windows_resolve(tmp_path: Path) -> None:
    for i in range(4):
        make_image(tmp_path / "img" / f"{i}.png", (200, 40, 40), seed=i)
    (tmp_path / "w.csv").write_text("image,c\r\n" + "".join(
        f"img\\{i}.png,{'ab'[i % 2]}\r\n" for i in range(4)))  # fmt: skip
    table = read_labels_csv(tmp_path / "w.csv")
    assert [s.path for s in table.samples] == [tmp_path / "img" / f"{i}.png" for i in range(4)]


def test_bare_names_are_found_in_subfolders_once_and_only_when_unique(tmp_path: Path) -> None:
    """HAM10000 spreads its images over two folders; the CSV names them by id alone."""
    for i in range(6):
        make_image(tmp_path / "imgs" / f"part_{i % 2 + 1}" / f"ISIC_{i}.jpg", (9, 9, 9), seed=i)
    (tmp_path / "m.csv").write_text("image_id,dx\n" + "".join(
        f"ISIC_{i},{'ab'[i % 2]}\n" for i in range(6)))  # fmt: skip
    make_image(tmp_path / "imgs" / "__MACOSX" / "part_2" / "ISIC_1.jpg", (9, 9, 9))  # debris
    table = read_labels_csv(tmp_path / "m.csv", images_root=tmp_path / "imgs")
    assert [s.path.parent.name for s in table.samples] == ["part_1", "part_2"] * 3
    assert any("6 image(s) named by file alone were found in subfolders" in n for n in table.notes)
    make_image(tmp_path / "imgs" / "part_2" / "ISIC_0.jpg", (9, 9, 9))  # now in both folders
    with pytest.raises(DataError, match="line 2: image 'ISIC_0' not found"):
        read_labels_csv(tmp_path / "m.csv", images_root=tmp_path / "imgs")


def isic_like(root: Path, rows: list[tuple[int, ...]]) -> Path:
    """ISIC's ground-truth layout: ``image`` ids and one 0.0/1.0 column per diagnosis."""
    lines = ["image,MEL,NV,BCC,UNK"]
    for i, bits in enumerate(rows):
        make_image(root / f"ISIC_{i:04d}.jpg", (40 * (i % 3), 90, 160), seed=i)
        lines.append(",".join([f"ISIC_{i:04d}", *(f"{b:.1f}" for b in bits)]))
    (root / "gt.csv").write_text("\n".join(lines) + "\n")
    return root / "gt.csv"


def test_one_hot_columns_are_read_as_one_task(tmp_path: Path) -> None:
    rows = [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0)] * 4
    table = read_labels_csv(isic_like(tmp_path, rows))
    assert table.tasks == {"class": ["BCC", "MEL", "NV"]}  # UNK, never 1, is no class
    assert [s.target["class"] for s in table.samples[:3]] == [1, 2, 0]
    assert any("MEL, NV, BCC, UNK hold one task one-hot" in n for n in table.notes)
    # evaluating a model trained on it reads a test file of the same shape
    known = read_labels_csv(tmp_path / "gt.csv", known={"class": ["BCC", "MEL", "NV"]})
    assert [s.target for s in known.samples] == [s.target for s in table.samples]
    alone = read_labels_csv(tmp_path / "gt.csv", tasks=["MEL"])  # asked for: yes/no
    assert alone.tasks == {"MEL": ["0.0", "1.0"]}


def test_rows_with_two_ones_or_none_stay_yes_no_tasks(tmp_path: Path) -> None:
    rows = [(1, 0, 0, 0), (0, 1, 0, 0), (1, 1, 0, 0), (0, 0, 1, 0)] * 3  # multi-label
    table = read_labels_csv(isic_like(tmp_path, rows), tasks=["MEL", "NV", "BCC"])
    assert list(table.tasks) == ["MEL", "NV", "BCC"]
    assert not any("one-hot" in n for n in table.notes)


def test_list_files_without_a_header_keep_their_first_row(tmp_path: Path) -> None:
    for i in range(6):
        make_image(tmp_path / "images" / f"pet_{i}.jpg", (200 * (i % 2), 90, 60), seed=i)
    pairs = [(f"images/pet_{i}.jpg", "ab"[i % 2]) for i in range(6)]
    (tmp_path / "train.csv").write_text("".join(f"{p},{c}\n" for p, c in pairs))
    table = read_labels_csv(tmp_path / "train.csv")
    assert table.tasks == {"class": ["a", "b"]} and len(table.samples) == 6  # row 1 is data
    assert any("train.csv has no header row" in n for n in table.notes)
    # Oxford Pets' list.txt: comment lines, spaces, ids without extension, several columns
    lines = [f"pet_{i} {i % 2 + 1}  {i % 3} x" for i in range(6)]
    (tmp_path / "list.txt").write_text("#Image CLASS-ID SPECIES\n#All images\n" + "\n".join(lines))
    pets = read_labels_csv(tmp_path / "list.txt", images_root=tmp_path / "images")
    assert list(pets.tasks) == ["column2", "column3"]  # column4 has one class: not a task
    assert [s.path.name for s in pets.samples] == [f"pet_{i}.jpg" for i in range(6)]


def test_labels_joined_by_a_bar_are_one_yes_no_task_each(tmp_path: Path) -> None:
    findings = ["Effusion", "Atelectasis|Effusion", "No Finding", "Atelectasis"] * 3
    lines = ["Image Index,Finding Labels,Patient Gender"]
    for i, f in enumerate(findings):
        make_image(tmp_path / f"{i:08d}_000.png", (40 * (i % 4), 90, 160), seed=i)
        lines.append(f"{i:08d}_000.png,{f},{'MF'[i % 2]}")
    (tmp_path / "Data_Entry.csv").write_text("\n".join(lines) + "\n")
    table = read_labels_csv(tmp_path / "Data_Entry.csv", tasks=["Finding Labels"])
    assert table.tasks == {t: ["no", "yes"] for t in ("Atelectasis", "Effusion", "No Finding")}
    assert [s.target for s in table.samples[:3]] == [
        {"Atelectasis": 0, "Effusion": 1, "No Finding": 0},
        {"Atelectasis": 1, "Effusion": 1, "No Finding": 0},
        {"Atelectasis": 0, "Effusion": 0, "No Finding": 1},
    ]
    assert any("multi-label column(s) Finding Labels (3 labels)" in n for n in table.notes)
    # a test file of the same shape is read against the model's yes/no tasks
    known = {t: ["no", "yes"] for t in table.tasks}
    again = read_labels_csv(tmp_path / "Data_Entry.csv", known=known)
    assert [s.target for s in again.samples] == [s.target for s in table.samples]


def test_patient_ids_and_measurements_are_not_default_tasks() -> None:
    from headstart.data.columns import default_tasks

    rows = [
        {"finding": "ab"[i % 2], "patient": f"P{i // 3}", "age": str(20 + i % 60), "view": "PA"}
        for i in range(300)  # 100 patients of three images, 60 ages
    ]
    tasks, note = default_tasks(["finding", "patient", "age", "view"], rows)
    assert tasks == ["finding"]
    assert "patient (more distinct values than a task could learn" in note
    assert "age (numbers with over 50 distinct values" in note and "view (one value" in note
    few = [{**r, "age": str(20 + i % 40)} for i, r in enumerate(rows)]  # 40 ages: a task
    assert default_tasks(["finding", "age"], few)[0] == ["finding", "age"]


def test_text_with_bars_is_not_split_into_labels() -> None:
    from headstart.data.columns import multi_label

    rows = [{"note": f"seen by dr {i} | follow up {i}"} for i in range(60)]  # 120 "labels"
    assert multi_label(["note"], rows)[0] == ["note"]
