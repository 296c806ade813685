"""Scanning a dataset folder: classes, counts, and every file skipped with the reason."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from headstart.cache import Cache
from headstart.data.pool import map_remembered
from headstart.errors import DataError
from headstart.imaging import IMAGE_EXTENSIONS, shape_problem

# Names that image scrapers give the stand-in they save when the real photo is gone.
_PLACEHOLDER_NAME = re.compile(
    r"(not.?found|placeholder|unavailable|no.?image|missing|removed)", re.IGNORECASE
)
_PLACEHOLDER_MAX_COLOURS = 64
AUDIT_VERSION = "v2"  # bump when the audit's verdicts change (v2: aspect-ratio limit)


@dataclass(frozen=True)
class Sample:
    """One labelled image: its path and class index, or for a multi-task table a class
    index per task (``data.table.MISSING`` where the label is blank)."""

    path: Path
    target: int | dict[str, int]


@dataclass
class FolderScan:
    """What a class-per-folder scan found under ``root``: usable samples, files skipped with
    the reason, and hidden files and folders ignored (counted, not listed one by one)."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of usable images per class."""
        out = dict.fromkeys(self.classes, 0)
        for s in self.samples:
            out[self.classes[s.target]] += 1
        return out


def audit_image(path: Path, cache: Cache | None = None) -> str | None:
    """Why ``path`` cannot be used as a training image, or None if it can.

    Decodes the whole file, so truncated JPEGs and PNGs are caught here, at the boundary,
    and not halfway through an epoch. With a ``cache`` the verdict on a file's content is
    remembered, so a folder is decoded once, not on every run.
    """
    return audit_images([path], cache)[0]


def audit_images(
    paths: Sequence[Path], cache: Cache | None = None, progress: bool = False
) -> list[str | None]:
    """:func:`audit_image` of every path: remembered verdicts are read in turn, and only the
    files not seen before are decoded, on every core, with a bar when ``progress``."""
    reasons = [_file_problem(p) for p in paths]
    todo = [i for i, r in enumerate(reasons) if r is None]
    verdicts = map_remembered(
        _content_verdict, [paths[i] for i in todo], cache, AUDIT_VERSION, "checking images",
        progress,
    )  # fmt: skip
    for i, verdict in zip(todo, verdicts):
        reasons[i] = str(verdict.reshape(-1)[0]) or None
    placeholder = "placeholder image (name {!r} says the real image is missing)"
    return [
        placeholder.format(p.name) if r is None and _PLACEHOLDER_NAME.search(p.stem) else r
        for p, r in zip(paths, reasons)
    ]


def _file_problem(path: Path) -> str | None:
    """What the name, the size and opening the file reveal: not an image, empty, or
    unreadable (no permission: stat sees a file that open refuses)."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image (extension {path.suffix or 'none'!r})"
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        open(path, "rb").close()
    except OSError as e:
        return f"unreadable: {e}"
    return None


def _content_verdict(path: Path) -> np.ndarray:
    """:func:`_content_problem` as the audit store keeps it: the reason, or "" for none."""
    return np.array(_content_problem(path) or "")


def _content_problem(path: Path) -> str | None:
    """What decoding the whole file reveals: unreadable, truncated, or a placeholder GIF."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            shape = shape_problem(*im.size)
            if shape:
                return f"refused: {shape}"
            im.draft(None, (1, 1))  # JPEG: decode at 1/8 scale; still reads every byte
            im.load()
            colours = im.getcolors(_PLACEHOLDER_MAX_COLOURS) if fmt == "GIF" else None
    except UnidentifiedImageError:
        return "unreadable: not a format PIL can decode"
    except OSError as e:
        if "truncated" in str(e).lower():
            return f"truncated: {e}"
        return f"unreadable: {e}"
    except Exception as e:  # decoders raise odd types on hostile input
        return f"unreadable: {type(e).__name__}: {e}"
    if colours is not None:
        return f"placeholder GIF ({len(colours)} colours; a stand-in, not a photo)"
    return None


def is_hidden(name: str) -> bool:
    """Names no dataset means to include: dot-files and dot-folders (``.DS_Store``,
    ``.ipynb_checkpoints``, ``.git``) and macOS archive debris (``__MACOSX``)."""
    return name.startswith(".") or name == "__MACOSX"


def subfolders(root: Path) -> tuple[list[Path], list[Path]]:
    """The visible folders under ``root`` (class folders, in a dataset) and the hidden
    entries beside them."""
    entries = sorted(root.iterdir())
    hidden = [p for p in entries if is_hidden(p.name)]
    return [p for p in entries if p.is_dir() and not is_hidden(p.name)], hidden


def walk_files(
    folder: Path,
) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """Every file below ``folder`` (symbolic links followed), sorted; the hidden files and
    folders left out; and the links that lead nowhere (broken, or a loop) with the reason."""
    files: list[Path] = []
    hidden: list[Path] = []
    bad: list[tuple[Path, str]] = []

    def visit(d: Path, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            entries = sorted(d.iterdir())
        except OSError as e:
            bad.append((d, f"unreadable folder: {e.strerror or e}"))
            return
        for p in entries:
            if is_hidden(p.name):
                hidden.append(p)
                continue
            try:
                st = p.stat()  # follows links
            except FileNotFoundError:
                target = os.readlink(p) if p.is_symlink() else "?"
                bad.append((p, f"broken symbolic link (its target {target} does not exist)"))
                continue
            except OSError as e:  # ELOOP: a link that points to itself, directly or not
                bad.append((p, f"unusable symbolic link ({e.strerror or e})"))
                continue
            if p.is_dir():
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    bad.append((p, f"symbolic link loop (leads back to {os.path.realpath(p)})"))
                else:
                    visit(p, ancestors | {key})
            elif p.is_file():
                files.append(p)

    st = folder.stat()
    visit(folder, frozenset({(st.st_dev, st.st_ino)}))
    return files, hidden, bad


def data_folder(path: str | Path) -> Path:
    """The folder data is read from, as every message names it: the current folder by its
    absolute path (a bare ``.`` at the end of a sentence reads as a typo), any other as
    given.

    >>> data_folder("data/cells")
    PosixPath('data/cells')
    """
    return Path.cwd() if Path(path) == Path(".") else Path(path)


def _not_a_folder(path: Path) -> str:
    """What a data path that is not a folder is, and what to do with it."""
    if not path.exists():
        return "does not exist"
    name = path.name.lower()
    if name.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".7z", ".rar")):
        return "is an archive: unpack it first (e.g. unzip, or tar xf) and pass the folder it holds"
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return f"is a file of labels, not a folder: pass it as --labels {path}"
    return "is a file, not a folder"


def scan_folder(
    root: str | Path,
    classes: list[str] | None = None,
    cache: Cache | None = None,
    allow_empty: bool = False,
    progress: bool = False,
) -> FolderScan:
    """Scan ``root/<class>/**/<image>``; ``classes`` fixes the class order (e.g. from train/).
    ``cache`` remembers each file's audit (see :func:`audit_image`); ``progress`` shows a bar
    while a long audit runs.

    Raises DataError for a missing folder, no class folders, a class folder not in
    ``classes``, or (unless ``allow_empty``, as for a validation folder) a class with no
    usable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"DataError: data folder {root} {_not_a_folder(root)}. Pass a folder with one "
            "subfolder per class (or train/ and val/ subfolders)."
        )
    dirs, hidden = subfolders(root)
    found = [d.name for d in dirs]
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(
                f"DataError: {root} has class folders {unknown} that are not among the "
                f"training classes {classes}. Rename or remove them."
            )
    if not dirs:
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        if hidden and not loose:
            names = ", ".join(p.name for p in hidden[:3])
            loose_hint = f" It holds only hidden entries ({names}), which are ignored."
        else:
            loose_hint = ""
        hint = (
            f" It holds {len(loose)} images directly: if it is one class, pass its parent "
            f"folder {root.parent}, whose subfolders are the classes."
            if loose
            else loose_hint
        )
        raise DataError(
            f"DataError: {root} has no class subfolders. Expected one folder per class "
            f"(e.g. {root}/cats/*.jpg, {root}/dogs/*.jpg), or train/ and val/ folders of that "
            f"shape.{hint}"
        )
    index = {c: i for i, c in enumerate(classes)}
    scan = FolderScan(root=root, classes=list(classes), samples=[], hidden=hidden)
    files = []
    for d in dirs:
        found_files, found_hidden, bad_links = walk_files(d)
        files += [(p, d.name) for p in found_files]
        scan.hidden += found_hidden
        scan.skipped += bad_links
    reasons = audit_images([path for path, _ in files], cache, progress)
    for (path, cls), reason in zip(files, reasons):
        if reason is None:
            scan.samples.append(Sample(path, index[cls]))
        else:
            scan.skipped.append((path, reason))
    empty = [c for c, n in scan.counts().items() if n == 0 and (root / c).is_dir()]
    if empty and not allow_empty:
        there = [(p, r) for p, r in scan.skipped if p.relative_to(root).parts[0] in empty]
        raise DataError(
            f"DataError: class folder(s) {', '.join(str(root / c) for c in empty)} hold no "
            "usable image. Add images or remove the folder"
            + (f"; skipped there: {_skipped_summary(there)}" if there else ".")
        )
    return scan


def _skipped_summary(skipped: list[tuple[Path, str]]) -> str:
    return "; ".join(f"{p.name}: {r}" for p, r in skipped[:5]) + (
        f" (+{len(skipped) - 5} more)" if len(skipped) > 5 else ""
    )
