"""Peak resident memory, per phase of a benchmark: the library's measurement (Linux resets
the peak per phase; elsewhere it is process-wide), plus the DataLoader workers' peak."""

from __future__ import annotations

import resource

from headstart.benchmark.measure import peak_rss_mb as peak_mb
from headstart.benchmark.measure import reset_peak

__all__ = ["children_peak_mb", "peak_mb", "reset_peak"]


def children_peak_mb() -> float:
    """Largest peak of any finished child process (DataLoader workers), in MB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
