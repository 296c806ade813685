"""Writing run files so that nothing already saved is lost: atomic replacement, and a full
disk or unwritable folder reported as an error naming the path and what was needed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from headstart.errors import CheckpointError


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_error(path: Path, e: OSError, need: int | None = None) -> CheckpointError:
    """A CheckpointError saying which file could not be written, why, and the fix."""
    what = f" ({need / 1e6:.1f} MB needed)" if need else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = ""
        with contextlib.suppress(OSError):
            free = f"; {shutil.disk_usage(path.parent).free / 1e6:.1f} MB free there"
        why = f"the disk is full{what}{free}"
        fix = "Free some space (or choose another --out) and run the same command again"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why, fix = "the folder is not writable", "Choose a writable --out"
    else:
        why, fix = f"{e.strerror or e}{what}", "Check the folder and run the same command again"
    return CheckpointError(
        f"CheckpointError: could not write {path}: {why}. {fix}; everything saved before is intact."
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash or a full disk never leaves half a
    file (the previous version stays); failures are CheckpointErrors naming the path."""
    write_file_atomic(path, lambda tmp: tmp.write_bytes(data), len(data))


def write_file_atomic(path: Path, write: Callable[[Path], object], need: int | None = None) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path``; on any failure ``tmp`` is removed
    and ``path`` keeps its previous content."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e, need) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
