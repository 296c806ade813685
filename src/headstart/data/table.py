"""Labels from a CSV: one image column, one column per task; a blank cell is a missing label.

```
image,type,defect
images/cell0001.png,mono,defective
images/cell0002.png,poly,
```

Each sample's target is a dict ``{task: class index}``, with :data:`MISSING` (-1) where the
cell is blank: that row still trains the other tasks and is masked out of this one.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headstart.cache import Cache
from headstart.data.columns import (
    ImageFinder,
    column_kinds,
    default_tasks,
    delimiter,
    headerless,
    image_column,
    merge_one_hot,
    multi_label,
    one_hot,
    part_of,
    split_column,
)
from headstart.data.groups import check_group_column, group_hints, group_of
from headstart.data.scan import Sample, audit_images, data_folder
from headstart.errors import DataError

MISSING = -1
DEFAULT_TASK = "class"  # the one task of class-per-folder data


def task_label(target: int | Mapping[str, int], task: str) -> int:
    """The class index of ``task`` in one sample's target: a dict per task (:data:`MISSING`
    where the task has no label) or, for single-task data, the index itself.

    >>> task_label({"a": 1}, "b"), task_label({"a": 1}, "a"), task_label(3, "class")
    (-1, 1, 3)
    """
    return target.get(task, MISSING) if isinstance(target, Mapping) else target


def task_labels(targets: Sequence[int | Mapping[str, int]]) -> dict[str, np.ndarray]:
    """Per task, the class index of every sample (:data:`MISSING` where it has none), tasks
    in the order the targets name them (the first is the one splits stratify by); single-task
    data is the task :data:`DEFAULT_TASK`.

    >>> {t: v.tolist() for t, v in task_labels([{"b": 1, "a": 0}, {"b": 0}]).items()}
    {'b': [1, 0], 'a': [0, -1]}
    >>> task_labels([3, 1])["class"].tolist()
    [3, 1]
    """
    if all(not isinstance(t, Mapping) for t in targets):
        return {DEFAULT_TASK: np.asarray(targets, dtype=np.int64)}
    tasks = dict.fromkeys(k for t in targets if isinstance(t, Mapping) for k in t)
    return {
        task: np.asarray([task_label(t, task) for t in targets], dtype=np.int64) for task in tasks
    }


@dataclass
class LabelTable:
    """What a labels CSV holds: tasks with their classes, samples, and skipped files."""

    csv: Path
    images_root: Path
    tasks: dict[str, list[str]]
    samples: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # every task column's cell, per sample
    parts: list[str] = field(default_factory=list)  # per sample, its split column's part if any
    groups: list[str] = field(default_factory=list)  # per sample, its --group cell, if asked
    group_by: str | None = None  # what the groups are: --group's column, or near-duplicates
    notes: list[str] = field(default_factory=list)  # "note: ..." lines for the data summary


def read_csv_text(path: Path) -> tuple[str, str | None]:
    """The CSV's text and, when it is not UTF-8 (with or without a BOM), a note saying which
    encoding it was read with instead (Windows' cp1252, else Latin-1, which reads any byte)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        where = f"byte {e.start}"
    for encoding in ("cp1252", "latin-1"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text, (
            f"note: {path.name} is not UTF-8 ({where}); read it as {encoding}. Check the class "
            "names above, or save the file as UTF-8."
        )
    raise AssertionError("latin-1 decodes any byte")  # pragma: no cover


def read_labels_csv(
    csv_path: str | Path,
    images_root: str | Path | None = None,
    tasks: list[str] | None = None,
    cache: Cache | None = None,
    known: Mapping[str, list[str]] | None = None,
    group: str | None = None,
    group_optional: bool = False,
    progress: bool = False,
) -> LabelTable:
    """Read ``csv_path``; image paths are relative to ``images_root`` (default: the CSV's
    folder); ``tasks`` picks columns (default: every column but the image column);
    ``group`` names a column whose value each image's group shares (a patient, a lesion):
    never a task, read into ``groups`` for the split (see :mod:`headstart.data.groups`);
    ``group_optional``: a CSV without that column reads without groups (a test set's);
    ``progress``: a bar while the images' audit runs long.

    ``known``: a trained model's classes per task, to evaluate it on the CSV: the tasks are
    the model's that the CSV has a column for (a single-task model reads a CSV's only task
    column whatever its name), targets index the model's classes, and a label the model
    does not know is refused by name."""
    csv_path = Path(csv_path)
    root = data_folder(images_root or csv_path.parent)
    if not csv_path.is_file():
        raise DataError(f"DataError: labels file {csv_path} does not exist.")
    text, encoding_note = read_csv_text(csv_path)
    find = ImageFinder(root)  # one search of the subfolders at most, shared by every use
    header, rows, header_note = _read_rows(text, find, csv_path)
    image_col, image_note = image_column(header, rows, find, csv_path)
    split_col = split_column([h for h in header if h != image_col])
    if not check_group_column(group, header, image_col, split_col, csv_path, group_optional):
        group = None
    columns = [h for h in header if h not in (image_col, split_col, group)]
    notes = [n for n in (encoding_note, header_note, image_note) if n]
    if not columns:
        raise DataError(f"DataError: {csv_path} has an image column but no task columns.")
    hot = one_hot(columns, rows)
    if hot and not set(tasks or ()) & set(hot):  # --tasks naming a column reads it alone
        columns, rows, one_hot_note = merge_one_hot(hot, columns, rows)
        notes.append(one_hot_note)
    columns, rows, split_into, multi_note = multi_label(columns, rows)
    if multi_note:
        notes.append(multi_note)
        if tasks:  # --tasks naming a multi-label column asks for each of its labels
            tasks = [n for t in tasks for n in split_into.get(t, [t])]
    kinds = None  # what each column holds (columns.column_kinds), once
    if known is not None:
        tasks, column = _known_columns(known, columns, csv_path)
        if column is not None:  # a single-task model's labels under another column name
            rows = [{**r, tasks[0]: r.get(column) or ""} for r in rows]
            columns = [tasks[0] if c == column else c for c in columns]
    elif not tasks:
        kinds = column_kinds(columns, rows)
        tasks, tasks_note = default_tasks(columns, rows, kinds)
        notes += [tasks_note] if tasks_note else []
    unknown = [t for t in tasks if t not in columns]
    if unknown:
        raise DataError(
            f"DataError: --tasks {','.join(unknown)}: no such column in {csv_path}. "
            f"Task columns there: {', '.join(columns)}."
        )
    classes = {t: sorted({(r.get(t) or "").strip() for r in rows} - {""}) for t in tasks}
    for t, names in classes.items():
        if known is not None:
            _check_known(t, names, known[t], csv_path)
            classes[t] = list(known[t])
        elif len(names) < 2:
            raise DataError(
                f"DataError: task column {t!r} in {csv_path} has "
                f"{'only the class ' + repr(names[0]) if names else 'no labels'}; a task needs "
                "at least two classes. Drop it with --tasks."
            )
    index = {t: {c: i for i, c in enumerate(names)} for t, names in classes.items()}
    if kinds is None:  # the columns as read (a model's task renamed), or --tasks named them
        kinds = column_kinds(columns, rows)
    # an id or a measurement would scatter the strata
    strata_columns = [c for c in columns if kinds[c] in ("label", "one")] or list(tasks)
    table = LabelTable(csv_path, root, classes, [], notes=notes, group_by=group)
    lines = enumerate(rows, start=2)  # line 1 is the header
    found = [(n, row, _find_image(row, image_col, find, n, csv_path)) for n, row in lines]
    labelled = []
    for line, row, path in _one_row_per_image(found, tasks, table):
        target = {t: index[t].get((row.get(t) or "").strip(), MISSING) for t in tasks}
        if all(v == MISSING for v in target.values()):
            table.skipped.append((path, f"line {line}: no label for any task"))
        else:
            labelled.append((line, row, path, target))
    reasons = audit_images([path for _, _, path, _ in labelled], cache, progress)
    for (line, row, path, target), reason in zip(labelled, reasons):
        if reason is None:
            table.samples.append(Sample(path, target))
            table.rows.append([(row.get(c) or "").strip() for c in strata_columns])
            if split_col:
                table.parts.append(part_of(row.get(split_col) or "", split_col, line, csv_path))
            if group:
                table.groups.append(group_of(row.get(group), line))
        else:
            table.skipped.append((path, reason))
    if group is None:
        table.notes += group_hints(kinds, tasks, rows)
    if find.found_below:
        table.notes.append(
            f"note: {len(find.found_below):,} image(s) named by file alone were found in "
            f"subfolders of {root}"
        )
    return table


def _read_rows(
    text: str, find: ImageFinder, csv_path: Path
) -> tuple[list[str], list[dict[str, str]], str | None]:
    """The header and rows of a labels file, its leading ``#`` comment lines skipped; a file
    whose first row already names an image has no header, and is given one (with a note)."""
    lines = text.splitlines(keepends=True)
    text = "".join(lines[next((i for i, x in enumerate(lines) if not x.startswith("#")), 0) :])
    sep = delimiter(text)
    try:
        first = next(csv.reader(io.StringIO(text, newline=""), delimiter=sep,
                                skipinitialspace=sep == " "), [])  # fmt: skip
        names = headerless([h.strip() for h in first], find)
        reader = csv.DictReader(io.StringIO(text, newline=""), fieldnames=names, delimiter=sep,
                                skipinitialspace=sep == " ")  # fmt: skip
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        rows = list(reader)
    except csv.Error as e:
        raise DataError(
            f"DataError: {csv_path} is not a readable CSV ({e}). Save it as comma-separated "
            "values with a header row."
        ) from None
    note = None
    if names:
        note = (
            f"note: {csv_path.name} has no header row (its first row names an image): columns "
            f"read as {', '.join(names)} (a header line names them)"
        )
    return header, rows, note


def _known_columns(
    known: Mapping[str, list[str]], columns: list[str], csv_path: Path
) -> tuple[list[str], str | None]:
    """The model's tasks the CSV has a column for, and the column to read a single-task
    model's task from when no column bears its name (the CSV's only task column)."""
    present = [t for t in known if t in columns]
    if present:
        return present, None
    if len(known) == 1 and len(columns) == 1:
        return list(known), columns[0]
    raise DataError(
        f"DataError: {csv_path} has no column for the model's task(s) {', '.join(known)}; its "
        f"task columns are {', '.join(columns)}. Name each column after the task it labels."
    )


def _check_known(task: str, names: list[str], classes: list[str], csv_path: Path) -> None:
    new = [n for n in names if n not in classes]
    if new:
        raise DataError(
            f"DataError: {csv_path}: task {task!r} has label(s) {', '.join(map(repr, new[:5]))} "
            f"the model was not trained on (its classes: {', '.join(classes)}). Fix the labels, "
            "or leave those rows out."
        )


def _find_image(
    row: dict[str, str], image_col: str, find: ImageFinder, line: int, csv_path: Path
) -> Path:
    """The image file a row names, or a DataError saying which line names none."""
    rel = (row.get(image_col) or "").strip()
    if not rel:
        raise DataError(f"DataError: {csv_path} line {line}: the {image_col!r} cell is empty.")
    path = find(rel)
    if path is None:
        raise DataError(
            f"DataError: {csv_path} line {line}: image {rel!r} not found under {find.root} (with "
            "or without an image extension; a bare name is also looked for, once, in its "
            "subfolders). Fix the path, or pass --images-root DIR (the folder paths are "
            "relative to)."
        )
    return path


def _one_row_per_image(
    found: list[tuple[int, dict[str, str], Path]], tasks: list[str], table: LabelTable
) -> list[tuple[int, dict[str, str], Path]]:
    """(line, row, image) triples with each image file once, however its rows spell it (a
    relative and an absolute path, with or without its extension, through a symbolic link):
    repeated rows that agree are kept once (a note counts them); an image whose rows
    disagree on a label is left out, and listed as skipped with the conflicting lines (one
    copy in train and one in val would be worse)."""
    by_image: dict[Path, list[tuple[int, dict[str, str], Path]]] = {}
    for entry in found:
        by_image.setdefault(entry[2].resolve(), []).append(entry)
    out, repeated = [], 0
    for entries in by_image.values():
        labels = {tuple((r.get(t) or "").strip() for t in tasks) for _, r, _ in entries}
        if len(labels) > 1:
            lines = ", ".join(str(line) for line, _, _ in entries)
            table.skipped.append(
                (entries[0][2], f"conflicting labels on lines {lines}; left out (fix the CSV)")
            )
            continue
        repeated += len(entries) - 1
        out.append(entries[0])
    if repeated:
        table.notes.append(f"note: {repeated} repeated row(s) with the same labels kept once")
    return sorted(out, key=lambda e: e[0])


def strata(rows: list[list[str]], columns: int | None = None) -> list[str]:
    """A stratum per sample for a split stratified on the combination of its labels in the
    first ``columns`` task columns (all by default, whichever tasks are learnt, so runs on
    different ``--tasks`` of one CSV share a split); a combination seen fewer than twice
    joins its first column's label, then a shared rest."""
    combos = ["|".join(r[:columns]) for r in rows]
    counts = Counter(combos)
    out = [c if counts[c] >= 2 else f"{r[0]}|*" for c, r in zip(combos, rows)]
    counts = Counter(out)
    return [o if counts[o] >= 2 else "*" for o in out]
