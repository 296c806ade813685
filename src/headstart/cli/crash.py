"""What the CLI says when something other than a :class:`HeadstartError` stops it.

Running out of memory or disk is the machine's limit, not a bug: the message says which and
how to fit. Anything else is a bug in headstart: one paragraph that says so, with the
traceback written to a file for the report instead of over the user's terminal.
``HEADSTART_DEBUG=1`` lets the exception through, traceback and all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import shlex
import tempfile
import time
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

DEBUG_ENV = "HEADSTART_DEBUG"


def debugging() -> bool:
    """True when ``HEADSTART_DEBUG`` asks for the raw exception."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _out_of_memory(error: BaseException) -> bool:
    # torch.OutOfMemoryError (CUDA) by name: this module never imports torch
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"


def _notes(error: BaseException) -> str:
    return "".join(f" {n}" for n in getattr(error, "__notes__", []))


def _versions() -> str:
    found = []
    for package in ("headstart", "torch", "torchvision", "timm", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{package} {metadata.version(package)}")
    return ", ".join([*found, f"python {platform.python_version()}", platform.platform()])


def write_traceback(error: BaseException, argv: Sequence[str]) -> Path:
    """Write the command, the versions and ``error``'s traceback to a new file in the temp
    folder; returns its path."""
    folder = Path(tempfile.gettempdir())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"headstart-crash-{stamp}-{os.getpid()}.txt"
    command = shlex.join(["headstart", *argv])
    header = f"command: {command}\nversions: {_versions()}\n\n"
    path.write_text(header + "".join(traceback.format_exception(error)))
    return path


def crash_message(error: BaseException, argv: Sequence[str]) -> str:
    """One paragraph for an exception that is not a HeadstartError: what happened, what
    to do; for a bug, where its traceback (and ``argv``, the command's arguments) was
    written."""
    what = f"{type(error).__name__}: {error}".rstrip(": .")
    if _out_of_memory(error):
        return (
            f"error: OutOfMemory: this machine ran out of memory ({what}). Try a smaller "
            "--batch-size, a smaller --image-size, --workers 0, or close other programs."
            + _notes(error)
        )
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"error: DiskFull: no space left to write {error.filename or 'a file'} ({what}). "
            "Free some space (the feature cache can be deleted: it is rebuilt when needed), "
            "or choose another --out or --cache-dir." + _notes(error)
        )
    try:
        where = f"The traceback is in {write_traceback(error, argv)}"
    except OSError:
        where = f"Run again with {DEBUG_ENV}=1 to see the traceback"
    return (
        f"internal error: {what}. This is a bug in headstart, not a problem with your data "
        f"or options.{_notes(error)} {where}; please report it to the headstart "
        f"maintainers with that file (it holds the command and versions too; {DEBUG_ENV}=1 "
        "prints the traceback here instead)."
    )
