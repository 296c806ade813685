"""Train/validation splits: given by train/ and val/ folders, or stratified and seeded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from headstart.cache import Cache
from headstart.data.scan import FolderScan, Sample, scan_folder
from headstart.data.table import DEFAULT_TASK, MISSING, read_labels_csv, strata
from headstart.errors import DataError

VAL_DIR_NAMES = ("val", "valid", "validation")


@dataclass
class DataSplit:
    """Training and validation samples, their tasks and classes, and what the scan skipped.

    Folder data has one task, ``class``; a labels CSV has one task per chosen column, and each
    sample's target is then a dict of class indices per task (``MISSING`` where blank).
    """

    root: Path
    layout: Literal["train/val folders", "split", "labels CSV", "fold"]
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    val_fraction: float | None = None
    seed: int | None = None
    tasks: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tasks:
            self.tasks = {DEFAULT_TASK: self.classes}

    @property
    def multitask(self) -> bool:
        """True when targets are dicts per task (a labels CSV)."""
        return self.layout == "labels CSV"

    def labels(self, samples: list[Sample], task: str) -> list[int]:
        """The class index of ``task`` for each sample (``MISSING`` where blank)."""
        return [s.target[task] if isinstance(s.target, dict) else s.target for s in samples]

    def summary(self) -> str:
        """Human-readable class counts per task and split, and every skipped file."""
        if self.multitask:
            head = f"data: {self.root} ({self.layout}), tasks: " + ", ".join(
                f"{t} ({len(c)} classes)" for t, c in self.tasks.items()
            )
        else:
            head = f"data: {self.root} ({self.layout}), {len(self.classes)} classes"
        lines = [head]
        for task, classes in self.tasks.items():
            tr, va = self.labels(self.train, task), self.labels(self.val, task)
            names = [*classes, "(no label)"] if MISSING in tr + va else classes
            for i, c in enumerate(names):
                i = MISSING if i == len(classes) else i
                label = f"{task}: {c}" if self.multitask else c
                lines.append(f"  {label:<20} train {tr.count(i):>5}  val {va.count(i):>5}")
        lines.append(f"  {'total':<20} train {len(self.train):>5}  val {len(self.val):>5}")
        for path, reason in self.skipped:
            lines.append(f"  skipped {_rel(path, self.root)}: {reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON form saved as ``split.json`` in the run folder (paths relative to root)."""
        return {
            "root": str(self.root.resolve()),
            "layout": self.layout,
            "classes": self.classes,
            "tasks": self.tasks,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "train": [[_rel(s.path, self.root), s.target] for s in self.train],
            "val": [[_rel(s.path, self.root), s.target] for s in self.val],
            "skipped": [[_rel(p, self.root), r] for p, r in self.skipped],
        }

    def save(self, path: Path) -> None:
        """Write :meth:`to_dict` as JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=1))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def find_val_dir(root: Path) -> Path | None:
    """The validation subfolder of a train/val layout, if ``root`` has one."""
    for name in VAL_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    return None


def load_split(
    root: str | Path, val_fraction: float = 0.2, seed: int = 0, cache: Cache | None = None
) -> DataSplit:
    """Scan ``root`` and return its split (``cache`` remembers each file's audit).

    ``root/train`` + ``root/val`` are used as given; otherwise ``root/<class>/`` is split
    stratified by class with ``val_fraction`` held out, reproducibly for a given ``seed``.
    """
    root = Path(root)
    val_dir = find_val_dir(root)
    if (root / "train").is_dir() and val_dir is not None:
        train = scan_folder(root / "train", cache=cache)
        _check_classes(train)
        val = scan_folder(val_dir, classes=train.classes, cache=cache)
        return DataSplit(
            root,
            "train/val folders",
            train.classes,
            train.samples,
            val.samples,
            train.skipped + val.skipped,
        )
    if (root / "train").is_dir():
        raise DataError(
            f"DataError: {root} has a train/ folder but no val/ folder. Add val/ (same class "
            f"subfolders), or point at {root / 'train'} to split it with --val-fraction."
        )
    scan = scan_folder(root, cache=cache)
    _check_classes(scan)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"DataError: --val-fraction must be between 0 and 1, got {val_fraction}.")
    train, val = stratified_split(scan, val_fraction, seed)
    return DataSplit(root, "split", scan.classes, train, val, scan.skipped, val_fraction, seed)


def load_table_split(
    csv_path: str | Path,
    images_root: str | Path | None = None,
    tasks: list[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    cache: Cache | None = None,
) -> DataSplit:
    """Read a labels CSV (see ``data.table``) and hold out ``val_fraction``, stratified on
    the combination of task labels, reproducibly for a given ``seed``."""
    from sklearn.model_selection import train_test_split

    table = read_labels_csv(csv_path, images_root, tasks, cache)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"DataError: --val-fraction must be between 0 and 1, got {val_fraction}.")
    if len(table.samples) < 4:
        raise DataError(f"DataError: {csv_path} has {len(table.samples)} usable rows; too few.")
    n_val = max(1, round(len(table.samples) * val_fraction))
    n_train = len(table.samples) - n_val
    groups = strata(table.rows)
    if len(set(groups)) > min(n_val, n_train):  # too many combinations for so few images:
        groups = strata(table.rows, 1)  # stratify on the first column alone
    train, val = train_test_split(
        table.samples,
        test_size=n_val,
        random_state=seed,
        stratify=groups if len(set(groups)) <= min(n_val, n_train) else None,
    )
    return DataSplit(
        table.images_root,
        "labels CSV",
        next(iter(table.tasks.values())),
        sorted(train, key=lambda s: str(s.path)),
        sorted(val, key=lambda s: str(s.path)),
        table.skipped,
        val_fraction,
        seed,
        table.tasks,
    )


def _check_classes(scan: FolderScan) -> None:
    if len(scan.classes) < 2:
        raise DataError(
            f"DataError: {scan.root} has only one class ({', '.join(scan.classes)}). A classifier "
            "needs at least two class folders, e.g. ants/ and bees/."
        )


def stratified_split(
    scan: FolderScan, val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``val_fraction`` of each class (at least one image each), seeded."""
    from sklearn.model_selection import train_test_split

    counts = scan.counts()
    few = [c for c, n in counts.items() if n < 2]
    if few:
        raise DataError(
            f"DataError: class(es) {few} in {scan.root} have fewer than 2 usable images, so "
            "they cannot appear in both train and validation. Add images to them."
        )
    n_val = max(round(len(scan.samples) * val_fraction), len(scan.classes))
    if len(scan.samples) - n_val < len(scan.classes):
        raise DataError(
            f"DataError: {len(scan.samples)} images are too few to hold out {val_fraction:.0%} "
            "for validation and keep every class in training. Lower --val-fraction or add images."
        )
    train, val = train_test_split(
        scan.samples,
        test_size=n_val,
        random_state=seed,
        stratify=[s.target for s in scan.samples],
    )
    return sorted(train, key=lambda s: str(s.path)), sorted(val, key=lambda s: str(s.path))
