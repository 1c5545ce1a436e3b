"""Text of markup documents: Word .docx, OpenDocument .odt, HTML and EPUB, with the standard library only.

Each reader returns plain text with one paragraph per line (table rows become `a | b | c` lines, list items
`- item`), as PDF text comes out: no blank lines between paragraphs, which the small default model reads
markedly better (on the sample report it answers the revenue question right with single newlines and wrong,
dense attention included, with blank lines). Any failure is a one-line TmixError naming the
file; an empty result is the caller's to refuse.
"""

from __future__ import annotations

import io
import re
import zipfile
from html.parser import HTMLParser
from posixpath import dirname, join, normpath
from urllib.parse import unquote
from xml.etree import ElementTree

from tmixcli.errors import TmixError

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_ODT_MIME = b"application/vnd.oasis.opendocument.text"
_MAX_MEMBER = 256 * 1024 * 1024  # bytes of one uncompressed ZIP member (guards against zip bombs)
_SPACES = re.compile(r"[ \t\n\r\f\u00a0]+")
_BLOCK_TAGS = {"address", "article", "aside", "blockquote", "body", "caption", "dd", "div", "dl", "dt",
               "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
               "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul"}
_SKIP_TAGS = {"head", "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "nav"}
_OPTIONAL_END = {"p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option", "optgroup",
                 "colgroup", "caption", "rt", "rp", "html", "body"}  # end tags HTML lets pages leave out
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
FORMATS = "PDF, .docx, .odt, .epub, HTML or UTF-8 text"  # what tmix reads, for error messages
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def zip_document_text(raw: bytes, label: str) -> str:
    """Text of a ZIP-based document: .docx, .odt or .epub; other archives are refused by what they hold."""
    with _open_zip(raw, label) as zf:
        names = set(zf.namelist())
        if "word/document.xml" in names:
            return docx_text(zf, label)
        if "META-INF/container.xml" in names:
            return epub_text(zf, label)
        if "content.xml" in names and "mimetype" in names and zf.read("mimetype").strip() == _ODT_MIME:
            return odt_text(zf, label)
    kind = ("an Excel workbook (.xlsx)" if "xl/workbook.xml" in names else
            "a PowerPoint file (.pptx)" if "ppt/presentation.xml" in names else
            "an OpenDocument spreadsheet or presentation" if "content.xml" in names else "a ZIP archive")
    raise TmixError(f"{label} is {kind}; tmix reads {FORMATS}")


def docx_text(zf: zipfile.ZipFile, label: str) -> str:
    """Body text of a Word document in reading order: paragraphs, tables (rows as `a | b`), content controls;
    footnotes and endnotes become [n] markers where they are cited and a `Notes:` list at the end."""
    root = _xml(_member(zf, "word/document.xml", label), label)
    body = root.find(f"{_W}body")
    blocks: list[str] = []
    cited: dict[tuple[str, str], int] = {}  # (footnote|endnote, id) -> the number shown, in citation order
    if body is not None:
        _docx_blocks(body, blocks, cited)
    if cited:
        notes = {**_docx_notes(zf, "footnote", label), **_docx_notes(zf, "endnote", label)}
        blocks += ["Notes:"] + [f"[{n}] {notes.get(ref, '')}".rstrip() for ref, n in cited.items()]
    return _join(blocks)


def _docx_notes(zf: zipfile.ZipFile, kind: str, label: str) -> dict[tuple[str, str], str]:
    """The text of each footnote or endnote by id (word/footnotes.xml, word/endnotes.xml; absent parts: none)."""
    name = f"word/{kind}s.xml"
    if name not in zf.namelist():
        return {}
    root = _xml(_member(zf, name, label), label)
    return {(kind, note.get(f"{_W}id", "")): " ".join(filter(None, (_docx_paragraph(p, {})
                                                                     for p in note.iter(f"{_W}p"))))
            for note in root.findall(f"{_W}{kind}")}


def _docx_blocks(element: ElementTree.Element, blocks: list[str], cited: dict) -> None:
    """Append the text blocks under `element`: a paragraph or a table row per block."""
    for child in element:
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


def odt_text(zf: zipfile.ZipFile, label: str) -> str:
    """Text of an OpenDocument text file (.odt): headings, paragraphs, list items (`- item`), table rows as
    `a | b`; footnotes as [n] markers and a `Notes:` list; deleted tracked changes skipped."""
    root = _xml(_member(zf, "content.xml", label), label)
    blocks: list[str] = []
    notes: list[str] = []
    for body in root.iter(f"{_OFFICE}text"):
        _odt_blocks(body, blocks, notes)
    if notes:
        blocks += ["Notes:"] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return _join(blocks)


def _odt_blocks(element: ElementTree.Element, blocks: list[str], notes: list[str], item: bool = False) -> None:
    """Append the text blocks under `element`: a paragraph, heading or table row per block."""
    for child in element:
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
            parts.append(" " * int(child.get(f"{_TEXT}c", "1") or 1))
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


def epub_text(zf: zipfile.ZipFile, label: str) -> str:
    """Text of an EPUB's chapters in spine (reading) order."""
    container = _xml(_member(zf, "META-INF/container.xml", label), label)
    rootfile = next((e.get("full-path") for e in container.iter() if e.tag.endswith("rootfile")), None)
    if not rootfile:
        raise TmixError(f"{label} is a damaged EPUB: META-INF/container.xml names no package file")
    opf = _xml(_member(zf, rootfile, label), label)
    items = {e.get("id"): e.get("href") for e in opf.iter() if e.tag.endswith("}item")}
    base = dirname(rootfile)
    blocks = []
    for ref in (e.get("idref") for e in opf.iter() if e.tag.endswith("}itemref")):
        href = items.get(ref)
        if href:
            path = normpath(join(base, unquote(href.split("#")[0])))
            blocks.append(html_text(decode_html(_member(zf, path, label), label)))
    return _join(blocks)


def decode_html(raw: bytes, label: str) -> str:
    """Decode HTML bytes: UTF-8 (BOM allowed), else the charset its <meta> declares."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    match = _CHARSET.search(raw[:4096])
    if match:
        try:
            return raw.decode(match.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            pass
    raise TmixError(f"{label} is HTML in an unknown encoding (not UTF-8 and no usable <meta charset>)")


def html_text(source: str) -> str:
    """Visible text of an HTML page: block elements on their own lines; head, scripts, styles, navigation and
    hidden elements dropped; a page with a <main> element gives only its text (no site header, menus, footer)."""
    parser = _HTMLText()
    parser.feed(source)
    parser.close()
    return parser.text()


def _hidden(tag: str, attrs: list) -> bool:
    """Elements a browser does not show, or that only navigate: skipped with everything inside them."""
    if tag in _SKIP_TAGS:
        return True
    if tag in _OPTIONAL_END:  # no reliable end tag to stop skipping at
        return False
    found = dict(attrs)
    return "hidden" in found or found.get("aria-hidden") == "true" or found.get("role") == "navigation"


class _HTMLText(HTMLParser):
    """Collects visible text; whitespace collapses as a browser would, except inside <pre>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.main_blocks: list[str] = []
        self.line: list[str] = []
        self.skip: tuple[str, int] | None = None  # the skipped element's tag and how deep it nests in itself
        self.pre = 0
        self.main = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self.skip is not None and self.skip[0] == "head" and tag == "body":
            self.skip = None  # a page that leaves out </head>
        if self.skip is not None:
            if tag == self.skip[0]:
                self.skip = (tag, self.skip[1] + 1)
        elif tag not in _VOID_TAGS and _hidden(tag, attrs):
            self.skip = (tag, 1)
        elif tag == "br":
            self.line.append("\n")
        elif tag in ("td", "th"):
            if "".join(self.line).strip():
                self.line.append(" | ")
        elif tag in _BLOCK_TAGS:
            self._flush()
            self.pre += tag == "pre"
            self.main += tag == "main"
            if tag == "li":
                self.line.append("- ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if self.skip is not None:
            return
        if tag == "br":
            self.line.append("\n")
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self.skip is not None:
            if tag == self.skip[0]:
                self.skip = (tag, self.skip[1] - 1) if self.skip[1] > 1 else None
        elif tag in _BLOCK_TAGS:
            self._flush()
            self.pre = max(0, self.pre - (tag == "pre"))
            self.main = max(0, self.main - (tag == "main"))

    def handle_data(self, data: str) -> None:
        if self.skip is None:
            self.line.append(data if self.pre else _SPACES.sub(" ", data))

    def _flush(self) -> None:
        text = "".join(self.line)
        self.line = []
        if not self.pre:
            text = "\n".join(" ".join(part.split()) for part in text.split("\n"))
        if text.strip(" -\n"):
            self.blocks.append(text.strip("\n"))
            if self.main:
                self.main_blocks.append(self.blocks[-1])

    def text(self) -> str:
        self._flush()
        return "\n".join(self.main_blocks or self.blocks)


def _open_zip(raw: bytes, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise TmixError(f"{label} is a damaged ZIP-based document ({exc})") from None


def _member(zf: zipfile.ZipFile, name: str, label: str) -> bytes:
    """One member's bytes, refusing missing, encrypted, damaged or oversized members."""
    try:
        info = zf.getinfo(name)
        if info.file_size > _MAX_MEMBER:
            raise TmixError(f"{label}: {name} is too large ({info.file_size >> 20} MiB uncompressed)")
        return zf.read(info)
    except KeyError:
        raise TmixError(f"{label} is damaged: it has no {name}") from None
    except RuntimeError as exc:  # encrypted member
        raise TmixError(f"{label} cannot be read: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise TmixError(f"{label} is damaged ({name}: {exc})") from None


def _xml(data: bytes, label: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise TmixError(f"{label} is damaged: invalid XML ({exc})") from None


def _join(blocks: list[str]) -> str:
    return "\n".join(b for b in blocks if b.strip())
