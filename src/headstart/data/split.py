"""Train/validation splits: given by train/ and val/ folders, or stratified and seeded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from headstart.cache import Cache
from headstart.data.scan import FolderScan, Sample, scan_folder
from headstart.errors import DataError

VAL_DIR_NAMES = ("val", "valid", "validation")


@dataclass
class DataSplit:
    """Training and validation samples over one class list, plus what the scan skipped."""

    root: Path
    layout: Literal["train/val folders", "split"]
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    val_fraction: float | None = None
    seed: int | None = None

    def summary(self) -> str:
        """Human-readable class counts per split and the skipped-file count."""
        lines = [f"data: {self.root} ({self.layout}), {len(self.classes)} classes"]
        for i, c in enumerate(self.classes):
            n_tr = sum(s.target == i for s in self.train)
            n_va = sum(s.target == i for s in self.val)
            lines.append(f"  {c:<20} train {n_tr:>5}  val {n_va:>5}")
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
