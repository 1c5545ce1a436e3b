"""Text of Word documents (.docx) as Word shows them with tracked changes accepted, with the standard library only."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from xml.etree import ElementTree

from tmixcli.charts import graphic_lines
from tmixcli.docxhidden import Hidden
from tmixcli.docxlists import Numbering
from tmixcli.docxsymbols import symbol_text
from tmixcli.embeds import Embeds
from tmixcli.omml import math_text
from tmixcli.ooxml import VML_O, A, M, MC, R, W, branch, relationships
from tmixcli.tablerow import MAX_SPAN, cell_text, row_line
from tmixcli.ziputil import Reach, children, join_blocks, member, parse_xml, whole_number

_REMOVED = {f"{W}del", f"{W}moveFrom", f"{W}delText", f"{W}instrText", f"{W}delInstrText", f"{W}rPr", f"{W}pPr",
            f"{W}rt"}  # deleted or moved-away text, field codes, properties, ruby guide text: not shown as text
_WRAPPERS = {f"{W}sdt", f"{W}sdtContent", f"{W}customXml", f"{W}smartTag"}  # hold rows or cells of a table
_OBJECTS = {f"{VML_O}OLEObject", f"{W}objectEmbed", f"{W}objectLink"}  # the file of an OLE object (w:object)


def docx_text(zf: zipfile.ZipFile, label: str, reach: Reach | None = None, embeds: Embeds | None = None) -> str:
    """Body text of a Word document in reading order: paragraphs (list items with their "1. " or "- "), tables
    (rows as `a | b`), text boxes, equations, charts, diagrams and the embedded files `embeds` reads; page headers
    once before it and footers once after it; footnotes and endnotes as [n] markers where they are cited and a
    `Notes:` list at the end. Deleted, moved-away and hidden text and comments are left out; so are the charts and
    embedded files that cannot be read, counted in `embeds`. Read paragraph by paragraph until `reach` says the text
    is surely past what the model could use."""
    reach = reach or Reach()
    reader = _Reader(zf, label, embeds or Embeds())
    blocks = reader.running("header")
    for child in children(zf, "word/document.xml", label, f"{W}body"):
        reader.blocks([child], blocks)
        if reach.past(blocks):
            return join_blocks(blocks)
    blocks += reader.running("footer")
    if reader.cited:
        notes = {**reader.notes("footnote"), **reader.notes("endnote")}
        blocks += ["Notes:"] + [f"[{n}] {notes.get(ref, '')}".rstrip() for ref, n in reader.cited.items()]
    return join_blocks(blocks)


class _Reader:
    """Reads the parts of one Word document, keeping what runs through them: the note numbers cited, the list
    counts, the relationships of the part being read (where its charts and embedded files are)."""

    def __init__(self, zf: zipfile.ZipFile, label: str, embeds: Embeds) -> None:
        self.zf, self.label, self.embeds = zf, label, embeds
        self.cited: dict[tuple[str, str], int] = {}  # (footnote|endnote, id) -> the number shown, in citation order
        styles = parse_xml(member(zf, "word/styles.xml", label), label) if "word/styles.xml" in zf.namelist() else None
        self.numbering = Numbering(styles, zf, label)
        self.hidden = Hidden(styles)
        self.rels = relationships(zf, "word/document.xml", label)
        self.targets = {rid: target for rid, target, _ in self.rels}

    def running(self, kind: str) -> list[str]:
        """The text of the page headers or footers (`kind`), each different one once, in part name order."""
        texts: list[str] = []
        body_targets = self.targets
        for part in sorted({t for _, t, rel in self.rels if rel.endswith(f"/{kind}")}, key=lambda t: (len(t), t)):
            if part in self.zf.namelist():
                self.targets = {rid: target for rid, target, _ in relationships(self.zf, part, self.label)}
                inner: list[str] = []
                self.blocks(parse_xml(member(self.zf, part, self.label), self.label), inner)
                text = join_blocks(inner)
                if text and text not in texts:
                    texts.append(text)
        self.targets = body_targets
        return texts

    def notes(self, kind: str) -> dict[tuple[str, str], str]:
        """The text of each footnote or endnote by id (word/footnotes.xml, word/endnotes.xml; absent parts: none)."""
        name = f"word/{kind}s.xml"
        if name not in self.zf.namelist():
            return {}
        found = {}
        for note in parse_xml(member(self.zf, name, self.label), self.label).findall(f"{W}{kind}"):
            inner: list[str] = []
            self.blocks(note, inner)
            found[(kind, note.get(f"{W}id", ""))] = " ".join(b for b in inner if b)
        return found

    def blocks(self, elements: Iterable[ElementTree.Element], out: list[str]) -> None:
        """Append the text blocks of `elements` (an element's children): a paragraph or a table per block."""
        for child in elements:
            if child.tag == f"{W}p":
                self.paragraph(child, out)
            elif child.tag == f"{W}tbl":
                out.append(self.table(child))
            elif child.tag == f"{W}altChunk":  # a file Word shows as part of the text (an HTML page, a .docx)
                out += self.embeds.imported(self.zf, self.targets.get(child.get(f"{R}id", "")), self.label)
            elif child.tag == f"{MC}AlternateContent":
                chosen = branch(child)
                if chosen is not None:
                    self.blocks(chosen, out)
            elif child.tag not in _REMOVED:
                self.blocks(child, out)

    def paragraph(self, p: ElementTree.Element, out: list[str]) -> None:
        """Append a paragraph (after its list marker, if it is a list item with text), then the paragraphs of the
        text boxes and the lines of the charts in it, each on its own line."""
        boxes: list[str] = []
        text = self.inline(p, boxes, self.hidden.paragraph(p)).strip()
        out.append(self.numbering.marker(p) + text if text else "")
        out += boxes

    def inline(self, element: ElementTree.Element, boxes: list[str], styled: bool) -> str:
        """The text of a paragraph's content: runs (but hidden ones; `styled`: the paragraph's styles hide them),
        tabs, line breaks, symbols, [n] note markers, equations as linear text; text boxes, charts, diagrams and
        embedded files go to `boxes`."""
        parts = []
        for node in element:
            tag = node.tag
            if tag in _REMOVED or tag == f"{W}r" and self.hidden.run(node, styled):
                continue
            if tag == f"{W}t":
                parts.append(node.text or "")
            elif tag == f"{W}tab":
                parts.append("\t")
            elif tag in (f"{W}br", f"{W}cr"):
                parts.append("\n")
            elif tag == f"{W}noBreakHyphen":
                parts.append("-")
            elif tag == f"{W}sym":
                parts.append(symbol_text(node))
            elif tag in (f"{W}footnoteReference", f"{W}endnoteReference"):
                ref = (tag[len(W):-len("Reference")], node.get(f"{W}id", ""))
                parts.append(f"[{self.cited.setdefault(ref, len(self.cited) + 1)}]")
            elif tag in (f"{M}oMath", f"{M}oMathPara"):
                parts.append(math_text(node))
            elif tag == f"{W}txbxContent":
                self.blocks(node, boxes)
            elif tag == f"{MC}AlternateContent":
                chosen = branch(node)
                parts.append("" if chosen is None else self.inline(chosen, boxes, styled))
            elif tag in _OBJECTS:
                linked = tag == f"{W}objectLink" or node.get("Type") == "Link"
                part = None if linked else self.targets.get(node.get(f"{R}id", ""))
                program = node.get("ProgID") or node.get(f"{W}progId") or node.get("progId", "")
                boxes += self.embeds.object(self.zf, part, program, self.label)
            else:
                if tag == f"{A}graphicData":
                    boxes += graphic_lines(node, self.targets, self.zf, self.label, self.embeds.left)
                parts.append(self.inline(node, boxes, styled))
        return "".join(parts)

    def table(self, tbl: ElementTree.Element) -> str:
        """A table's rows as `a | b` lines (a merged cell followed by empty ones, so that the columns line up);
        rows deleted as a tracked change are left out."""
        rows = []
        for row in _within(tbl, f"{W}tr"):
            if row.find(f"{W}trPr/{W}del") is not None:
                continue
            cells: list[str] = []
            for cell in _within(row, f"{W}tc"):
                inner: list[str] = []
                self.blocks(cell, inner)
                span = cell.find(f"{W}tcPr/{W}gridSpan")
                width = 1 if span is None else min(max(whole_number(span.get(f"{W}val"), 1), 1), MAX_SPAN)
                cells += [cell_text(inner)] + [""] * (width - 1)
            rows.append(row_line(cells))
        return "\n".join(r for r in rows if r)


def _within(element: ElementTree.Element, tag: str) -> Iterator[ElementTree.Element]:
    """The children of `element` with `tag`, also those inside content controls and custom XML (not in a nested
    table)."""
    for child in element:
        if child.tag == tag:
            yield child
        elif child.tag in _WRAPPERS:
            yield from _within(child, tag)

