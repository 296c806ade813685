"""The manifest's schema: every field a reader relies on, checked before anything uses it.

A manifest is user-editable JSON, so a value of the wrong type (``tasks`` as a list, an
empty ``preprocessing``) must stop at the boundary as a CheckpointError naming the field,
not as a ``TypeError`` three modules later.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headstart.errors import CheckpointError

Check = Callable[[Any], str | None]  # None when the value is valid, else what was expected


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


def _positive_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
    return None if ok else "a positive integer"


def _number(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return None if ok else "a finite number"


def _sha256(v: Any) -> str | None:
    ok = isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
    return None if ok else "64 lowercase hex digits (a SHA-256)"


def _tasks(v: Any) -> str | None:
    expected = 'a mapping of task name to a list of 2+ class names, e.g. {"class": ["a", "b"]}'
    if not isinstance(v, dict) or not v:
        return expected
    for task, classes in v.items():
        if not isinstance(task, str) or not isinstance(classes, list) or len(classes) < 2:
            return expected
        if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            return expected + " (distinct strings)"
    return None


def _triple(v: Any, positive: bool) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 3
        and all(_number(x) is None and (x > 0 or not positive) for x in v)
    )


def _preprocessing(v: Any) -> str | None:
    expected = (
        "a mapping with input_size and resize_size (positive integers), interpolation "
        "(bilinear, bicubic or nearest), mean and std (three numbers each, std > 0)"
    )
    if not isinstance(v, dict):
        return expected
    ok = (
        _positive_int(v.get("input_size")) is None
        and _positive_int(v.get("resize_size")) is None
        and v.get("interpolation") in ("bilinear", "bicubic", "nearest")
        and _triple(v.get("mean"), positive=False)
        and _triple(v.get("std"), positive=True)
    )
    return None if ok else expected


def _optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def _mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) else "a mapping"


REQUIRED: dict[str, Check] = {
    "format": _string,
    "backbone": _string,
    "num_features": _positive_int,
    "tasks": _tasks,
    "preprocessing": _preprocessing,
}
OPTIONAL: dict[str, Check] = {
    "weights_sha256": _sha256,
    "dropout": _number,
    "family": _string,
    "strategy": _mapping,
    "metrics": _mapping,
    "data": _mapping,
    "best_epoch": _positive_int,
    "class_to_idx": _mapping,
    "augment": lambda v: (
        None if v in ("photo", "aerial", "texture", "none") else "photo, aerial, texture or none"
    ),
    "layers": lambda v: None if v in ("last", "all") else "last or all",
    "temperature": lambda v: (
        None
        if isinstance(v, dict) and all(_number(t) is None and t > 0 for t in v.values())
        else "a mapping of task to a positive number"
    ),
    "thresholds": lambda v: (
        None
        if isinstance(v, dict) and all(_number(t) is None and 0 < t < 1 for t in v.values())
        else "a mapping of task to a number between 0 and 1"
    ),
}


def validate_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """Return ``manifest`` if every field a reader uses has the right type, else raise a
    CheckpointError naming the first bad field, what it holds and what it should hold."""
    fix = "Restore the run folder from a backup or train again."
    if not isinstance(manifest, dict):
        raise CheckpointError(
            f"CheckpointError: {path} holds a JSON {type(manifest).__name__}, not an object. {fix}"
        )
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise CheckpointError(
            f"CheckpointError: {path} lacks {missing}; it was not written by headstart or is "
            f"damaged. {fix}"
        )
    checks = {**REQUIRED, **{k: _optional(c) for k, c in OPTIONAL.items()}}
    for field, check in checks.items():
        expected = check(manifest.get(field))
        if expected is not None:
            got = repr(manifest.get(field))
            got = got if len(got) <= 80 else got[:77] + "..."
            raise CheckpointError(
                f"CheckpointError: {path}: field {field!r} is {got}; expected {expected}. {fix}"
            )
    tasks = manifest["tasks"]
    for task in manifest.get("thresholds") or {}:  # a threshold decides a two-class task
        if len(tasks.get(task) or ()) != 2:
            raise CheckpointError(
                f"CheckpointError: {path}: field 'thresholds' names {task!r}, which is not a "
                f"two-class task of this model. {fix}"
            )
    return manifest


def rounded(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with its floats (nested mappings' too) rounded to 6 digits, as the manifest
    records a fit's figures.

    >>> rounded({"t": 0.12345678, "fit": {"f1": 2 / 3}, "n": 3})
    {'t': 0.123457, 'fit': {'f1': 0.666667}, 'n': 3}
    """
    return {
        k: rounded(v) if isinstance(v, dict) else round(v, 6) if isinstance(v, float) else v
        for k, v in d.items()
    }
