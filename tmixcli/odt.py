"""Text of OpenDocument text files (.odt) as a word processor shows them, with the standard library only."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from posixpath import normpath
from xml.etree import ElementTree

from tmixcli.embeds import Embeds
from tmixcli.errors import TmixError
from tmixcli.mathml import MATHML, mathml_text
from tmixcli.odthidden import Hidden, hidden_field, hidden_paragraph, hidden_section
from tmixcli.odtlists import TEXT, ListCount, ListStyles
from tmixcli.tablerow import MAX_SPAN, cell_text, row_line
from tmixcli.ziputil import Reach, children, join_blocks, leading, member, parse_xml, whole_number

_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_STYLE = "{urn:oasis:names:tc:opendocument:xmlns:style:1.0}"
_DRAW = "{urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}"
_SVG = "{urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0}"
_CHART = "{urn:oasis:names:tc:opendocument:xmlns:chart:1.0}"
_XLINK = "{http://www.w3.org/1999/xlink}"
_SKIPPED = {f"{TEXT}tracked-changes", f"{TEXT}change", f"{TEXT}change-start", f"{TEXT}change-end",
            f"{TEXT}bookmark", f"{TEXT}soft-page-break", f"{_OFFICE}annotation", f"{_OFFICE}annotation-end",
            f"{_SVG}title", f"{_SVG}desc"}  # change marks, comments, a shape's title and description: not text
_CELLS = (f"{_TABLE}table-cell", f"{_TABLE}covered-table-cell")
_MARKS = (f"{TEXT}s", f"{TEXT}tab", f"{TEXT}line-break", f"{TEXT}note")  # inline elements that are not text holders
MAX_SPACES = 1000  # most spaces one ODF `text:s` element gives


def odt_text(zf: zipfile.ZipFile, label: str, reach: Reach | None = None, embeds: Embeds | None = None) -> str:
    """Text of an OpenDocument text file: headings, paragraphs, list items (`1. item`, `- item`), table rows as
    `a | b`, text boxes on lines of their own, formulas as linear text, charts as Word's and PowerPoint's are; page
    headers once before it and footers once after it; footnotes as [n] markers and a `Notes:` list. Deleted tracked
    changes, comments and hidden text are left out; so are other embedded objects, counted in `embeds`. Read
    paragraph by paragraph until `reach` says the text is surely past what the model could use."""
    reach = reach or Reach()
    styles = parse_xml(member(zf, "styles.xml", label), label) if "styles.xml" in zf.namelist() else None
    automatic = leading(zf, "content.xml", label, f"{_OFFICE}automatic-styles", f"{_OFFICE}body")
    reader = _Reader(ListCount(ListStyles(automatic, styles)), Hidden(automatic, styles), zf, label,
                     embeds or Embeds())
    try:
        blocks = reader.running(styles, "header")
        for child in children(zf, "content.xml", label, f"{_OFFICE}body/{_OFFICE}text"):
            reader.blocks([child], blocks)
            if reach.past(blocks):
                return join_blocks(blocks)
        blocks += reader.running(styles, "footer")
    except ValueError as exc:  # a bad attribute value (_space_count)
        raise TmixError(f"{label} is damaged: {exc}") from None
    if reader.notes:
        blocks += ["Notes:"] + [f"[{i}] {note}" for i, note in enumerate(reader.notes, 1)]
    return join_blocks(blocks)


class _Reader:
    """Reads the text of one OpenDocument file, keeping what runs through it: its notes and its list numbers;
    `hidden` says which text of its body is hidden."""

    def __init__(self, lists: ListCount, hidden: Hidden, zf: zipfile.ZipFile, label: str, embeds: Embeds) -> None:
        self.lists, self.hidden, self.zf, self.label, self.embeds = lists, hidden, zf, label, embeds
        self.notes: list[str] = []

    def running(self, styles: ElementTree.Element | None, kind: str) -> list[str]:
        """The text of the page headers or footers (`kind`) of styles.xml's master pages, each different one once
        (first-page and left-page ones included; those switched off left out), hidden text as styles.xml's
        automatic styles say."""
        texts: list[str] = []
        body = self.hidden
        self.hidden = Hidden(None if styles is None else styles.find(f"{_OFFICE}automatic-styles"), styles)
        for page in [] if styles is None else styles.iter(f"{_STYLE}master-page"):
            for part in page:
                if part.tag.startswith(f"{_STYLE}{kind}") and part.get(f"{_STYLE}display") != "false":
                    inner: list[str] = []
                    self.blocks(part, inner)
                    text = join_blocks(inner)
                    if text and text not in texts:
                        texts.append(text)
        self.hidden = body
        return texts

    def blocks(self, elements: Iterable[ElementTree.Element], out: list[str], marker: str = "",
               depth: int = 0, style: str = "") -> None:
        """Append the text blocks of `elements` (an element's children): a paragraph, heading or table row per
        block, hidden paragraphs and sections left out; `marker` goes before the first paragraph (a list item's),
        inside lists `depth` deep of `style`."""
        for child in elements:
            if child.tag in (f"{TEXT}p", f"{TEXT}h"):
                boxes: list[str] = []
                hidden = self.hidden.paragraph(child)
                text = "" if hidden_paragraph(child) else self.inline(child, boxes, hidden).strip()
                out.append(marker + text if text else "")
                out += boxes
                marker = ""
            elif child.tag == f"{_TABLE}table-row":
                out.append(self.row(child))
            elif child.tag == f"{TEXT}list":
                self.list(child, out, depth + 1, child.get(f"{TEXT}style-name") or style)
            elif child.tag in (f"{_DRAW}object", f"{_DRAW}object-ole"):
                out += self.object(child)
            elif child.tag not in _SKIPPED and not (child.tag == f"{TEXT}section" and hidden_section(child)):
                self.blocks(child, out, marker, depth, style)

    def list(self, lst: ElementTree.Element, out: list[str], depth: int, style: str) -> None:
        """Append the items of a list, each with its marker."""
        number = self.lists.opened(lst, style, depth)
        for item in lst:
            if item.tag == f"{TEXT}list-item":
                marker, number = self.lists.marker(item, style, depth, number)
                self.blocks(item, out, marker, depth, style)
            else:  # a list header (no number) or the list's title
                self.blocks(item, out, "", depth, style)

    def row(self, row: ElementTree.Element) -> str:
        """A table row as `a | b`: cells repeated as often as they say, a cell covered by a merged one empty."""
        cells = []
        for cell in row:
            if cell.tag in _CELLS:
                inner: list[str] = []
                self.blocks(cell, inner)
                repeat = min(max(whole_number(cell.get(f"{_TABLE}number-columns-repeated"), 1), 1), MAX_SPAN)
                cells += [cell_text(inner)] * repeat
        return row_line(cells)

    def inline(self, element: ElementTree.Element, boxes: list[str], hidden: bool = False) -> str:
        """A paragraph's text: spans and links, `text:s` space runs, tabs, line breaks, footnote markers; the
        paragraphs of its text boxes and shapes go to `boxes`. Text its styles hide (`hidden`: the enclosing
        element's do) is left out, with its notes and boxes."""
        parts = [] if hidden else [element.text or ""]
        for child in element:
            if child.tag in _MARKS or child.tag.startswith(_DRAW):
                parts.append("" if hidden else self.mark(child, boxes))
            elif child.tag not in _SKIPPED and not hidden_field(child):
                parts.append(self.inline(child, boxes, self.hidden.text(child, hidden)))
            parts.append("" if hidden else child.tail or "")
        return "".join(parts)

    def mark(self, child: ElementTree.Element, boxes: list[str]) -> str:
        """The text of an inline element that holds no text of its own: spaces, a tab, a line break, a footnote's
        [n] marker (its note kept for the `Notes:` list), a formula; a text box or shape's paragraphs go to
        `boxes`."""
        if child.tag == f"{TEXT}s":
            return " " * _space_count(child.get(f"{TEXT}c"))
        if child.tag == f"{TEXT}tab":
            return "\t"
        if child.tag == f"{TEXT}line-break":
            return "\n"
        if child.tag == f"{TEXT}note":
            body = child.find(f"{TEXT}note-body")
            inner: list[str] = []
            if body is not None:
                self.blocks(body, inner)
            self.notes.append(" ".join(b for b in inner if b))
            return f"[{len(self.notes)}]"
        if child.tag == f"{_DRAW}frame" and (formula := self.formula(child)) is not None:
            return formula
        self.blocks(child, boxes)
        return ""

    def formula(self, frame: ElementTree.Element) -> str | None:
        """The linear text of the formula a frame shows (None: it shows none)."""
        for obj in frame.findall(f"{_DRAW}object"):
            content = self.content(obj)
            if content is not None and content.tag == f"{MATHML}math":
                return mathml_text(content)
        return None

    def object(self, obj: ElementTree.Element) -> list[str]:
        """The lines of an embedded object: a chart's title and its data rows (the table it keeps), a formula, a
        text or spreadsheet's blocks; any other (an OLE object, a drawing) is counted as left out."""
        content = None if obj.tag == f"{_DRAW}object-ole" else self.content(obj)
        if content is not None and content.tag == f"{MATHML}math":
            return [mathml_text(content)]
        body = None if content is None else content.find(f"{_OFFICE}body")
        parts = [] if body is None else list(body)
        for part in parts:
            if part.tag == f"{_OFFICE}chart":
                title = part.find(f"{_CHART}chart/{_CHART}title")
                name = "" if title is None else " ".join(" ".join(title.itertext()).split())
                lines = [f"Chart: {name}" if name else "Chart:"]
                for table in part.iter(f"{_TABLE}table"):
                    self.blocks(table, lines)
                return lines
            if part.tag in (f"{_OFFICE}text", f"{_OFFICE}spreadsheet"):
                inner: list[str] = []
                self.blocks(part, inner)
                return inner
        what = parts[0].tag.rpartition("}")[2] if parts else "object"  # "drawing", "presentation", ...
        self.embeds.left.add("object", "OLE object" if obj.tag == f"{_DRAW}object-ole" else what)
        return []

    def content(self, obj: ElementTree.Element) -> ElementTree.Element | None:
        """The content of a draw:object: written inside it (a flat file), else its sub-document's content.xml
        ("Object 1/content.xml"); None where it has none."""
        inside = next(iter(obj), None)
        if inside is not None:
            return inside
        part = normpath(obj.get(f"{_XLINK}href", "").removeprefix("./")).strip("/") + "/content.xml"
        return parse_xml(member(self.zf, part, self.label), self.label) if part in self.zf.namelist() else None


def _space_count(value: str | None) -> int:
    """How many spaces a `text:s` element stands for: 1 by default, at most MAX_SPACES (a huge count would
    exhaust memory); ValueError when it is not a number."""
    if not value:
        return 1
    number = value.strip().lstrip("0") or "0"
    if not (number.isascii() and number.isdigit()):
        raise ValueError(f"text:s has a space count that is not a number ({value[:20]!r})")
    return MAX_SPACES if len(number) > 4 else min(int(number), MAX_SPACES)
