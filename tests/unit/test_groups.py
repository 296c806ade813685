"""``--group COLUMN``: a labels CSV's subjects (patients, lesions) held out whole, in the
validation split and in cross-validation folds; a hint when a column looks like one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from headstart.cli.main import main
from headstart.data import load_table_split
from headstart.errors import DataError
from tests.conftest import TINY, make_image


def subjects_csv(root: Path, subjects: int = 20, per: int = 3, split: bool = False) -> Path:
    """``subjects`` patients of ``per`` images each, a class per patient (alternating)."""
    lines = ["image,patient,dx" + (",split" if split else "")]
    for p in range(subjects):
        colour = (200, 40, 40) if p % 2 else (40, 40, 200)
        for k in range(per):
            name = f"p{p}_{k}.png"
            make_image(root / name, colour, seed=p * per + k)
            part = ",val" if split and (p * per + k) % 5 == 0 else ",train" if split else ""
            lines.append(f"{name},P{p},{'ab'[p % 2]}{part}")
    (root / "labels.csv").write_text("\n".join(lines))
    return root / "labels.csv"


def _patients(samples: list) -> set[str]:
    return {s.path.name.split("_")[0] for s in samples}


def grouped_run(root: Path) -> tuple[Path, dict]:
    """A tiny probe trained on :func:`subjects_csv` with ``--group patient``: its folder and
    its ``split.json``."""
    csv, run = subjects_csv(root / "d"), root / "run"
    train = ["--no-progress", "train", "--labels", str(csv), "--group", "patient",
             "--backbone", TINY, "--workers", "0", "--out", str(run)]  # fmt: skip
    assert main(train) == 0
    return run, json.loads((run / "split.json").read_text())


def test_a_group_is_held_out_whole_and_the_split_says_so(tmp_path: Path) -> None:
    csv = subjects_csv(tmp_path)
    for seed in range(3):
        split = load_table_split(csv, seed=seed, group="patient")
        assert not _patients(split.train) & _patients(split.val)
        assert len(split.val) % 3 == 0 and len(split.val) + len(split.train) == 60
        assert set(split.tasks) == {"dx"}  # the group column is never a task
        assert "split by --group patient: 20 groups (20 of 2+ images)" in split.summary()
    for fraction, expect in ((0.2, 12), (0.5, 30), (0.8, 48)):  # of 60 images
        held = load_table_split(csv, val_fraction=fraction, group="patient").val
        assert len(held) == expect  # 20 patients of 3: five, two or five folds
    plain = load_table_split(csv, seed=0, tasks=["dx"])
    assert _patients(plain.train) & _patients(plain.val)  # image by image: patients straddle


def test_a_column_that_looks_like_a_subject_id_is_pointed_out(tmp_path: Path) -> None:
    csv = subjects_csv(tmp_path, subjects=60, per=2)  # 60 ids for 120 rows: an identifier
    summary = load_table_split(csv).summary()
    assert "column patient repeats its values (60 values for 120 rows" in summary
    assert "pass --group patient" in summary
    assert "repeats its values" not in load_table_split(csv, group="patient").summary()


def test_bad_group_columns_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = subjects_csv(tmp_path)
    with pytest.raises(DataError, match=r"--group lesion: no such column.*patient"):
        load_table_split(csv, group="lesion")
    with pytest.raises(DataError, match=r"--group image is .*image column"):
        load_table_split(csv, group="image")
    folder = tmp_path / "folder" / "red"
    make_image(folder / "a.png", (200, 0, 0))
    assert main(["train", str(folder.parent), "--group", "patient"]) == 2
    assert "names a column of a labels CSV" in capsys.readouterr().err
    few = subjects_csv(tmp_path / "few", subjects=3)
    with pytest.raises(DataError, match="3 group"):
        load_table_split(few, group="patient")


def test_a_given_split_that_straddles_a_group_is_warned_of(tmp_path: Path) -> None:
    csv = subjects_csv(tmp_path, split=True)  # every fifth image is val, whoever it shows
    split = load_table_split(csv, group="patient")
    assert any("puts" in n and "--group patient group(s) in train and val" in n
               for n in split.notes)  # fmt: skip


def test_cv_folds_keep_groups_whole(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = subjects_csv(tmp_path / "d", subjects=12, per=2)
    args = ["--no-progress", "cv", "--labels", str(csv), "--group", "patient", "--folds", "3",
            "--backbone", TINY, "--workers", "0", "--batch-size", "8",
            "--out", str(tmp_path / "cv")]  # fmt: skip
    assert main(args) == 0
    for k in (1, 2, 3):
        split = json.loads((tmp_path / "cv" / "probe" / f"fold{k}" / "split.json").read_text())
        train, val = ({Path(p).name.split("_")[0] for p, _ in split[s]} for s in ("train", "val"))
        assert val and not train & val


def test_the_probe_chooses_its_penalty_on_folds_of_whole_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.training.regularise as regularise

    seen = []
    real = regularise.fit_last_layer_head

    def spy(model, raw, targets, objective, seed, groups=None):
        seen.append(groups)
        return real(model, raw, targets, objective, seed, groups)

    monkeypatch.setattr(regularise, "fit_last_layer_head", spy)
    _, split = grouped_run(tmp_path)
    patients = [Path(p).name.split("_")[0] for p, _ in split["train"]]
    assert len(seen) == 1 and len(seen[0]) == len(patients)
    assert len(set(seen[0])) == len(set(patients))  # one fold group per patient, not per image
    assert all((a == b) == (p == q) for a, p in zip(seen[0], patients)
               for b, q in zip(seen[0], patients))  # fmt: skip


def test_label_errors_are_scored_by_heads_that_never_saw_the_subject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.evaluation.evaluate as evaluate

    seen = []
    real = evaluate.out_of_fold_probabilities

    def spy(*args, **kwargs):
        seen.append(kwargs.get("groups"))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "out_of_fold_probabilities", spy)
    run, split = grouped_run(tmp_path)
    assert split["groups"]["p3_1.png"] == "P3"  # recorded with the split
    assert main(["--no-progress", "evaluate", str(run)]) == 0
    patients = [Path(p).name.split("_")[0] for p, _ in split["train"]]
    assert seen and [g[1:] for g in seen[0]] == [p[1:] for p in patients]


def test_recommend_measures_on_whole_groups_and_says_how_to_train(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv = subjects_csv(tmp_path / "d")
    argv = ["--no-progress", "recommend", "--labels", str(csv), "--group", "patient",
            "--backbones", TINY, "--batch-size", "8", "--workers", "0",
            "--out", str(tmp_path / "rec")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "split by --group patient" in printed
    train_it = next(line for line in printed.splitlines() if line.startswith("train it:"))
    assert "--group patient" in train_it


def _copy(src: Path, dst: Path) -> None:
    """A resized, recompressed copy: what a near-duplicate usually is."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).resize((40, 40)).save(dst, quality=85)


def test_hamming_distances_equal_a_brute_force_count() -> None:
    import numpy as np

    from headstart.data.near_duplicates import hamming

    rng = np.random.default_rng(0)
    a, b = rng.random((7, 64)) < 0.5, rng.random((5, 64)) < 0.5
    assert (hamming(a, b) == (a[:, None, :] != b[None, :, :]).sum(-1)).all()


def test_near_duplicates_are_held_out_together(tmp_path: Path) -> None:
    from headstart.data import load_split
    from tests.conftest import make_class_folders, make_trainval

    data = make_class_folders(tmp_path / "d", {"red": 12, "blue": 12})
    for cls in ("red", "blue"):
        for i in range(4):
            _copy(data / cls / f"{i}.png", data / cls / f"{i}_copy.jpg")
    for seed in range(3):
        split = load_split(data, seed=seed, group="near-duplicates")
        side = {s.path: part for part in ("train", "val") for s in getattr(split, part)}
        for cls in ("red", "blue"):
            for i in range(4):
                assert side[data / cls / f"{i}.png"] == side[data / cls / f"{i}_copy.jpg"]
        assert "split by --group near-duplicates: 24 groups (8 of 2+ images)" in split.summary()
    twins = make_class_folders(tmp_path / "twins", {"red": 12, "blue": 12})
    for i in range(6):  # byte-for-byte copies: one group, so never a copy across the split
        shutil.copy(twins / "red" / f"{i}.png", twins / "red" / f"{i}_same.png")
    for seed in range(4):  # the first, image-by-image draw's copies are not warned of
        notes = load_split(twins, seed=seed, group="near-duplicates").notes
        assert not any("exact copies" in n for n in notes)
    given = make_trainval(tmp_path / "tv")
    _copy(given / "train" / "red" / "0.png", given / "val" / "red" / "0_copy.jpg")
    notes = load_split(given, group="near-duplicates").notes
    assert any("puts 1 --group near-duplicates group(s) in train and val" in n for n in notes)


def test_a_published_test_part_sharing_subjects_with_train_is_warned_of(tmp_path: Path) -> None:
    lines = ["image,patient,dx,split"]
    for p in range(12):
        for k in range(2):
            make_image(tmp_path / f"p{p}_{k}.png", (200, 40, 40) if p % 2 else (40, 40, 200))
            part = "test" if p < 2 and k == 1 else "test" if p == 2 else "train"
            lines.append(f"p{p}_{k}.png,P{p},{'ab'[p % 2]},{part}")  # P0, P1 in train and test
    (tmp_path / "l.csv").write_text("\n".join(lines))
    split = load_table_split(tmp_path / "l.csv", group="patient")
    warned = [n for n in split.notes if "in train and test" in n]
    assert len(warned) == 1 and "puts 2 --group patient group(s)" in warned[0]
    assert "P0, P1" in warned[0] and not _patients(split.train) & _patients(split.val)


def test_evaluate_on_a_test_csv_warns_of_subjects_seen_in_training(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, split = grouped_run(tmp_path)
    assert split["group"] == "patient"
    seen = sorted({split["groups"][p] for p, _ in split["train"]})
    test = tmp_path / "d" / "test.csv"  # new images: two of a trained patient, two of a new one
    rows = ["image,patient,dx"]
    for k, patient in enumerate([seen[0], seen[0], "P99", "P99"]):
        make_image(tmp_path / "d" / f"t{k}.png", (40, 40, 200), seed=500 + k)
        rows.append(f"t{k}.png,{patient},b")
    test.write_text("\n".join(rows))
    capsys.readouterr()
    assert main(["--no-progress", "evaluate", str(run), str(test), "--no-analysis"]) == 0
    out = capsys.readouterr().out
    assert "warning: 2 of them share a --group patient group with training images" in out
    test.write_text(test.read_text().replace(",patient,", ",subject,"))  # no such column: quiet
    assert main(["--no-progress", "evaluate", str(run), str(test), "--no-analysis"]) == 0
    assert "share a --group" not in capsys.readouterr().out
