"""Which column of a labels CSV names the images, and which columns are tasks.

CSVs come as their sources wrote them: ``image,label`` from a script, HAM10000's
``lesion_id,image_id,dx,...`` with ids and no file extension, a spreadsheet saved with
semicolons. The image column is the one whose header is a usual name for it (``image``,
``path``, ``image_id``, ...) or, failing that, the one whose cells name image files under
the images root; a cell may leave out the file's extension (``ISIC_0024306`` for
``ISIC_0024306.jpg``). A ``split`` column (``subset``, ``partition``, fastai's ``is_valid``)
holds the dataset's own train/val/test split and is never a task. Without ``--tasks``, every
other column is a task except those that cannot be one: an identifier (``lesion_id``,
``Patient ID``) or a measurement (an age, an image width) leaves most classes with a few
images, and a column with one value throughout has nothing to learn, so they are left out
while another column remains.
Columns that hold one task one-hot, as challenge files do (ISIC's ``image,MEL,NV,BCC,...``
of 0s and 1s, one 1 per row), are read as that one task, its classes named by the columns.
A column whose cells list several labels joined by ``|`` (NIH ChestX-ray14's
``Atelectasis|Effusion``) is multi-label: it becomes one yes/no task per label.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from headstart.data.scan import is_hidden
from headstart.errors import DataError
from headstart.imaging import IMAGE_EXTENSIONS

IMAGE_COLUMNS = (
    "image",
    "path",
    "file",
    "filename",
    "file_name",
    "filepath",
    "file_path",
    "image_path",
    "image_id",
    "image_name",
    "img",
)
SPLIT_COLUMNS = ("split", "subset", "partition", "is_valid")  # the dataset's own split
PARTS = {  # a split cell, lower-cased -> the part of the data its row belongs to
    **dict.fromkeys(("train", "training", "false", "0"), "train"),
    **dict.fromkeys(("val", "valid", "validation", "dev", "true", "1"), "val"),
    **dict.fromkeys(("test", "testing"), "test"),
}
SAMPLE = 20  # cells per column read to recognise the image column by its content
_SUFFIXES = sorted(IMAGE_EXTENSIONS) + sorted(e.upper() for e in IMAGE_EXTENSIONS)


def resolve_image(root: Path, cell: str) -> Path | None:
    """The file a CSV cell names under ``root``: the path itself (with ``\\`` read as ``/``
    when the CSV was written on Windows) or, when the cell has no image extension (an id),
    the path with the first image extension that exists.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "a.png").write_bytes(b"")
    >>> resolve_image(d, "a").name, resolve_image(d, "a.png").name, resolve_image(d, "b")
    ('a.png', 'a.png', None)
    """
    path = root / cell
    if path.is_file():
        return path
    if "\\" in cell and "/" not in cell:  # a CSV written on Windows: images\cell0001.png
        return resolve_image(root, cell.replace("\\", "/"))
    if Path(cell).suffix.lower() in IMAGE_EXTENSIONS:
        return None
    return next((p for s in _SUFFIXES if (p := root / f"{cell}{s}").is_file()), None)


class ImageFinder:
    """:func:`resolve_image`, then, for a bare file name or id that is not at the root, the
    one image of that name (or stem) anywhere under it: datasets that spread their images
    over several folders (HAM10000's part_1 and part_2, NIH ChestX-ray's images_001 to 012)
    name them by file alone. A name found in two folders stays unresolved."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.found_below: set[Path] = set()  # images resolved by the search below the root
        self._index: dict[str, Path | None] | None = None

    def __call__(self, cell: str) -> Path | None:
        path = resolve_image(self.root, cell)
        if path is not None or "/" in cell or "\\" in cell:
            return path
        path = self.index().get(cell)
        if path is not None:
            self.found_below.add(path)
        return path

    def index(self) -> dict[str, Path | None]:
        """Every image below the root by name and by stem (None where two share it),
        hidden files and folders left out as the folder scan leaves them."""
        if self._index is None:
            self._index = {}
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if not is_hidden(d))
                for name in files:
                    if not is_hidden(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                        path = Path(folder) / name
                        for key in {name, Path(name).stem}:
                            self._index[key] = None if key in self._index else path
        return self._index


def named_image_column(header: Sequence[str]) -> str | None:
    """The header cell that is a usual name for the image column (any case), if one is.

    >>> named_image_column(["lesion_id", "Image_ID", "dx"]), named_image_column(["a", "b"])
    ('Image_ID', None)
    """
    return next((h for h in header if h.strip().lower() in IMAGE_COLUMNS), None)


def delimiter(text: str) -> str:
    """The CSV's separator: the one of comma, semicolon (spreadsheets in locales with a
    decimal comma) and tab whose split of the header names an image column; else the one
    :class:`csv.Sniffer` finds in the first lines; else a space where the first line has one
    (list files such as ``images/a.jpg 3``); else comma.

    >>> delimiter("file;grade\\ncell 1,2.png;good\\n"), delimiter("id\\tgrade\\na\\tgood\\n")
    (';', '\\t')
    >>> delimiter("images/a.jpg 3\\nimages/b.jpg 1\\n")
    ' '
    """
    header = text.partition("\n")[0].rstrip("\r")
    for sep in (",", ";", "\t"):
        if named_image_column(next(csv.reader([header], delimiter=sep))) is not None:
            return sep
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=",;\t").delimiter
    except csv.Error:
        return " " if " " in header.strip() else ","


def headerless(header: Sequence[str], find: ImageFinder) -> list[str] | None:
    """Column names for a file whose first row is data, not a header (a cell of it names an
    image and none is a usual image column name): ``image`` there, and ``class`` for a
    single other column, else ``column2``, ``column3``, ... by position. None for a header.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "a.png").write_bytes(b"")
    >>> headerless(["a.png", "3"], ImageFinder(d)), headerless(["image", "grade"], ImageFinder(d))
    (['image', 'class'], None)
    """
    if named_image_column(header) is not None:
        return None
    at = next((i for i, h in enumerate(header) if h.strip() and find(h.strip())), None)
    if at is None:
        return None
    if len(header) == 2:
        return ["image" if i == at else "class" for i in range(2)]
    return ["image" if i == at else f"column{i + 1}" for i in range(len(header))]


def image_column(
    header: Sequence[str], rows: Sequence[dict[str, str]], find: ImageFinder, csv_path: Path
) -> tuple[str, str | None]:
    """The image column, and a note when it was recognised by its cells (as ``find``
    resolves them) rather than its name.

    Raises :class:`DataError` naming the header when no column (or more than one) qualifies.
    """
    named = named_image_column(header)
    if named is not None:
        return named, None
    found, root = [], find.root
    for h in header:
        cells = [c for r in rows if (c := (r.get(h) or "").strip())][:SAMPLE]
        if cells and all(find(c) for c in cells):
            found.append(h)
    if len(found) == 1:
        return found[0], f"note: image column {found[0]!r}: its cells name images under {root}"
    if found:
        raise DataError(
            f"DataError: {csv_path}: columns {', '.join(map(repr, found))} all name images under "
            f"{root}; name the one to learn from 'image'."
        )
    raise DataError(
        f"DataError: {csv_path} has no image column. Its header is {list(header)}, and no "
        f"column's cells name images under {root}. Name the column of image paths one of "
        f"{', '.join(IMAGE_COLUMNS)}, or pass --images-root DIR (the folder the paths are "
        "relative to)."
    )


def split_column(columns: Sequence[str]) -> str | None:
    """The column holding the dataset's own train/val/test split, if the CSV has one
    (``split``, ``subset``, ``partition``, or fastai's ``is_valid``)."""
    return next((c for c in columns if c.lower() in SPLIT_COLUMNS), None)


def part_of(cell: str, column: str, line: int, csv_path: Path) -> str:
    """``train``, ``val`` or ``test`` for a split column's cell (``is_valid``: true is val).

    >>> part_of("Validation", "split", 2, Path("t.csv")), part_of("False", "is_valid", 2, Path(""))
    ('val', 'train')
    """
    part = PARTS.get(cell.strip().lower())
    if part is None:
        raise DataError(
            f"DataError: {csv_path} line {line}: {column!r} is {cell!r}; the split column's "
            "cells must be train, val (valid, validation, dev) or test (is_valid: true or "
            "false)."
        )
    return part


MANY = 50  # more distinct values than this, and a fifth of the rows, or numbers: not a task


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# Words of a header that names subjects (``Patient ID``, ``lesion_id``, ``subjectId``), unless
# another word says the column is a label (``class_id``, ``label_id``).
_ID_WORDS = {"id", "uid", "uuid", "patient", "subject", "participant", "lesion", "specimen"}
_LABEL_WORDS = {"class", "label", "category", "target", "grade", "type", "diagnosis", "dx"}
FEW = 5  # an identifier by name repeats its values fewer times than this on average


def named_like_id(column: str) -> bool:
    """Whether a header's words name an identifier (camelCase and any separator split them).

    >>> [named_like_id(c) for c in ("Patient ID", "lesion_id", "subjectId", "class_id", "grid")]
    [True, True, True, False, False]
    """
    words = {w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", column)}
    return bool(words & _ID_WORDS) and not words & _LABEL_WORDS


def column_kinds(columns: Sequence[str], rows: Sequence[dict[str, str]]) -> dict[str, str]:
    """What each column holds: ``id`` (more distinct values than half the labelled rows, or
    than :data:`MANY` and a fifth of them: NIH's Patient ID; or a header that names an
    identifier, :func:`named_like_id`, whose values repeat fewer than :data:`FEW` times on
    average: 32 patients in 80 rows), ``measure`` (numbers with more than :data:`MANY`
    distinct values: an age, a width), ``one`` (one value throughout) or ``label`` (classes a
    task could learn).

    >>> rows = [{"id": str(i), "grade": "ab"[i % 2], "site": "x"} for i in range(6)]
    >>> column_kinds(["id", "grade", "site"], rows)
    {'id': 'id', 'grade': 'label', 'site': 'one'}
    >>> rows = [{"Patient ID": f"P{i % 32}", "Site ID": f"S{i % 3}"} for i in range(80)]
    >>> column_kinds(["Patient ID", "Site ID"], rows)
    {'Patient ID': 'id', 'Site ID': 'label'}
    """
    kinds = {}
    for c in columns:
        values = [v for r in rows if (v := (r.get(c) or "").strip())]
        distinct = set(values)
        few = len(distinct) > 2 and len(values) < FEW * len(distinct) and named_like_id(c)
        if few or len(distinct) > len(values) / 2 or len(distinct) > max(MANY, len(values) / 5):
            kinds[c] = "id"
        elif len(distinct) > MANY and all(_number(v) for v in distinct):
            kinds[c] = "measure"
        else:
            kinds[c] = "one" if len(distinct) < 2 else "label"
    return kinds


def default_tasks(
    columns: Sequence[str],
    rows: Sequence[dict[str, str]],
    kinds: Mapping[str, str] | None = None,
) -> tuple[list[str], str | None]:
    """Task columns when ``--tasks`` names none: every ``label`` column of
    :func:`column_kinds` (not identifiers, measurements, or columns with one value
    throughout), unless that leaves none; a note names what was left out. ``kinds``:
    :func:`column_kinds` of these columns, when the caller has it already.

    >>> rows = [{"id": str(i), "grade": "ab"[i % 2], "site": "x"} for i in range(6)]
    >>> default_tasks(["id", "grade", "site"], rows)[0]
    ['grade']
    """
    kinds = kinds if kinds is not None else column_kinds(columns, rows)
    tasks = [c for c in columns if kinds[c] == "label"]
    if not tasks:  # small tables: a few rows may hold as many classes; keep them all
        return list(columns), None
    left = [
        f"{', '.join(cs)} ({why})"
        for kind, why in (
            ("id", "more distinct values than a task could learn: an identifier"),
            ("measure", f"numbers with over {MANY} distinct values: a measurement"),
            ("one", "one value throughout"),
        )
        if (cs := [c for c in columns if kinds[c] == kind])
    ]
    note = f"note: column(s) {'; '.join(left)} left out of the tasks; --tasks picks columns"
    return tasks, note if left else None


def _bit(cell: str | None) -> int | None:
    """0 or 1 for a one-hot cell (``1``, ``0.0``; blank is 0), None for anything else."""
    cell = (cell or "").strip()
    if not cell:
        return 0
    try:
        value = float(cell)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def one_hot(columns: Sequence[str], rows: Sequence[dict[str, str]]) -> list[str]:
    """The columns that encode one task one-hot: at least two columns of 0/1 cells with
    exactly one 1 in every row that fills any of them (a row of blanks has no label); an
    empty list when the columns are not that (a row of all 0s or of two 1s is several
    yes/no tasks, as in multi-label files, and stays so).

    >>> rows = [{"MEL": "1.0", "NV": "0.0", "age": "40"}, {"MEL": "0", "NV": "1", "age": "50"}]
    >>> one_hot(["MEL", "NV", "age"], rows)
    ['MEL', 'NV']
    >>> one_hot(["MEL", "NV"], [*rows, {"MEL": "0", "NV": "0"}])
    []
    >>> one_hot(["mask", "comment"], [{"mask": "1", "comment": ""}] * 2)  # one class: no task
    []
    """
    bits = {c: [_bit(r.get(c)) for r in rows] for c in columns}
    group = [c for c, b in bits.items() if None not in b]
    if sum(1 in bits[c] for c in group) < 2:  # two classes at least
        return []
    for i, r in enumerate(rows):
        if any((r.get(c) or "").strip() for c in group) and sum(bits[c][i] for c in group) != 1:
            return []
    return group


def merge_one_hot(
    group: Sequence[str], columns: Sequence[str], rows: Sequence[dict[str, str]]
) -> tuple[list[str], list[dict[str, str]], str]:
    """One task column in place of the one-hot ``group`` (named ``class``, else ``label``):
    the columns and rows with it, and the note that says so."""
    name = "class" if "class" not in columns else "label"
    merged = [{**r, name: next((c for c in group if _bit(r.get(c)) == 1), "")} for r in rows]
    kept = [c for c in columns if c not in group] + [name]
    note = (
        f"note: columns {', '.join(group)} hold one task one-hot (one 1 per row): read as task "
        f"{name!r} with those classes (--tasks {group[0]} would learn one column as yes/no)"
    )
    return kept, merged, note


def multi_label(
    columns: Sequence[str], rows: Sequence[dict[str, str]]
) -> tuple[list[str], list[dict[str, str]], dict[str, list[str]], str | None]:
    """Columns whose cells join several labels with ``|`` replaced by one yes/no column per
    label (named by the label, or ``column: label`` where that name is taken; at most
    :data:`MANY` labels, or the column is text, not labels); a blank cell stays blank in
    each. Returns the columns, the rows, each split column's new names, and a note.

    >>> rows = [{"f": "A|B"}, {"f": "B"}, {"f": ""}]
    >>> cols, rows, new, _ = multi_label(["f"], rows)
    >>> cols, [r["A"] for r in rows], [r["B"] for r in rows]
    (['A', 'B'], ['yes', 'no', ''], ['yes', 'yes', ''])
    """
    labels = {
        c: sorted({p.strip() for r in rows for p in (r.get(c) or "").split("|")} - {""})
        for c in columns
        if any("|" in (r.get(c) or "") for r in rows)
    }
    split = {c: names for c, names in labels.items() if len(names) <= MANY}  # not free text
    if not split:
        return list(columns), list(rows), {}, None
    out_columns: list[str] = []
    new: dict[str, list[str]] = {}
    for c in columns:
        if c not in split:
            out_columns.append(c)
            continue
        taken = set(columns) | set(out_columns)
        new[c] = [f"{c}: {label}" if label in taken else label for label in split[c]]
        out_columns += new[c]
    out_rows = []
    for r in rows:
        row = dict(r)
        for c, names in new.items():
            cell = (r.get(c) or "").strip()
            parts = {p.strip() for p in cell.split("|")}
            for label, name in zip(split[c], names):
                row[name] = ("yes" if label in parts else "no") if cell else ""
        out_rows.append(row)
    note = "; ".join(f"{c} ({len(n)} labels)" for c, n in new.items())
    note = (
        f"note: multi-label column(s) {note}: labels joined by '|', each read as a yes/no task "
        "(evaluate reports each task's ROC AUC)"
    )
    return out_columns, out_rows, new, note
