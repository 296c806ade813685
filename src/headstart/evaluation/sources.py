"""Which labelled images an evaluation reads: the run's own validation split, a folder of
class subfolders, or a labels CSV (a held-out test set, read against the model's classes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.data import Sample, read_labels_csv, scan_folder
from headstart.data.groups import is_subject
from headstart.data.near_duplicates import NEAR_DUPLICATES
from headstart.data.split import find_test_dir, find_val_dir, unwrapped
from headstart.errors import CheckpointError, DataError
from headstart.training import LoadedRun
from headstart.training.checkpoint import read_json


def read_split(run: LoadedRun) -> dict[str, Any]:
    """The run's ``split.json`` ({} when absent); CheckpointError when it is malformed."""
    path = run.run_dir / "split.json"
    if not path.is_file():
        return {}
    split = read_json(path)
    parts = [split.get(part, []) for part in ("train", "val")]
    rows = [r for part in parts if isinstance(part, list) for r in part]
    ok = all(isinstance(p, list) for p in parts) and all(
        isinstance(r, list) and len(r) == 2 and isinstance(r[0], str)
        and isinstance(r[1], (int, dict)) for r in rows
    )  # fmt: skip
    if not ok or not isinstance(split.get("root", ""), str):
        raise CheckpointError(
            f"CheckpointError: {path}: 'train' and 'val' must be lists of [path, label] pairs "
            "and 'root' a string. Restore the file from a backup, or pass DATA to "
            "evaluate on a folder or a labels CSV instead."
        )
    return split


def split_samples(split: dict[str, Any], part: str, root: Path) -> list[Sample]:
    """The samples of ``part`` (``train`` or ``val``) of a ``split.json``, under ``root``."""
    return [Sample(root / p, t if isinstance(t, dict) else int(t)) for p, t in split[part]]


def run_samples(run: LoadedRun, part: str) -> list[Sample]:
    """The labelled images of the run's own ``train`` or ``val`` split, where it recorded
    them (``split.json``; [] without one)."""
    split = read_split(run)
    return split_samples(split, part, Path(split.get("root", ""))) if split.get(part) else []


def eval_samples(
    run: LoadedRun,
    data: str | Path | None,
    images_root: str | Path | None = None,
    progress: bool = False,
) -> tuple[list[Sample], list[tuple[Path, str]], str]:
    """Which labelled images to evaluate on, and a description of where they came from
    (``progress``: a bar while a new folder's or CSV's audit runs long).

    ``data`` None, or the folder the run split at training time: the run's own validation
    split. A file: a labels CSV, paths relative to ``images_root`` (default: its folder); its
    test rows alone when its split column names some.
    A folder: ``data/val`` (else ``data/test``) when it has train/ beside it, else every image
    under it, in class subfolders named as the model's classes (a single-task model's).
    """
    split = read_split(run)
    own = Path(split.get("root", "")) if split else None
    if data is not None and Path(data).is_dir():
        data = unwrapped(Path(data))[0]
    if data is None or (split.get("layout") == "split" and own == Path(data).resolve()):
        if not split:
            raise FileNotFoundError(
                f"{run.run_dir / 'split.json'} is missing; pass the data folder to evaluate on."
            )
        root = own if data is None else Path(data)
        source = f"{root} (the run's held-out validation split)"
        return split_samples(split, "val", root), [], source
    data = Path(data)
    if not data.exists():
        raise DataError(
            f"DataError: {data} does not exist. Pass a folder of class subfolders or a labels CSV."
        )
    subjects: dict[Path, str] = {}  # --group's column, where the CSV has it
    if data.is_file():
        column = split.get("group") if split.get("group") != NEAR_DUPLICATES else None
        table = read_labels_csv(data, images_root, known=run.tasks, group=column,
                                group_optional=True, progress=progress)  # fmt: skip
        subjects = dict(zip((s.path for s in table.samples), table.groups))
        samples, skipped, source = table.samples, table.skipped, str(data)
        if "test" in table.parts:  # the CSV's own split names a test set: that is the one
            samples = [s for s, p in zip(samples, table.parts) if p == "test"]
            source += " (its test rows)"
    elif len(run.tasks) > 1:
        raise DataError(
            f"DataError: {data} is a folder, and this model has tasks {', '.join(run.tasks)}; "
            "class subfolders label one task. Pass a labels CSV with a column per task."
        )
    else:
        held = find_val_dir(data) or find_test_dir(data)
        target = held if (data / "train").is_dir() and held is not None else data
        scan = scan_folder(target, classes=next(iter(run.tasks.values())), progress=progress)
        samples, skipped, source = scan.samples, scan.skipped, str(target)
    train = split_samples(split, "train", own) if own and split.get("train") else []
    trained = {s.path.resolve() for s in train}
    unseen = [s for s in samples if s.path.resolve() not in trained]
    if samples and not unseen:
        raise DataError(
            f"DataError: every image in {data} is one {run.run_dir} trained on, so its accuracy "
            "there says nothing of new images. Evaluate on held-out images (without DATA: the "
            "run's own validation split)."
        )
    if len(unseen) < len(samples):
        source += f" ({len(samples) - len(unseen):,} images the run trained on left out)"
    if subjects:
        seen = {g for g in (split.get("groups") or {}).values() if is_subject(g)}
        shared = sum(subjects.get(s.path) in seen for s in unseen)
        if shared:
            source += (
                f"; warning: {shared:,} of them share a --group {split['group']} group with "
                "training images, so they are not unseen subjects"
            )
    return unseen, skipped, source
