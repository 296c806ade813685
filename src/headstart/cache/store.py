"""The on-disk cache: where it lives, how keys are made, and atomic writes.

Every entry is one file named by a content key. Writes go to a temporary file in the same
folder and are renamed into place (``os.replace`` is atomic), so an interrupted run leaves
either a complete entry or none; a file that still fails to load is treated as a miss and
deleted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ENV_VAR = "HEADSTART_CACHE"
FORMAT = 2  # bump when the meaning of a cached entry changes (2: large images reduced on decode)


def cache_root(override: str | Path | None = None) -> Path:
    """``override`` (``--cache-dir``), else ``$HEADSTART_CACHE``, else the user cache folder
    (``~/.cache/headstart`` on Linux, via platformdirs)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("headstart")


def file_digest(path: str | Path) -> str:
    """BLAKE2b-128 of a file's bytes (about 1 GB/s: 46 MB of photos in 0.05 s)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest_of(obj: Any) -> str:
    """A stable key for a JSON-able description (dict key order does not matter)."""
    text = json.dumps([FORMAT, obj], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def module_digest(module: nn.Module) -> str:
    """Digest of a module's parameters and buffers: the weights as they are, whatever their
    source (a package, a download, a file that changed since last time)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_WARNED: set[str] = set()


def _warn_once(root: Path, e: OSError, need: int) -> None:
    """Say once per process that the cache cannot be written, and what to do."""
    if "full" in _WARNED:
        return
    _WARNED.add("full")
    full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    why = "the disk is full" if full else (e.strerror or str(e))
    print(
        f"warning: cannot write to the cache under {root.parent} ({why}; an entry needed "
        f"{need / 1e6:.1f} MB). Going on without caching: free some space, pass --cache-dir "
        "DIR elsewhere, or --no-cache.",
        file=sys.stderr,
    )


class ArrayStore:
    """A folder of ``.npy`` entries addressed by string keys (sharded by the key's start)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the entry ``key`` lives."""
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, mmap: bool = False) -> np.ndarray | None:
        """The stored array, or None if absent or unreadable (then it is removed)."""
        path = self.path(key)
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)  # a damaged entry is recomputed, never trusted
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key`` atomically. A cache is only a shortcut: when the
        disk is full or the folder unwritable, a warning is printed once per process and the
        run goes on without storing (the caller keeps its array)."""
        path = self.path(key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            os.replace(tmp, path)
        except OSError as e:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            _warn_once(self.root, e, array.nbytes)
        except BaseException:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()
