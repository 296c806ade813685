"""Near-duplicate images by perceptual hash (pHash, from the imagehash package).

A resized or recompressed copy of a photo, the same specimen imaged twice, neighbouring cells
cut from one wafer: their 64-bit pHashes differ in a few bits where two unrelated images differ
in about half. ``evaluate`` lists such pairs across training and evaluated images (leakage);
``--group near-duplicates`` holds out each cluster of them whole, so none is validated against
its own twin (:mod:`headstart.data.groups`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.cache import Cache
from headstart.data.pool import map_images, map_remembered

DUPLICATE_DISTANCE = 4  # of 64 pHash bits; resized or recompressed copies land at 0-2
_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)  # popcount per byte


def perceptual_hashes(
    paths: Sequence[Path], read: Callable[[Path], Image.Image], progress: bool = False
) -> np.ndarray:
    """64-bit pHash of every image, as an (N, 64) boolean array (``progress``: a bar while it
    runs long)."""
    return _stacked(map_images(_hasher(read), paths, "hashing images", progress))


def _hasher(read: Callable[[Path], Image.Image]) -> Callable[[Path], np.ndarray]:
    """The pHash of a file as ``read`` decodes it: 64 booleans."""
    import imagehash

    return lambda path: imagehash.phash(read(path)).hash.reshape(-1)


def _stacked(hashes: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(hashes) if hashes else np.zeros((0, 64), bool)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between every hash of ``a`` (N, 64 booleans) and of ``b`` (M, 64):
    an (N, M) array, computed on packed bytes."""
    pa, pb = np.packbits(a, axis=1), np.packbits(b, axis=1)
    return _BITS[pa[:, None, :] ^ pb[None, :, :]].sum(-1, dtype=np.int32)


def similar_groups(
    hashes: np.ndarray, max_distance: int = DUPLICATE_DISTANCE, chunk: int = 256
) -> list[int]:
    """A group number per image: images within ``max_distance`` bits of each other are
    linked, and a group is a connected set of links (a chain of near-duplicates is one
    group). Memory stays at ``chunk`` rows of distances at a time.

    >>> h = np.zeros((3, 64), bool); h[1, :3] = True; h[2, :40] = True
    >>> similar_groups(h)
    [0, 0, 1]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(hashes)
    rows, cols = [], []
    for start in range(0, n, chunk):
        near = hamming(hashes[start : start + chunk], hashes) <= max_distance
        r, c = np.nonzero(near)
        rows.append(r + start)
        cols.append(c)
    r, c = (np.concatenate(x) if x else np.zeros(0, int) for x in (rows, cols))
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.tolist()


NEAR_DUPLICATES = "near-duplicates"  # --group's value that asks for these groups
HASH_VERSION = "phash-v1"


def near_duplicate_groups(
    paths: Sequence[Path], cache: Cache | None = None, progress: bool = False
) -> list[str]:
    """A group name per image for ``--group near-duplicates`` (:func:`similar_groups` of the
    images as decoded, EXIF-rotated and converted to RGB); with a ``cache``, each file's hash
    is remembered by content, so a folder is hashed once."""
    from headstart.imaging import load_rgb

    found = map_remembered(
        _hasher(load_rgb), paths, cache, HASH_VERSION, "hashing images", progress
    )
    hashes = _stacked(found)
    return [f"{NEAR_DUPLICATES} {g}" for g in similar_groups(np.asarray(hashes, bool))]
