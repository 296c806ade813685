"""Splits that keep a group's images together: ``--group COLUMN`` of a labels CSV.

Medical and scientific datasets often hold several images of one subject: HAM10000 has up to
six photos of a lesion (``lesion_id``), NIH ChestX-ray several radiographs of a patient
(``Patient ID``), a production line several shots of one part. Split image by image, a
subject lands on both sides, and validation measures recognising the subject, not the class:
the figure flatters the model. With ``--group``, every image of a group is held out together
(scikit-learn's ``StratifiedGroupKFold``: class proportions kept as far as the groups allow),
and cross-validation folds (``headstart cv``) do the same. ``--group near-duplicates`` groups
look-alike images instead, for data with no such column (:mod:`headstart.data.near_duplicates`).
"""

from __future__ import annotations

import shlex
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headstart.data.near_duplicates import NEAR_DUPLICATES, near_duplicate_groups
from headstart.errors import DataError

if TYPE_CHECKING:
    from headstart.cache import Cache
    from headstart.data.split import DataSplit


def check_group_column(
    group: str | None,
    header: Sequence[str],
    image_col: str,
    split_col: str | None,
    csv: Path,
    optional: bool = False,
) -> bool:
    """Whether ``group`` names a column of the CSV to read groups from: a DataError unless it
    is a column other than the image and split columns (``optional``: a missing one is
    False, not an error)."""
    if group is None or (optional and group not in header):
        return False
    if group not in header:
        raise DataError(
            f"DataError: --group {group}: no such column in {csv}. Columns there: "
            f"{', '.join(header)}."
        )
    if group in (image_col, split_col):
        raise DataError(
            f"DataError: --group {group} is {csv}'s {'image' if group == image_col else 'split'} "
            "column; name the column that says which images belong together (a patient or "
            "lesion id)."
        )
    return True


def group_hints(
    kinds: Mapping[str, str], tasks: Sequence[str], rows: Sequence[dict[str, str]]
) -> list[str]:
    """A note for each identifier column (``kinds``: :func:`~headstart.data.columns.column_kinds`)
    that is not a task and whose values repeat: a subject id, what ``--group`` is for.

    >>> rows = [{"lesion": f"L{i // 2}", "dx": "ab"[i % 2]} for i in range(200)]
    >>> group_hints({"lesion": "id", "dx": "label"}, ["dx"], rows)[0][:41]
    'note: column lesion repeats its values (1'
    """
    notes = []
    for c, kind in kinds.items():
        if c in tasks or kind != "id":
            continue
        counts = Counter(v for r in rows if (v := (r.get(c) or "").strip()))
        if len(counts) < counts.total():
            notes.append(
                f"note: column {c} repeats its values ({len(counts):,} values for "
                f"{counts.total():,} rows; up to {max(counts.values())} rows share one). If the "
                "rows of one value show one subject (a patient, a lesion, a part), pass --group "
                f"{shlex.quote(c)}: split image by image, a subject on both sides makes "
                "validation flatter the model"
            )
    return notes


_BLANK = "<line "  # group_of's mark for a blank cell


def group_of(cell: str | None, line: int) -> str:
    """The group a CSV row's ``--group`` cell names; a blank cell is a group of its own row.

    >>> group_of(" P7 ", 3), group_of("", 4)
    ('P7', '<line 4>')
    """
    return (cell or "").strip() or f"{_BLANK}{line}>"


def is_subject(group: str) -> bool:
    """Whether ``group`` names a subject a cell gave (not a blank cell's row of its own).

    >>> is_subject("P7"), is_subject(group_of("", 4))
    (True, False)
    """
    return not group.startswith(_BLANK)


def group_codes(groups: Sequence[str]) -> list[int]:
    """Each group as an integer, in order of first appearance.

    >>> group_codes(["P7", "P2", "P7"])
    [0, 1, 0]
    """
    codes: dict[str, int] = {}
    return [codes.setdefault(g, len(codes)) for g in groups]


def grouped_holdout(
    strata: Sequence[str], groups: Sequence[str], val_fraction: float, seed: int
) -> np.ndarray:
    """Which of the samples train (a boolean mask): whole groups are held out, about
    ``val_fraction`` of the images (one fold of ``round(1 / val_fraction)``; above a half,
    all folds but one of ``round(1 / (1 - val_fraction))``), stratified on ``strata`` as
    far as the groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups))
    k = max(2, round(1 / min(val_fraction, 1 - val_fraction)))
    if n_groups < k:
        raise DataError(
            f"DataError: --group leaves {n_groups} group(s), too few to hold out "
            f"{val_fraction:.0%} of them for validation. Pass a column with more groups, "
            "or drop --group."
        )
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class rarer than the folds: it is spread anyway
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        _, fold = next(folds.split(np.zeros(len(groups)), list(strata), list(groups)))
    held_out = np.zeros(len(groups), dtype=bool)
    held_out[fold] = True
    return ~held_out if val_fraction <= 0.5 else held_out


def group_summary(column: str, train: Sequence[str], val: Sequence[str]) -> str:
    """The note that says how a grouped split came out.

    >>> for part in group_summary("lesion", ["a", "a", "b"], ["c"]).split("; "):
    ...     print(part)
    note: split by --group lesion: 3 groups (1 of 2+ images)
    validation holds 1 image(s) of 1 group(s) (25%)
    """
    sizes = Counter([*train, *val])
    multi = sum(n > 1 for n in sizes.values())
    share = len(val) / max(1, len(train) + len(val))
    return (
        f"note: split by --group {column}: {len(sizes):,} groups ({multi:,} of 2+ images); "
        f"validation holds {len(val):,} image(s) of {len(set(val)):,} group(s) ({share:.0%})"
    )


def crossing(column: str, train: Sequence[str], held: Mapping[str, Sequence[str]]) -> list[str]:
    """A warning for each held-out part of a given split (val/ and test/ folders, a CSV's
    split column) that shares a group with the training part.

    >>> crossing("patient", ["P1", "P2"], {"val": ["P3"], "test": ["P2"]})[0][:60]
    'warning: the given split puts 1 --group patient group(s) in '
    """
    out = []
    for part, groups in held.items():
        both = set(train) & set(groups)
        if both:
            shown = ", ".join(sorted(both)[:3]) + (", ..." if len(both) > 3 else "")
            out.append(
                f"warning: the given split puts {len(both):,} --group {column} group(s) in "
                f"train and {part} ({shown}): their {part} images are not unseen subjects"
            )
    return out


def by_near_duplicates(
    split: DataSplit, val_fraction: float, seed: int, cache: Cache | None, progress: bool = False
) -> DataSplit:
    """``split`` with its images grouped by near-duplicates: a split it drew is drawn again
    by whole groups; a given one (train/ and val/ folders) is kept, and warned of where it
    cuts a group."""
    samples = [*split.train, *split.val]
    names = near_duplicate_groups([s.path for s in samples], cache, progress)
    groups = dict(zip((s.path for s in samples), names))
    if split.layout != "split":
        split.notes += crossing(
            NEAR_DUPLICATES, names[: len(split.train)], {"val": names[len(split.train) :]}
        )
        return replace(split, groups=groups, group_by=NEAR_DUPLICATES)
    mask = grouped_holdout([str(s.target) for s in samples], names, val_fraction, seed)
    train = sorted((s for s, m in zip(samples, mask) if m), key=lambda s: str(s.path))
    val = sorted((s for s, m in zip(samples, mask) if not m), key=lambda s: str(s.path))
    notes = [*split.notes, group_summary(NEAR_DUPLICATES, [groups[s.path] for s in train],
                                         [groups[s.path] for s in val])]  # fmt: skip
    return replace(
        split, train=train, val=val, groups=groups, notes=notes, group_by=NEAR_DUPLICATES
    )
