"""Aligned plain-text tables for the CLI (comparison, inspect, backbones)."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(rows: Sequence[Sequence[str]], *, numeric: bool = True, footer: bool = False) -> str:
    """Header row, a rule, the rows (and a rule before a ``footer`` last row).

    With ``numeric`` every column but the first is right-aligned.

    >>> print(text_table([["a", "n"], ["x", "10"]]))
    a   n
    -----
    x  10
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            c.rjust(w) if numeric and i > 0 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ]
        return "  ".join(cells).rstrip()

    lines = [fmt(r) for r in rows]
    rule = "-" * max(len(line) for line in lines)
    lines.insert(1, rule)
    if footer:
        lines.insert(len(lines) - 1, rule)
    return "\n".join(lines)
