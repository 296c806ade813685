"""Scanning a dataset folder: classes, counts, and every file skipped with the reason."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from headstart.cache import Cache
from headstart.data.images import IMAGE_EXTENSIONS
from headstart.errors import DataError

# Names that image scrapers give the stand-in they save when the real photo is gone.
_PLACEHOLDER_NAME = re.compile(
    r"(not.?found|placeholder|unavailable|no.?image|missing|removed)", re.IGNORECASE
)
_PLACEHOLDER_MAX_COLOURS = 64


@dataclass(frozen=True)
class Sample:
    """One labelled image: its path and class index, or for a multi-task table a class
    index per task (``data.table.MISSING`` where the label is blank)."""

    path: Path
    target: int | dict[str, int]


@dataclass
class FolderScan:
    """What a class-per-folder scan found under ``root``."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

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
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image (extension {path.suffix or 'none'!r})"
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError as e:
        return f"unreadable: {e}"
    if cache is None:
        reason = _content_problem(path)
    else:
        store, key = cache.store("audit"), cache.digest(path)
        found = store.get(key)
        if found is None:
            reason = _content_problem(path)
            store.put(key, np.array(reason or ""))
        else:
            reason = str(found.reshape(-1)[0]) or None
    if reason is None and _PLACEHOLDER_NAME.search(path.stem):
        return f"placeholder image (name {path.name!r} says the real image is missing)"
    return reason


def _content_problem(path: Path) -> str | None:
    """What decoding the whole file reveals: unreadable, truncated, or a placeholder GIF."""
    try:
        with Image.open(path) as im:
            fmt = im.format
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


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folder(
    root: str | Path, classes: list[str] | None = None, cache: Cache | None = None
) -> FolderScan:
    """Scan ``root/<class>/**/<image>``; ``classes`` fixes the class order (e.g. from train/).
    ``cache`` remembers each file's audit (see :func:`audit_image`).

    Raises DataError for a missing folder, no class folders, a class with no usable image,
    or a class folder not in ``classes``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"DataError: data folder {root} does not exist or is not a folder. "
            "Pass a folder with one subfolder per class (or train/ and val/ subfolders)."
        )
    dirs = _class_dirs(root)
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
        hint = (
            f" It holds {len(loose)} images directly: if it is one class, pass its parent "
            f"folder {root.parent}, whose subfolders are the classes."
            if loose
            else ""
        )
        raise DataError(
            f"DataError: {root} has no class subfolders. Expected one folder per class "
            f"(e.g. {root}/cats/*.jpg, {root}/dogs/*.jpg), or train/ and val/ folders of that "
            f"shape.{hint}"
        )
    index = {c: i for i, c in enumerate(classes)}
    scan = FolderScan(root=root, classes=list(classes), samples=[])
    files = [(p, d.name) for d in dirs for p in sorted(p for p in d.rglob("*") if p.is_file())]
    # Pillow releases the GIL while decoding, so threads audit on every core
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(lambda f: audit_image(f[0], cache), files))
    for (path, cls), reason in zip(files, reasons):
        if reason is None:
            scan.samples.append(Sample(path, index[cls]))
        else:
            scan.skipped.append((path, reason))
    empty = [c for c, n in scan.counts().items() if n == 0 and (root / c).is_dir()]
    if empty:
        raise DataError(
            f"DataError: class folder(s) {', '.join(str(root / c) for c in empty)} hold no "
            "usable image. Add images or remove the folder"
            + (f"; skipped there: {_skipped_summary(scan.skipped)}" if scan.skipped else ".")
        )
    return scan


def _skipped_summary(skipped: list[tuple[Path, str]]) -> str:
    return "; ".join(f"{p.name}: {r}" for p, r in skipped[:5]) + (
        f" (+{len(skipped) - 5} more)" if len(skipped) > 5 else ""
    )
