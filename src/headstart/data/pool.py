"""Work done once per image before training (the audit, the perceptual hash): on every core,
with a bar.

A cold audit of a few thousand images takes seconds (elpv's 2,624 cells: about 7 s on two
cores), of a hundred thousand minutes; a warm one reads cached verdicts in a fraction of that.
The bar is shown only on a terminal, and only once the work has run :data:`DELAY_S`, so a
warm run prints nothing while a cold scan of a large folder says where it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from headstart.cache import Cache

T = TypeVar("T")
R = TypeVar("R")
DELAY_S = 1.0  # a bar appears after this long; shorter work stays silent
WORKERS = min(8, os.cpu_count() or 1)  # Pillow releases the GIL while decoding


def map_images(
    fn: Callable[[T], R], items: Sequence[T], desc: str, progress: bool = False
) -> list[R]:
    """``[fn(item) for item in items]``, in order, on :data:`WORKERS` threads, with a bar
    (``desc``, images per second, ETA) when ``progress`` and stderr is a terminal.

    >>> map_images(len, ["a", "bb"], "sizes")
    [1, 2]
    """
    bar = tqdm(
        total=len(items),
        desc=desc,
        unit="img",
        leave=False,
        delay=DELAY_S,
        disable=not progress or None,
    )
    out = []
    with bar, ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for result in pool.map(fn, items):
            out.append(result)
            bar.update()
    return out


def map_remembered(
    fn: Callable[[Path], np.ndarray],
    paths: Sequence[Path],
    cache: Cache | None,
    key: str,
    desc: str,
    progress: bool = False,
) -> list[np.ndarray]:
    """:func:`map_images` of ``fn`` over files, each result remembered by the file's content
    in the cache's ``audit/KEY`` store: remembered results are read in turn (threads would
    only contend for the GIL), and only the files not seen before are computed and stored."""
    if cache is None:
        return map_images(fn, paths, desc, progress)
    store = cache.store("audit", key)
    keys = [cache.digest(p) for p in paths]
    found = [store.get(k) for k in keys]
    todo = [i for i, r in enumerate(found) if r is None]
    for i, result in zip(todo, map_images(fn, [paths[i] for i in todo], desc, progress)):
        store.put(keys[i], result)
        found[i] = result
    return found  # type: ignore[return-value]
