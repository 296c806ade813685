"""Text that is safe to print: file names are whatever bytes a file system allows.

On Linux a file name may hold bytes that are not UTF-8; Python keeps them as lone
surrogates, which a strict UTF-8 terminal or ``json.dumps(..., ensure_ascii=False)`` refuses.
Control characters (a newline in a name) would break one-line-per-file output.
"""

from __future__ import annotations

import os
from pathlib import Path

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def display(text: str | Path) -> str:
    """``text`` with undecodable bytes as ``\\xNN`` and control characters escaped: printable
    on any terminal and valid in JSON, and still recognisable.

    >>> display("caf\\udce9.jpg"), display("two\\nlines.png")
    ('caf\\\\xe9.jpg', 'two\\\\x0alines.png')
    """
    text = os.fsencode(str(text)).decode("utf-8", "backslashreplace")
    return text.translate(_CONTROL)
