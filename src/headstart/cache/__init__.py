"""Frozen work done once: file audits, decoded images and frozen-backbone features on disk."""

from __future__ import annotations

import os
from pathlib import Path

from headstart.cache.store import (
    ENV_VAR,
    ArrayStore,
    cache_root,
    digest_of,
    file_digest,
    module_digest,
)
from headstart.errors import ConfigError

# Content digests by (path, size, mtime): shared by every Cache in the process, so the runs
# of a cross-validation or a comparison hash each file once, not once per run.
_DIGESTS: dict[tuple[str, int, int], str] = {}


class Cache:
    """One cache folder and its stores; file digests are remembered for the life of the process.

    ``audit/``: why a file cannot be used (or that it can), by content; ``decoded/KEY/``:
    images decoded and resized for one preprocessing; ``features/KEY/``: a frozen prefix's
    outputs for one backbone, weights, preprocessing, boundary and view.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = cache_root(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError("not writable")
        except OSError as e:
            raise ConfigError(
                f"ConfigError: cache folder {self.root} cannot be used ({e}). Pass --cache-dir "
                f"DIR (or set ${ENV_VAR}) to a writable folder, or --no-cache."
            ) from None

    def digest(self, path: str | Path) -> str:
        """Content digest of ``path``; a file is hashed once per process unless it changes."""
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = file_digest(path)
        return _DIGESTS[key]

    def store(self, kind: str, key: str = "") -> ArrayStore:
        """The store ``kind`` (``audit``, ``decoded``, ``features``), optionally one keyed part."""
        return ArrayStore(self.root / kind / key if key else self.root / kind)


__all__ = [
    "ENV_VAR",
    "ArrayStore",
    "Cache",
    "cache_root",
    "digest_of",
    "file_digest",
    "module_digest",
]
