"""Train/validation splits: given by train/ and val/ folders, or stratified and seeded."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from headstart.cache import Cache, file_digest
from headstart.data.groups import (
    by_near_duplicates,
    crossing,
    group_codes,
    group_summary,
    grouped_holdout,
)
from headstart.data.near_duplicates import NEAR_DUPLICATES, near_duplicate_groups
from headstart.data.scan import FolderScan, Sample, data_folder, scan_folder, subfolders
from headstart.data.table import (
    DEFAULT_TASK,
    MISSING,
    LabelTable,
    read_labels_csv,
    strata,
    task_label,
)
from headstart.errors import DataError
from headstart.imaging import IMAGE_EXTENSIONS
from headstart.stats import wilson_interval
from headstart.text import display

VAL_DIR_NAMES = ("val", "valid", "validation")
TEST_DIR_NAMES = ("test", "testing")
SPLIT_DIR_NAMES = ("train", *VAL_DIR_NAMES, *TEST_DIR_NAMES)  # train/ alone is a layout
SUMMARY_CLASSES = 30  # more classes than this: the summary lists the 12 with fewest images
SMALL_VAL = 100  # a given val/ with fewer images, and ten times as many in train/, is warned of


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
    hidden: int = 0  # hidden files and folders ignored (dot-names, __MACOSX)
    notes: list[str] = field(default_factory=list)  # "warning: ..." / "note: ..." lines
    groups: dict[Path, str] = field(default_factory=dict)  # --group: each sample's group
    group_by: str | None = None  # --group's value: a column, or near-duplicates

    def __post_init__(self) -> None:
        if not self.tasks:
            self.tasks = {DEFAULT_TASK: self.classes}

    @property
    def multitask(self) -> bool:
        """True when targets are dicts per task (a labels CSV, or a fold of one)."""
        first = next(iter(self.train or self.val), None)
        return self.layout == "labels CSV" or (first is not None and isinstance(first.target, dict))

    def group_codes(self, part: str = "train") -> list[int] | None:
        """``--group``: the group of each sample of ``part`` as an integer (what folds over
        it keep together); None when the split has no groups."""
        if not self.groups:
            return None
        return group_codes([self.groups[s.path] for s in getattr(self, part)])

    def labels(self, samples: list[Sample], task: str) -> list[int]:
        """The class index of ``task`` for each sample (``MISSING`` where blank)."""
        return [task_label(s.target, task) for s in samples]

    def summary(self) -> str:
        """Human-readable class counts per task and split, and every skipped file."""
        if self.multitask:
            head = f"data: {self.root} ({self.layout}), tasks: " + ", ".join(
                f"{t} ({len(c)} classes)" for t, c in self.tasks.items()
            )
        else:
            head = f"data: {self.root} ({self.layout}), {len(self.classes)} classes"
        rows: list[tuple[str, int | str, int | str]] = []
        for task, classes in self.tasks.items():
            tr, va = Counter(self.labels(self.train, task)), Counter(self.labels(self.val, task))
            counts = [(c, tr[i], va[i]) for i, c in enumerate(classes)]
            if len(counts) > SUMMARY_CLASSES:
                counts = _fewest(counts)
            if MISSING in tr or MISSING in va:
                counts.append(("(no label)", tr[MISSING], va[MISSING]))
            rows += [(f"{task}: {c}" if self.multitask else c, t, v) for c, t, v in counts]
        rows.append(("total", len(self.train), len(self.val)))
        width = min(max(20, *(len(r[0]) for r in rows)), 40)  # long names widen the column
        lines = [head] + [f"  {name:<{width}} train {t:>5}  val {v:>5}" for name, t, v in rows]
        for path, reason in self.skipped:
            lines.append(f"  skipped {display(_rel(path, self.root))}: {reason}")
        if self.hidden:
            lines.append(
                f"  ignored {self.hidden} hidden file(s) and folder(s) (names starting with "
                "'.', __MACOSX)"
            )
        lines += [f"  {n}" for n in self.notes]
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
            "hidden": self.hidden,
            "notes": self.notes,
            **({"group": self.group_by, "groups": self._relative_groups()} if self.groups else {}),
        }

    def _relative_groups(self) -> dict[str, str]:
        """``--group``'s group of each image, by its path as ``to_dict`` writes it."""
        return {_rel(p, self.root): g for p, g in self.groups.items()}

    def save(self, path: Path) -> None:
        """Write :meth:`to_dict` as JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=1))


def _fewest(
    counts: list[tuple[str, int, int]], shown: int = 12
) -> list[tuple[str, int | str, int | str]]:
    """The ``shown`` classes with the fewest training images, then one row for the rest
    (their range of counts): a data summary of many classes that still fits a screen.

    >>> _fewest([("a", 5, 1), ("b", 2, 0), ("c", 9, 3)], shown=1)
    [('b', 2, 0), ('(2 more classes)', '5-9', '1-3')]
    """
    ordered = sorted(counts, key=lambda r: (r[1], r[2], r[0]))
    rest = ordered[shown:]
    span = [f"{min(col)}-{max(col)}" for col in ([r[1] for r in rest], [r[2] for r in rest])]
    return [*ordered[:shown], (f"({len(rest)} more classes)", span[0], span[1])]


def checked(split: DataSplit, cache: Cache | None) -> DataSplit:
    """``split`` with a warning for each validation image whose bytes equal a training
    image's (content digests, which the caches compute anyway): its accuracy is no test."""
    digest = cache.digest if cache is not None else file_digest
    seen = {digest(s.path): s.path for s in split.train}
    pairs = [(seen[d], s.path) for s in split.val if (d := digest(s.path)) in seen]
    if pairs:
        shown = "; ".join(
            f"{display(_rel(v, split.root))} = {display(_rel(t, split.root))}" for t, v in pairs[:3]
        )
        more = f" (+{len(pairs) - 3} more)" if len(pairs) > 3 else ""
        split.notes.append(
            f"warning: {len(pairs)} validation image(s) are exact copies of training images, "
            f"so validation overstates accuracy: {shown}{more}. Remove one copy of each."
        )
    return split


def grayscale_note(split: DataSplit, sample: int = 32) -> str | None:
    """A note when the training images (``sample`` of them, evenly spaced) are grayscale."""
    from headstart.imaging import is_grayscale

    step = max(1, len(split.train) // sample)
    picked = split.train[::step][:sample]
    grey = sum(is_grayscale(s.path) for s in picked)
    if picked and grey == len(picked):
        return (
            f"note: the images are grayscale ({grey} of {grey} sampled): colour carries nothing "
            "here, so colour jitter would only add noise; for cells, microscopy or textures "
            "try --augment texture"
        )
    return None


def white_level(split: DataSplit, sample: int = 256) -> tuple[int | None, str | None]:
    """The white level of the training images when they have more than 8 bits of grey
    (``sample`` of them, evenly spaced; see :func:`headstart.imaging.white_level_of`), with
    the note that says so; ``(None, None)`` for 8-bit images."""
    from headstart.imaging import deep_colour_of, white_level_of

    step = max(1, len(split.train) // sample)
    paths = [s.path for s in split.train[::step][:sample]]
    found = white_level_of(paths)
    if found is None:
        deep = deep_colour_of(paths)
        if deep is None:
            return None, None
        count, top = deep
        dark = top < 64  # a 10-14-bit camera's values in 16 bits: the top 8 bits are dim
        return None, (
            f"{'warning' if dark else 'note'}: {count} of {len(paths)} sampled images are "
            f"colour images of 16 bits a channel (TIFF or PNG), read at 8 bits (the top 8 "
            f"of each channel; the brightest reads {top} of 255)"
            + (
                ": they will look nearly black. Convert them to 8 bits a channel, scaled by "
                "the camera's white, or to 16-bit grey, which headstart reads at its depth"
                if dark
                else ""
            )
        )
    level, brightest, kind = found
    records = "the run records it, so evaluate, predict, export and serve read images the same way"
    if kind == "float":
        return level, (
            f"note: the images store grey as floating point, up to {brightest:.4g}: read with "
            f"{level:,} as white for every image (not each by its own maximum); {records}"
        )
    return level, (
        f"note: the images have more than 8 bits of grey, up to {brightest:,.0f} "
        f"({level.bit_length()} bits): read with {level:,} as white rather than 65,535, which "
        f"would keep {max(1, 256 * (level + 1) // 65536)} of 256 grey levels; {records}"
    )


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _small_val(root: Path, val_dir: Path, n_train: int, n_val: int) -> list[str]:
    """A warning when a given val/ folder is too small to choose by (a chest X-ray set ships
    16 validation images beside 5,216 training ones) while train/ could spare ten times more."""
    if not 0 < n_val < SMALL_VAL or n_val * 10 > n_train:
        return []
    low, high = wilson_interval(round(0.9 * n_val), n_val)
    test = find_test_dir(root)
    return [
        f"warning: {val_dir.name}/ holds only {n_val} images, against {n_train:,} in train/: "
        f"the best epoch and head are chosen on them, and 90% measured on {n_val} images means "
        f"anywhere from {low:.0%} to {high:.0%}. `headstart train {root / 'train'}` holds out "
        "part of train/ instead (--val-fraction)"
        + (f"; `headstart evaluate RUN {test}` then measures on {test.name}/" if test else "")
    ]


def unwrapped(root: Path) -> tuple[Path, str | None]:
    """The folder that holds the data when ``root`` only wraps it (an archive unpacked into a
    folder of its own name: ``chest_xray/chest_xray/train``), and a note saying so; ``root``
    itself otherwise. A wrapper holds no image and one visible folder, not named as a split
    (train/ alone is a layout), which holds folders."""
    inner = root
    for _ in range(3):
        if not inner.is_dir():
            break
        dirs, hidden = subfolders(inner)
        loose = {e for e in inner.iterdir() if e.suffix.lower() in IMAGE_EXTENSIONS} - set(hidden)
        if len(dirs) != 1 or loose or dirs[0].name.lower() in SPLIT_DIR_NAMES:
            break
        if not subfolders(dirs[0])[0]:  # one folder of images: a one-class dataset, not a wrapper
            break
        inner = dirs[0]
    if inner == root:
        return root, None
    return inner, f"note: {root} only wraps {inner}: reading the data there"


def find_val_dir(root: Path) -> Path | None:
    """The validation subfolder of a train/val layout, if ``root`` has one."""
    for name in VAL_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    return None


def find_test_dir(root: Path) -> Path | None:
    """The test subfolder beside ``root/train``, if ``root`` has one."""
    return next((root / n for n in TEST_DIR_NAMES if (root / n).is_dir()), None)


def load_split(
    root: str | Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    cache: Cache | None = None,
    group: str | None = None,
    progress: bool = False,
) -> DataSplit:
    """Scan ``root`` and return its split (``cache`` remembers each file's audit;
    ``progress`` shows a bar while the audit or the hashing runs long).

    ``root/train`` + ``root/val`` are used as given; ``root/train`` alone (beside a test/
    folder, say) is split; otherwise ``root/<class>/`` is split stratified by class with
    ``val_fraction`` held out, reproducibly for a given ``seed``. ``group`` ``near-duplicates``
    holds out clusters of near-duplicate images whole (a given split: warns of those it cuts).
    """
    root, wrapper_note = unwrapped(data_folder(root))
    split = _load_split(root, val_fraction, seed, cache, progress)
    if group == NEAR_DUPLICATES:  # before the copies are checked: the split may change
        split = by_near_duplicates(split, val_fraction, seed, cache, progress)
    split.notes += [wrapper_note] if wrapper_note else []
    return checked(split, cache)


def _load_split(
    root: Path, val_fraction: float, seed: int, cache: Cache | None, progress: bool
) -> DataSplit:
    """:func:`load_split` of a folder that holds the data itself (copies not yet checked)."""
    val_dir = find_val_dir(root)
    if (root / "train").is_dir() and val_dir is not None:
        train = scan_folder(root / "train", cache=cache, progress=progress)
        _check_classes(train)
        val = scan_folder(
            val_dir, classes=train.classes, cache=cache, allow_empty=True, progress=progress
        )
        missing = [c for c, n in val.counts().items() if n == 0]
        notes = [
            f"warning: class {c!r} has no image in {val_dir.name}/, so its accuracy is not "
            f"measured; add some to {val_dir / c}"
            for c in missing
        ] + _small_val(root, val_dir, len(train.samples), len(val.samples))
        return DataSplit(
            root, "train/val folders", train.classes, train.samples, val.samples,
            train.skipped + val.skipped, hidden=len(train.hidden) + len(val.hidden), notes=notes,
        )  # fmt: skip
    if (root / "train").is_dir():  # train/ (and maybe test/) without val/: split train/
        split = _load_split(root / "train", val_fraction, seed, cache, progress)
        test = find_test_dir(root)
        split.notes.append(
            f"note: {root} has train/ but no val/ folder: {val_fraction:.0%} of train/ is held "
            "out for validation (--val-fraction)"
            + (f"; {test.name}/ is left alone: `headstart evaluate RUN {test}` measures on it"
               if test else "")
        )  # fmt: skip
        return split
    scan = scan_folder(root, cache=cache, progress=progress)
    _check_classes(scan)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"DataError: --val-fraction must be between 0 and 1, got {val_fraction}.")
    train, val = stratified_split(scan, val_fraction, seed)
    split = DataSplit(root, "split", scan.classes, train, val, scan.skipped, val_fraction, seed)
    split.hidden = len(scan.hidden)
    return split


def load_table_split(
    csv_path: str | Path,
    images_root: str | Path | None = None,
    tasks: list[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    cache: Cache | None = None,
    group: str | None = None,
    progress: bool = False,
) -> DataSplit:
    """Read a labels CSV (see ``data.table``) and hold out ``val_fraction``, stratified on
    the combination of task labels, reproducibly for a given ``seed``; with ``group`` (a
    column), whole groups are held out (:mod:`headstart.data.groups`). ``progress``: a bar
    while the audit or the hashing runs long."""
    from sklearn.model_selection import train_test_split

    column = None if group == NEAR_DUPLICATES else group
    table = read_labels_csv(csv_path, images_root, tasks, cache, group=column, progress=progress)
    if group == NEAR_DUPLICATES:
        paths = [s.path for s in table.samples]
        table.groups = near_duplicate_groups(paths, cache, progress)
    table.group_by = group
    notes = list(table.notes)
    if table.parts:
        if group:  # a published split that shares subjects between its parts is no test
            parts = {p: [g for g, q in zip(table.groups, table.parts) if q == p]
                     for p in ("train", "val", "test")}  # fmt: skip
            notes += crossing(group, parts.pop("train"), {p: g for p, g in parts.items() if g})
        table = _own_split(table, notes)
        if "val" in table.parts:
            split = _table_split(table, [p == "train" for p in table.parts], notes)
            split.notes += _unvalidated(split)
            return checked(split, cache)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"DataError: --val-fraction must be between 0 and 1, got {val_fraction}.")
    if len(table.samples) < 4:
        raise DataError(f"DataError: {csv_path} has {len(table.samples)} usable rows; too few.")
    kept = _rare_labels(table, notes)  # indices that must train: too rare to hold out
    if table.groups:  # and the rest of their groups with them
        trains = {table.groups[i] for i in kept}
        kept |= {i for i, g in enumerate(table.groups) if g in trains}
    rest = [i for i in range(len(table.samples)) if i not in kept]
    if group:
        split = _grouped_split(table, rest, kept, group, val_fraction, seed, notes)
        return checked(split, cache)
    n_val = max(1, round(len(rest) * val_fraction))
    n_train = len(rest) - n_val
    groups = strata([table.rows[i] for i in rest])
    if len(set(groups)) > min(n_val, n_train):  # too many combinations for so few images:
        groups = strata([table.rows[i] for i in rest], 1)  # stratify on the first column alone
    stratify = len(set(groups)) <= min(n_val, n_train)
    size = Counter(groups)
    if stratify and min(size.values()) < 2:  # a stratum of one image cannot be split: it trains
        kept |= {i for i, g in zip(rest, groups) if size[g] < 2}
        rest, groups = map(list, zip(*[(i, g) for i, g in zip(rest, groups) if size[g] >= 2]))
        n_val = max(1, round(len(rest) * val_fraction))
    train, _ = train_test_split(
        rest, test_size=n_val, random_state=seed, stratify=groups if stratify else None
    )
    trains = set(train) | kept
    split = _table_split(table, [i in trains for i in range(len(table.samples))], notes)
    split.val_fraction, split.seed = val_fraction, seed
    return checked(split, cache)


def _grouped_split(
    table: LabelTable,
    rest: list[int],
    kept: set[int],
    group: str,
    val_fraction: float,
    seed: int,
    notes: list[str],
) -> DataSplit:
    """``rest`` split by whole groups (``kept`` trains), stratified on the first task."""
    mask = grouped_holdout(
        strata([table.rows[i] for i in rest], 1),
        [table.groups[i] for i in rest],
        val_fraction,
        seed,
    )
    trains = {i for i, m in zip(rest, mask) if m} | kept
    split = _table_split(table, [i in trains for i in range(len(table.samples))], notes)
    sides = [[g for i, g in enumerate(table.groups) if (i in trains) == t] for t in (True, False)]
    split.notes.append(group_summary(group, *sides))
    split.val_fraction, split.seed = val_fraction, seed
    return split


def _table_split(table: LabelTable, is_train: list[bool], notes: list[str]) -> DataSplit:
    """The table's samples as training (where ``is_train``) and validation, in path order."""
    train = [s for s, t in zip(table.samples, is_train) if t]
    val = [s for s, t in zip(table.samples, is_train) if not t]
    return DataSplit(
        table.images_root,
        "labels CSV",
        next(iter(table.tasks.values())),
        sorted(train, key=lambda s: str(s.path)),
        sorted(val, key=lambda s: str(s.path)),
        table.skipped,
        tasks=table.tasks,
        notes=notes,
        groups=dict(zip((s.path for s in table.samples), table.groups)),
        group_by=table.group_by,
    )


def _unvalidated(split: DataSplit) -> list[str]:
    """A warning for each class that a given split validates on no image."""
    held = {task: set(split.labels(split.val, task)) for task in split.tasks}
    return [
        f"warning: class {c!r} of task {task!r} has no val row in the CSV's split, so its "
        "accuracy is not measured"
        for task, classes in split.tasks.items()
        for i, c in enumerate(classes)
        if i not in held[task]
    ]


def _own_split(table: LabelTable, notes: list[str]) -> LabelTable:
    """The table without its test rows, noting what the CSV's split column holds: its train
    and val rows are used as given (when it names val rows; else train rows are split)."""
    counts = Counter(table.parts)
    if not counts["train"]:
        raise DataError(
            f"DataError: {table.csv}'s split column names no training row (it holds "
            f"{dict(counts)}). Mark the rows to train on as train."
        )
    notes.append(
        f"note: the CSV's split column: {counts['train']} train, {counts['val']} val, "
        f"{counts['test']} test rows"
        + ("" if counts["val"] else "; train rows are split for validation (--val-fraction)")
        + ("; test rows are left out: `headstart evaluate RUN CSV` measures on them"
           if counts["test"] else "")
    )  # fmt: skip
    keep = [i for i, p in enumerate(table.parts) if p != "test"]
    return replace(
        table,
        samples=[table.samples[i] for i in keep],
        rows=[table.rows[i] for i in keep],
        parts=[table.parts[i] for i in keep],
        groups=[table.groups[i] for i in keep] if table.groups else [],
    )


def _rare_labels(table: LabelTable, notes: list[str]) -> set[int]:
    """Rows holding a class that labels fewer than two rows of its task: they cannot be in
    both training and validation, so they train, and a note says so."""
    kept: set[int] = set()
    for task, classes in table.tasks.items():
        labels = [s.target[task] for s in table.samples]  # type: ignore[index]
        counts = Counter(c for c in labels if c != MISSING)
        rare = sorted(c for c, n in counts.items() if n < 2)
        kept |= {i for i, label in enumerate(labels) if label in rare}
        if rare:
            names = ", ".join(repr(classes[c]) for c in rare[:5]) + (", ..." if rare[5:] else "")
            notes.append(
                f"note: {'class' if len(rare) == 1 else f'{len(rare)} classes'} {names} of task "
                f"{task!r} label{'s' if len(rare) == 1 else ''} only 1 image; kept for training, "
                "so their validation accuracy is not measured. Add images."
            )
    return kept


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
