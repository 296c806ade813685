"""What the cache folder holds and how much disk it takes, and clearing it.

The caches only grow: every backbone, preprocessing, stage boundary and view a run computes
adds its entries, and the decoded images of a few thousand photos take about a gigabyte.
Everything here is recomputed when next needed, so clearing loses time, never results.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

KINDS = ("features", "decoded", "audit")  # the cache's own folders; nothing else is touched


@dataclass
class KindUsage:
    """One cache kind: its keyed parts (a backbone and preprocessing, say), entries, and
    the disk space they take."""

    kind: str
    parts: int
    entries: int
    bytes: int

    def row(self) -> tuple[str, str, str, str]:
        """A table row: kind, parts, entries, size."""
        return self.kind, f"{self.parts:,}", f"{self.entries:,}", human_size(self.bytes)


def human_size(n: int) -> str:
    """Bytes as a person reads them.

    >>> human_size(0), human_size(5_242_880), human_size(1_610_612_736)
    ('0 B', '5.0 MB', '1.5 GB')
    """
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def on_disk(st: os.stat_result) -> int:
    """The disk space a file or folder takes (its blocks, as ``du`` counts them; its size
    where the system does not say): thousands of small entries take more than their bytes."""
    blocks = getattr(st, "st_blocks", None)
    return st.st_size if blocks is None else blocks * 512


def usage(root: Path) -> list[KindUsage]:
    """Entries and disk use of each kind under the cache folder ``root`` (absent: zeros).
    Entries are ``.npy`` files; ``parts`` are a kind's keyed folders (features: one per
    backbone, weights, preprocessing, boundary and view; decoded images: one per resize;
    audits: one per version of the checks)."""
    out = []
    for kind in KINDS:
        folder = root / kind
        entries = size = 0
        for dirpath, dirs, files in os.walk(folder):
            for name in [*dirs, *files]:
                try:
                    size += on_disk(os.lstat(os.path.join(dirpath, name)))
                except OSError:  # removed under us by a run or another clear
                    continue
                entries += name.endswith(".npy") and not name.startswith(".tmp-")
        parts = sum(1 for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else 0
        out.append(KindUsage(kind, parts, entries, size))
    return out


def clear(root: Path) -> int:
    """Delete the cache's own folders under ``root`` (``KINDS``; anything else there is left
    alone) and return the bytes freed. A run using the cache meanwhile recomputes what it
    no longer finds."""
    freed = sum(u.bytes for u in usage(root))
    for kind in KINDS:
        shutil.rmtree(root / kind, ignore_errors=True)
    return freed
