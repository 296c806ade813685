"""Peak resident memory, per phase of a benchmark (Linux; elsewhere the process-wide peak)."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def reset_peak() -> None:
    """Start a new peak-RSS measurement (writing 5 to clear_refs resets VmHWM on Linux)."""
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the peak is process-wide
        _CLEAR.write_text("5")


def peak_mb() -> float:
    """Peak resident memory of this process since the last reset, in MB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_mb() -> float:
    """Largest peak of any finished child process (DataLoader workers), in MB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
