"""A filled PDF form's values (AcroForm fields, which page text leaves out) put on the page's lines beside their
labels ("Applicant name: Greta Lindqvist"), or as "field: value" lines where no label sits beside the field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tmixcli.pdflines import Line, PageLines

if TYPE_CHECKING:
    from pypdf import PageObject

_PUSHBUTTON, _RADIO = 1 << 16, 1 << 15  # field flags (/Ff) of a button field
_HIDDEN = 2 | 32  # annotation flags (/F) of a widget no viewer shows: Hidden, NoView


def place_fields(page: PageObject, lines: PageLines) -> None:
    """Put the values of the page's form fields into `lines`: each after the text left of it on the line at its
    height, else at the end of the page."""
    placed: list[tuple[Line, int, str]] = []
    for rect, value, name in _widgets(page):
        line = _line_beside(lines, rect) if lines.placed else None
        if line is None:
            lines.lines.append(Line(f"{name}: {value}"))
        elif value not in line.text:
            placed.append((line, _offset(line, rect[0]), value))
    for line, offset, value in sorted(placed, key=lambda item: -item[1]):
        line.text = f"{line.text[:offset].rstrip()} {value} {line.text[offset:].lstrip()}".strip()


def _widgets(page: PageObject) -> list[tuple[tuple[float, float, float, float], str, str]]:
    """(rectangle, value as text, field name) of each form field widget on the page that has a value."""
    out = []
    try:
        annots = page.get("/Annots")
        annots = annots.get_object() if annots is not None else []
    except Exception:  # noqa: BLE001 - unreadable annotations: no form values
        return out
    for ref in annots:
        try:
            widget = ref.get_object()
            if widget.get("/Subtype") != "/Widget" or int(widget.get("/F", 0)) & _HIDDEN:
                continue
            field = _field(widget)
            value = _value(field)
            if value:
                x0, y0, x1, y1 = (float(v) for v in widget["/Rect"])
                out.append(((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), value, _name(field)))
        except Exception:  # noqa: BLE001 - a damaged widget is left out, the page is still read
            continue
    return out


def _field(widget: Any) -> dict[str, Any]:
    """A widget's field entries, inherited from its parents (/FT, /V, /Ff, /TU) and its full name (/T)."""
    field: dict[str, Any] = {}
    names: list[str] = []
    node, depth = widget, 0
    while node is not None and depth < 20:
        for key in ("/FT", "/V", "/Ff", "/TU", "/AS"):
            if key not in field and key in node:
                field[key] = node[key]
        if "/T" in node:
            names.append(str(node["/T"]))
        parent = node.get("/Parent")
        node, depth = (parent.get_object() if parent is not None else None), depth + 1
    field["/T"] = ".".join(reversed(names))
    field["/AP"] = widget.get("/AP")
    return field


def _value(field: dict[str, Any]) -> str:
    """The text a viewer shows for a field: its value, "[x]"/"[ ]" for a check box, "(x)"/"( )" for a radio
    button; "" for an empty field, a push button or a signature."""
    kind, flags = field.get("/FT"), int(field.get("/Ff", 0) or 0)
    value = field.get("/V")
    if kind == "/Btn":
        if flags & _PUSHBUTTON:
            return ""
        if flags & _RADIO:
            return "(x)" if value is not None and str(value) in _on_states(field) else "( )"
        return "[x]" if str(field.get("/AS", value or "/Off")) != "/Off" else "[ ]"
    if kind not in ("/Tx", "/Ch") or value is None:
        return ""
    items = value if isinstance(value, list) else [value]
    return ", ".join(" ".join(str(item).split()) for item in items if isinstance(item, str))


def _on_states(field: dict[str, Any]) -> set[str]:
    """The state other than /Off a radio button is drawn in when selected (the value that selects it): named by
    its appearances, or by its current state."""
    appearances = field.get("/AP")
    normal = appearances.get_object().get("/N") if appearances is not None else None
    states = {str(key) for key in normal.get_object()} if normal is not None else {str(field.get("/AS", "/Off"))}
    return states - {"/Off"}


def _name(field: dict[str, Any]) -> str:
    """What a field is called: its tooltip (/TU, meant for people), else its name."""
    tooltip = field.get("/TU")
    return " ".join(str(tooltip).split()) if isinstance(tooltip, str) and tooltip.strip() else field["/T"] or "field"


def _line_beside(lines: PageLines, rect: tuple[float, float, float, float]) -> Line | None:
    """The line whose text sits at the field's height (its baseline within the field's box, or just below it)."""
    x0, y0, _, y1 = rect
    slack = 0.25 * (y1 - y0)
    best, best_distance = None, None
    for line in lines.lines:
        for piece in line.pieces:
            if y0 - slack <= piece.y <= y1:
                distance = abs(piece.y - (y0 + slack))
                if best_distance is None or distance < best_distance:
                    best, best_distance = line, distance
    return best


def _offset(line: Line, x: float) -> int:
    """Where in the line's text a value at x goes: after the last piece that starts left of x."""
    offset = 0
    for piece in line.pieces:
        if piece.x < x:
            offset = max(offset, piece.at + len(piece.text))
    return offset
