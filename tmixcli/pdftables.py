"""Table rows on a PDF page as `a | b | c` lines, as the office formats give them (tablerow). A row is a line drawn
in separate pieces whose columns line up with the line above or below it; prose, lists and lone lines stay as they
are, so only the separators change, never the words."""

from __future__ import annotations

import re

from tmixcli.pdflines import PageLines, Piece
from tmixcli.tablerow import row_line

_CHAR_EM = 0.5  # a character's width guessed in ems (as pdfrunning guesses it)
_LEFT_EM = 0.3  # how far left edges of one column may differ, in ems
_EDGE_EM = 1.0  # how far guessed right edges or middles of one column may differ, in ems
_SAME_LINE_EM = 0.3  # pieces of one row stand on one baseline, within this
_SHORT = 12  # longest cell (characters) whose guessed width is trusted to line up right edges or middles
_GAP_EM = 1.0  # least guessed space after a one-character cell, in ems; less by _GAP_SLACK_EM for each more character
_GAP_SLACK_EM = 0.05  # (a longer cell's width is guessed less closely: its columns must line up by their left edges)
_MARKER = re.compile(r"[^\w\s]|[oO]|\(?[0-9A-Za-z]{1,3}[.)]|\d+(\.\d+)+\.?")  # a list's bullet ("o" too) or number,
# a heading's number ("1.1"), standing apart
_PROSE_WORDS = 6  # a cell of this many words or more is a line of prose; a row of two such is page columns, no table
_LEADER = re.compile(r"[.\s·…_-]+")  # a table of contents' dot leader


Row = list[tuple[str, Piece]]  # a row's cells: text and the piece it starts with


def mark_tables(page: PageLines) -> None:
    """Rewrite, in place, every line of the page whose cells line up with a neighbouring line's as `a | b | c`; a
    row with empty cells next to such a line keeps them in place (`South | | | 98 | 101`), as the office formats do."""
    rows = [_cells(line.text, line.pieces) for line in page.lines]
    columns: dict[int, Row] = {}  # each table row's columns: its own cells, or a fuller neighbour's
    for i, row in enumerate(rows):
        near = [rows[j] for j in (i - 1, i + 1) if 0 <= j < len(rows) and rows[j] is not None]
        if row is not None and any(_aligned(row, other) or _slots(other, row) is not None for other in near):
            columns[i] = row
    texts = {i: [text for text, _ in row] for i, row in columns.items()}
    for order in (range(len(rows)), range(len(rows) - 1, -1, -1)):  # tables grow down, then up
        for i in order:
            for j in (i - 1, i + 1) if i not in columns and rows[i] is not None else ():
                slots = _slots(rows[i], columns[j]) if j in columns else None
                if slots is not None:
                    columns[i], texts[i] = columns[j], slots
                    break
    _fill_sparse(rows, columns, texts)
    for i, cells in texts.items():
        page.lines[i].text = row_line(cells)


def _cells(text: str, pieces: list[Piece]) -> Row | None:
    """A line's cells: each drawn piece's text up to the next piece, with the piece; None for a line that cannot be a
    row (fewer than two pieces, pieces off one baseline, out of order or touching, text changed since it was drawn,
    a list item, a contents line)."""
    drawn = [piece for piece in pieces if piece.text.strip()]
    if len(drawn) < 2 or any(text[p.at:p.at + len(p.text)] != p.text for p in drawn):
        return None
    size = max(p.size for p in drawn)
    if any(abs(p.y - drawn[0].y) > _SAME_LINE_EM * size or q.x <= p.x for p, q in zip(drawn, drawn[1:])):
        return None
    cells = [(text[p.at:q.at].strip(), p) for p, q in zip(drawn, drawn[1:])]
    cells.append((text[drawn[-1].at:].strip(), drawn[-1]))
    if _MARKER.fullmatch(cells[0][0]) or any(_LEADER.fullmatch(cell) for cell, _ in cells):
        return None
    if sum(len(cell.split()) >= _PROSE_WORDS for cell, _ in cells) >= 2:
        return None  # text columns side by side (a two-column page), read across
    if any(q.x - p.x - _CHAR_EM * p.size * len(cell) < (_GAP_EM - _GAP_SLACK_EM * len(cell)) * p.size
           for (cell, p), (_, q) in zip(cells, cells[1:])):
        return None  # pieces that touch: one word drawn in parts (a name in another font), not cells
    return cells


def _aligned(row: Row, other: Row) -> bool:
    """Whether two rows have the same number of cells and each column lines up: left edges, or (numbers, centred
    headings) their guessed right edges or middles."""
    if len(other) != len(row):
        return False
    return all(_same_column(a, b) for a, b in zip(row, other))


def _fill_sparse(rows: list[Row | None], columns: dict[int, Row], texts: dict[int, list[str]]) -> None:
    """Rows of a table that lined up only with each other ("Subtotal | 2.00" over "Total | 3.20" below a full row)
    placed in the columns of the fullest row of their run of table lines, empty cells kept."""
    run: list[int] = []
    for i in [*sorted(columns), -2]:  # -2: ends the last run
        if run and i != run[-1] + 1:
            fullest = max(run, key=lambda j: len(columns[j]))
            for j in run:
                slots = _slots(rows[j], columns[fullest]) if len(texts[j]) < len(columns[fullest]) else None
                if slots is not None:
                    columns[j], texts[j] = columns[fullest], slots
            run = []
        run.append(i)


def _slots(row: Row, columns: Row) -> list[str] | None:
    """The row's cells placed in a fuller row's columns, "" where it has none; None unless every cell falls in a
    column of its own, in order."""
    if not 2 <= len(row) < len(columns):
        return None
    slots: list[str] = []
    for cell in row:
        while len(slots) < len(columns) and not _same_column(cell, columns[len(slots)]):
            slots.append("")
        if len(slots) == len(columns):
            return None
        slots.append(cell[0])
    return slots + [""] * (len(columns) - len(slots))


def _same_column(a: tuple[str, Piece], b: tuple[str, Piece]) -> bool:
    """Whether two cells stand in one column: by their left edges, or, for short cells (numbers, headings), whose
    width is guessed closely enough, by their right edges or middles."""
    (text_a, pa), (text_b, pb) = a, b
    em = max(pa.size, pb.size)
    if abs(pa.x - pb.x) <= _LEFT_EM * em:
        return True
    if max(len(text_a), len(text_b)) > _SHORT:
        return False
    wide_a, wide_b = _CHAR_EM * pa.size * len(text_a), _CHAR_EM * pb.size * len(text_b)
    return (abs(pa.x + wide_a - pb.x - wide_b) <= _EDGE_EM * em
            or abs(pa.x + wide_a / 2 - pb.x - wide_b / 2) <= _EDGE_EM * em)
