"""A table row of an office document as one `a | b | c` line, whatever its cells hold (paragraphs, lists, breaks)."""

from __future__ import annotations

from collections.abc import Sequence

BULLET = "- "  # the marker of a bulleted list item, in every format
MAX_SPAN = 64  # most columns one merged or repeated cell stands for


def cell_text(blocks: Sequence[str]) -> str:
    """One cell's text on one line: its paragraphs joined by spaces, one bulleted item to the next by "; " (their
    dashes left out), line breaks and runs of white space as one space."""
    text, bullet = "", False
    for block in blocks:
        block = " ".join(block.split())
        if not block:
            continue
        after_bullet, bullet = bullet, block.startswith(BULLET)
        if bullet:
            block = block[len(BULLET):]
        text += ("; " if bullet and after_bullet else " ") if text else ""
        text += block
    return text


def row_line(cells: Sequence[str]) -> str:
    """A row as `a | b | c`, empty cells kept so that the columns line up ("" when every cell is empty)."""
    return " | ".join(cells).strip(" ") if any(cells) else ""
