"""The C allocator's settings for a process that runs networks on a CPU.

glibc's ``malloc`` hands every block above its mmap threshold (at most 32 MB, however it
adapts) straight to the kernel and gives it back on ``free``. A batch of 32 images through
EfficientNet-Lite0 allocates activations of 50-100 MB, one after another, batch after batch:
each is mapped fresh, and the kernel zero-fills every page of it on first touch. Measured on
this project's 2-core CPU, a two-epoch fine-tune of ants/bees spent 24-31 s of its 56-61 s in
the kernel, most of it so, and a forward pass of Lite0 a third of its time. Serving those blocks
from the heap and keeping what is freed for the next batch (the two ``mallopt`` settings
below; PyTorch's CPU tuning guide reaches the same end by preloading jemalloc or tcmalloc)
makes those epochs 1.3-1.6x faster (``benchmarks/allocator_speed.py``), for a higher peak of
resident memory: the heap keeps the largest working set it has needed.

Only glibc has these settings (Linux, not musl, macOS or Windows); elsewhere, or where the
user has set the allocator up already (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``LD_PRELOAD``) or asked not to (``HEADSTART_MALLOC=system``), nothing changes.
"""

from __future__ import annotations

import ctypes
import os

ENV_VAR = "HEADSTART_MALLOC"  # "system": leave the allocator as the process found it
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 1 << 30  # blocks under 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1  # freed heap memory is kept for the next batch
_USERS_OWN = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")
_tuned: bool | None = None


def tune_allocator() -> bool:
    """Keep large freed blocks in glibc's heap for reuse, once per process; returns whether
    the allocator is so tuned (False where it is not glibc's, or the user set it up).

    The command line does this before every command; a Python program calls it once at
    its start."""
    global _tuned
    if _tuned is None:
        _tuned = _apply()
    return _tuned


def _apply() -> bool:
    if os.environ.get(ENV_VAR, "").lower() == "system":
        return False
    if any(os.environ.get(name) for name in _USERS_OWN):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc, or no C library to name
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
