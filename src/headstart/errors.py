"""One exception family. Every message says what is wrong, where, and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HeadstartError(Exception):
    """Base class: the CLI prints these as one paragraph and exits non-zero, no traceback."""


class UnknownBackbone(HeadstartError, KeyError):
    """A backbone name that is not in the registry."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        super().__init__(
            f"UnknownBackbone: {name!r}{hint}. Known backbones: {', '.join(known)}. "
            "Run `headstart backbones` to list them with their weights."
        )

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0])


class WeightsUnavailable(HeadstartError):
    """Pretrained weights that cannot be found locally or downloaded."""


class DataError(HeadstartError):
    """A dataset folder, CSV or image that cannot be used as given."""


class CheckpointError(HeadstartError):
    """A run folder or checkpoint that is missing, incomplete or corrupt."""


class ConfigError(HeadstartError):
    """An option or YAML config value that is not valid."""


class ExportError(HeadstartError):
    """An export that failed, or whose verification against PyTorch failed."""


class Interrupted(HeadstartError):
    """Ctrl-C during training: it stopped after a step and saved a state to resume from."""
