"""A PDF page's text as lines that know where they sit: pypdf's text visitor gives every piece of text its position
and font size, which running headers and footers (pdfrunning) and form values (pdfforms) are placed by."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pypdf import PageObject

_TILT = 1e-3  # largest shear in a text matrix still read as upright text


@dataclass
class Piece:
    """A run of text that pypdf drew in one go: its start (x, y in user space), font size as drawn and where it
    starts in its line's text."""

    text: str
    x: float
    y: float
    size: float
    at: int = 0


@dataclass
class Line:
    """One line of a page's text; `top` is its height on the page from the top edge, as a fraction of the page's
    height (None: unknown), `size` its largest font size."""

    text: str
    top: float | None = None
    size: float = 0.0
    pieces: list[Piece] = field(default_factory=list)


@dataclass
class PageLines:
    """A page's lines in pypdf's reading order, its box (x0, y0, x1, y1), whether its lines have positions
    (pypdf's pieces of text add up to its text), and whether the page shows an image."""

    lines: list[Line]
    box: tuple[float, float, float, float]
    placed: bool
    images: bool

    def text(self) -> str:
        """The page's text as pypdf extracted it."""
        return "\n".join(line.text for line in self.lines)


def page_lines(page: PageObject) -> PageLines:
    """The lines of a page's text (pypdf's plain extraction), each with the pieces it was drawn from; a line with
    text drawn turned (a watermark, a margin note) gets no position."""
    chunks: list[tuple[str, Piece | None]] = []

    def visit(text: str, cm: Any, tm: Any, _font: Any, size: Any) -> None:
        chunks.append((text, _piece(text, cm, tm, size)))

    text = page.extract_text(visitor_text=visit)
    try:
        x0, y0, x1, y1 = (float(v) for v in page.cropbox)
    except Exception:  # noqa: BLE001 - a damaged page box: the text is read, without positions
        x0 = y0 = x1 = y1 = 0.0
    bottom, top = min(y0, y1), max(y0, y1)
    placed = "".join(chunk[0] for chunk in chunks) == text and top - bottom > 0
    lines = _split(chunks) if placed else [Line(part) for part in text.split("\n")]
    for line in lines:
        if line.pieces:
            line.top = (top - line.pieces[0].y) / (top - bottom)
            line.size = max(piece.size for piece in line.pieces)
    return PageLines(lines, (min(x0, x1), bottom, max(x0, x1), top), placed, _has_image(page))


def _piece(text: str, cm: Any, tm: Any, size: Any) -> Piece | None:
    """Where pypdf drew `text` (the text matrix times the transformation matrix); None when that is not upright
    (turned or mirrored text) or unreadable."""
    try:
        a, b, c, d, e, f = (float(v) for v in tm)
        ca, cb, cc, cd, ce, cf = (float(v) for v in cm)
        size = float(size)
    except (TypeError, ValueError):
        return None
    ma, mb, mc, md = a * ca + b * cc, a * cb + b * cd, c * ca + d * cc, c * cb + d * cd
    if ma <= 0 or md <= 0 or abs(mb) > _TILT * ma or abs(mc) > _TILT * md:
        return None
    return Piece(text, e * ca + f * cc + ce, e * cb + f * cd + cf, size * md)


def _split(chunks: list[tuple[str, Piece | None]]) -> list[Line]:
    """Cut the visited chunks into lines at their newlines, a chunk's position going with its text; a line with a
    piece of text drawn without a position keeps no pieces (so gets no position)."""
    lines, lost = [Line("")], set()
    for text, piece in chunks:
        for i, part in enumerate(text.split("\n")):
            if i:
                lines.append(Line(""))
            if part.strip():
                if piece is None:
                    lost.add(len(lines) - 1)
                else:
                    lines[-1].pieces.append(Piece(part, piece.x, piece.y, piece.size, len(lines[-1].text)))
            lines[-1].text += part
    for i in lost:
        lines[i].pieces = []
    return lines


def _has_image(page: PageObject, depth: int = 0) -> bool:
    """Whether the page (or a form it draws, 3 levels deep) uses an image XObject."""
    try:
        xobjects = page["/Resources"].get_object().get("/XObject")
        items = xobjects.get_object().values() if xobjects is not None else []
        for ref in items:
            obj = ref.get_object()
            kind = obj.get("/Subtype")
            if kind == "/Image" or (kind == "/Form" and depth < 3 and _has_image(obj, depth + 1)):
                return True
    except Exception:  # noqa: BLE001 - an odd resource dictionary: no image known
        return False
    return False
