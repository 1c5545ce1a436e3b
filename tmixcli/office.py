"""Text of office documents: Word .docx, OpenDocument .odt and PowerPoint .pptx, with the standard library only."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from posixpath import dirname, join, normpath
from xml.etree import ElementTree

from tmixcli.errors import TmixError
from tmixcli.ziputil import Reach, children, join_blocks, member, parse_xml

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
MAX_SPACES = 1000  # most spaces one ODF `text:s` element gives


def docx_text(zf: zipfile.ZipFile, label: str, reach: Reach | None = None) -> str:
    """Body text of a Word document in reading order: paragraphs, tables (rows as `a | b`), content controls;
    footnotes and endnotes become [n] markers where they are cited and a `Notes:` list at the end. Read paragraph
    by paragraph until `reach` says the text is surely past what the model could use."""
    reach = reach or Reach()
    blocks: list[str] = []
    cited: dict[tuple[str, str], int] = {}  # (footnote|endnote, id) -> the number shown, in citation order
    for child in children(zf, "word/document.xml", label, f"{_W}body"):
        _docx_blocks([child], blocks, cited)
        if reach.past(blocks):
            return join_blocks(blocks)
    if cited:
        notes = {**_docx_notes(zf, "footnote", label), **_docx_notes(zf, "endnote", label)}
        blocks += ["Notes:"] + [f"[{n}] {notes.get(ref, '')}".rstrip() for ref, n in cited.items()]
    return join_blocks(blocks)


def _docx_notes(zf: zipfile.ZipFile, kind: str, label: str) -> dict[tuple[str, str], str]:
    """The text of each footnote or endnote by id (word/footnotes.xml, word/endnotes.xml; absent parts: none)."""
    name = f"word/{kind}s.xml"
    if name not in zf.namelist():
        return {}
    root = parse_xml(member(zf, name, label), label)
    return {(kind, note.get(f"{_W}id", "")): " ".join(filter(None, (_docx_paragraph(p, {})
                                                                     for p in note.iter(f"{_W}p"))))
            for note in root.findall(f"{_W}{kind}")}


def _docx_blocks(elements: Iterable[ElementTree.Element], blocks: list[str], cited: dict) -> None:
    """Append the text blocks of `elements` (an element's children): a paragraph or a table per block."""
    for child in elements:
        if child.tag == f"{_W}p":
            blocks.append(_docx_paragraph(child, cited))
        elif child.tag == f"{_W}tbl":
            rows = []
            for row in child.findall(f"{_W}tr"):  # direct rows: a nested table stays inside its cell
                cells = [" ".join(_docx_paragraph(p, cited) for p in cell.iter(f"{_W}p")).strip()
                         for cell in row.findall(f"{_W}tc")]
                rows.append(" | ".join(cells))
            blocks.append("\n".join(r for r in rows if r.strip(" |")))
        else:
            _docx_blocks(child, blocks, cited)


def _docx_paragraph(p: ElementTree.Element, cited: dict) -> str:
    """One paragraph's text: w:t runs, tabs, line breaks, [n] note markers; deleted text (w:delText) and field
    codes are skipped."""
    parts = []
    for node in p.iter():
        if node.tag == f"{_W}t":
            parts.append(node.text or "")
        elif node.tag == f"{_W}tab":
            parts.append("\t")
        elif node.tag in (f"{_W}br", f"{_W}cr"):
            parts.append("\n")
        elif node.tag == f"{_W}noBreakHyphen":
            parts.append("-")
        elif node.tag in (f"{_W}footnoteReference", f"{_W}endnoteReference"):
            ref = (node.tag[len(_W):-len("Reference")], node.get(f"{_W}id", ""))
            parts.append(f"[{cited.setdefault(ref, len(cited) + 1)}]")
    return "".join(parts).strip()


def odt_text(zf: zipfile.ZipFile, label: str, reach: Reach | None = None) -> str:
    """Text of an OpenDocument text file (.odt): headings, paragraphs, list items (`- item`), table rows as
    `a | b`; footnotes as [n] markers and a `Notes:` list; deleted tracked changes skipped. Read paragraph by
    paragraph until `reach` says the text is surely past what the model could use."""
    reach = reach or Reach()
    blocks: list[str] = []
    notes: list[str] = []
    for child in children(zf, "content.xml", label, f"{_OFFICE}body/{_OFFICE}text"):
        try:
            _odt_blocks([child], blocks, notes)
        except ValueError as exc:  # a bad attribute value (_space_count)
            raise TmixError(f"{label} is damaged: {exc}") from None
        if reach.past(blocks):
            return join_blocks(blocks)
    if notes:
        blocks += ["Notes:"] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return join_blocks(blocks)


def _odt_blocks(elements: Iterable[ElementTree.Element], blocks: list[str], notes: list[str],
                item: bool = False) -> None:
    """Append the text blocks of `elements` (an element's children): a paragraph, heading or table row per block."""
    for child in elements:
        if child.tag in (f"{_TEXT}p", f"{_TEXT}h"):
            blocks.append(("- " if item else "") + _odt_inline(child, notes).strip())
            item = False  # only the first paragraph of a list item gets the dash
        elif child.tag == f"{_TABLE}table-row":
            cells = []
            for cell in child.findall(f"{_TABLE}table-cell"):
                inner: list[str] = []
                _odt_blocks(cell, inner, notes)
                cells.append(" ".join(inner))
            blocks.append(" | ".join(cells))
        elif child.tag == f"{_TEXT}tracked-changes":
            continue
        else:
            _odt_blocks(child, blocks, notes, item or child.tag == f"{_TEXT}list-item")


def _odt_inline(element: ElementTree.Element, notes: list[str]) -> str:
    """A paragraph's text: spans and links, `text:s` space runs, tabs, line breaks, footnote markers."""
    parts = [element.text or ""]
    for child in element:
        if child.tag == f"{_TEXT}s":
            parts.append(" " * _space_count(child.get(f"{_TEXT}c")))
        elif child.tag == f"{_TEXT}tab":
            parts.append("\t")
        elif child.tag == f"{_TEXT}line-break":
            parts.append("\n")
        elif child.tag == f"{_TEXT}note":
            body = child.find(f"{_TEXT}note-body")
            inner: list[str] = []
            if body is not None:
                _odt_blocks(body, inner, notes)
            notes.append(" ".join(b for b in inner if b))
            parts.append(f"[{len(notes)}]")
        elif child.tag not in (f"{_TEXT}change", f"{_TEXT}change-start", f"{_TEXT}change-end",
                               f"{_TEXT}bookmark", f"{_TEXT}soft-page-break"):
            parts.append(_odt_inline(child, notes))
        parts.append(child.tail or "")
    return "".join(parts)


def _space_count(value: str | None) -> int:
    """How many spaces a `text:s` element stands for: 1 by default, at most MAX_SPACES (a huge count would
    exhaust memory); ValueError when it is not a number."""
    if not value:
        return 1
    number = value.strip().lstrip("0") or "0"
    if not (number.isascii() and number.isdigit()):
        raise ValueError(f"text:s has a space count that is not a number ({value[:20]!r})")
    return MAX_SPACES if len(number) > 4 else min(int(number), MAX_SPACES)


def pptx_text(zf: zipfile.ZipFile, label: str, reach: Reach | None = None) -> str:
    """Text of a PowerPoint deck in slide order, each slide under a `Slide n` line: its text boxes' paragraphs,
    tables as `a | b` rows, then its speaker notes; hidden slides are left out. Read slide by slide until `reach`
    says the text is surely past what the model could use."""
    reach = reach or Reach()
    pres = parse_xml(member(zf, "ppt/presentation.xml", label), label)
    targets = {rid: target for rid, target, _ in _relationships(zf, "ppt/presentation.xml", label)}
    blocks: list[str] = []
    number = 0
    for sld in pres.iter(f"{_P}sldId"):
        path = targets.get(sld.get(f"{_R}id", ""))
        if path is None:
            continue
        slide = parse_xml(member(zf, path, label), label)
        number += 1
        if slide.get("show") == "0":
            continue
        blocks.append(f"Slide {number}")
        blocks += _pptx_blocks(slide)
        notes = [target for _, target, kind in _relationships(zf, path, label) if kind.endswith("/notesSlide")]
        if notes:
            text = " ".join(b for b in _pptx_blocks(parse_xml(member(zf, notes[0], label), label), notes=True) if b)
            blocks.append(f"Speaker notes: {text}" if text else "")
        if reach.past(blocks):
            break
    return join_blocks(blocks)


def _pptx_blocks(root: ElementTree.Element, notes: bool = False) -> list[str]:
    """Paragraph lines and table rows of one slide (of a notes page: the body text only, no slide image/number)."""
    blocks = []
    for shape in root.iter():
        if shape.tag == f"{_P}sp":
            ph = shape.find(f".//{_P}ph")
            if notes and (ph is None or ph.get("type", "body") != "body"):
                continue
            body = shape.find(f"{_P}txBody")
            if body is not None:
                blocks += [_pptx_paragraph(p) for p in body.findall(f"{_A}p")]
        elif shape.tag == f"{_A}tbl":
            for row in shape.findall(f"{_A}tr"):
                cells = [" ".join(_pptx_paragraph(p) for p in cell.iter(f"{_A}p")).strip()
                         for cell in row.findall(f"{_A}tc")]
                blocks.append(" | ".join(cells))
    return [b for b in blocks if b.strip(" |")]


def _pptx_paragraph(p: ElementTree.Element) -> str:
    """One DrawingML paragraph: its runs (a:t) and line breaks."""
    parts = []
    for node in p.iter():
        if node.tag == f"{_A}t":
            parts.append(node.text or "")
        elif node.tag == f"{_A}br":
            parts.append("\n")
    return "".join(parts).strip()


def _relationships(zf: zipfile.ZipFile, part: str, label: str) -> list[tuple[str, str, str]]:
    """(id, target path, type) of a part's internal relationships (none when it has no .rels file); a target
    written from the package root ("/ppt/slides/slide1.xml") is taken as the archive path it names."""
    rels = join(dirname(part), "_rels", part.rsplit("/", 1)[-1] + ".rels")
    if rels not in zf.namelist():
        return []
    root = parse_xml(member(zf, rels, label), label)
    return [(r.get("Id", ""), normpath(join(dirname(part), r.get("Target", ""))).lstrip("/"), r.get("Type", ""))
            for r in root.iter(f"{_REL}Relationship") if r.get("TargetMode") != "External"]
