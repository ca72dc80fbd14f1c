"""The one table renderer of the efficiency tools: headers + rows -> Markdown or aligned text.

Cells are formatted by the caller (a string), or by :func:`cell` (None -> "–", floats to 3 significant
digits); the renderer only lays them out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def cell(value: Any, digits: int = 3) -> str:
    """A value as a table cell: None "–", bools yes / **NO**, floats to ``digits`` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else cell(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (``| a | b |`` lines under a ``|---|---|`` rule), no trailing newline."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_text(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """Columns padded to their widest cell, two spaces apart, header first (no rule), no trailing newline.

    ``align``: one letter per column, ``l`` or ``r`` (default: the first column left, the others right).
    A row shorter than the headers (e.g. a name and an error message) leaves its last cell unpadded.
    """
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[_text(c) for c in row] for row in [list(headers), *rows]]
    full = [row for row in cells if len(row) == len(headers)]
    widths = [max(len(row[i]) for row in full) for i in range(len(headers))]
    lines = []
    for row in cells:
        if len(row) < len(headers):
            lines.append("  ".join([*(c.ljust(widths[i]) for i, c in enumerate(row[:-1])), row[-1]]).rstrip())
            continue
        lines.append("  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                               for c, w, a in zip(row, widths, align, strict=True)).rstrip())
    return "\n".join(lines)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False,
          align: str | None = None) -> str:
    """:func:`markdown_table` or :func:`text_table`."""
    return markdown_table(headers, rows) if markdown else text_table(headers, rows, align)
