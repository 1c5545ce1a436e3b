"""Text of markup documents (HTML, EPUB) and the choice of reader for ZIP-based ones, with the standard library.

Each reader (here and in office.py) returns plain text with one paragraph per line (table rows become
`a | b | c` lines, list items `- item`), as PDF text comes out: no blank lines between paragraphs, which the
small default model reads markedly better (on the sample report it answers the revenue question right with
single newlines and wrong, dense attention included, with blank lines). Any failure is a one-line TmixError
naming the file; an empty result is the caller's to refuse.
"""

from __future__ import annotations

import re
import zipfile
from html.parser import HTMLParser
from posixpath import dirname, join, normpath
from urllib.parse import unquote

from tmixcli.charsets import bom_text, utf16_text, western_text
from tmixcli.errors import TmixError
from tmixcli.office import docx_text, odt_text, pptx_text
from tmixcli.ziputil import Reach, join_blocks, member, open_zip, parse_xml

_ODT_MIME = b"application/vnd.oasis.opendocument.text"
_ZIP_FORMATS = (  # suffix, content type declared in [Content_Types].xml or mimetype, (format, main part)
    (".docx", b"wordprocessingml.document.main", ("Word document (.docx)", "word/document.xml")),
    (".pptx", b"presentationml.presentation.main", ("PowerPoint deck (.pptx)", "ppt/presentation.xml")),
    (".odt", _ODT_MIME, ("OpenDocument text (.odt)", "content.xml")),
    (".epub", b"application/epub+zip", ("EPUB book (.epub)", "META-INF/container.xml")),
)
_SPACES = re.compile(r"[ \t\n\r\f\u00a0]+")
_BLOCK_TAGS = {"address", "article", "aside", "blockquote", "body", "caption", "dd", "div", "dl", "dt",
               "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
               "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul"}
_SKIP_TAGS = {"head", "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "nav"}
_HEAD_TAGS = {"base", "link", "meta", "noscript", "script", "style", "template", "title"}  # what a <head> holds
_OPTIONAL_END = {"p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option", "optgroup",
                 "colgroup", "caption", "rt", "rp", "html", "body"}  # end tags HTML lets pages leave out
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
FORMATS = "PDF, .docx, .odt, .pptx, .epub, HTML or UTF-8 text"  # what tmix reads, for error messages
_MAIN = re.compile(r"<main\b", re.IGNORECASE)
HTML_CHUNK = 1 << 20  # characters of HTML parsed at a time
_HIDING_STYLE = re.compile(r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse))\s*"
                           r"(?:!\s*important\s*)?(?:;|$)", re.IGNORECASE)  # an inline style a browser hides
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def zip_document_text(raw: bytes, label: str, reach: Reach | None = None) -> str:
    """Text of a ZIP-based document: .docx, .odt, .pptx or .epub; other archives are refused by what they hold.
    Read only until `reach` says the text is surely past what the model could use."""
    try:
        return _zip_text(raw, label, reach or Reach())
    except RecursionError:  # the readers recurse into nested elements; thousands of levels only a broken file has
        raise TmixError(f"{label} is damaged: its XML is nested too deeply to read") from None


def _zip_text(raw: bytes, label: str, reach: Reach) -> str:
    """zip_document_text without the guard against too deep nesting."""
    with open_zip(raw, label) as zf:
        names = set(zf.namelist())
        if "word/document.xml" in names:
            return docx_text(zf, label, reach)
        if "META-INF/container.xml" in names:
            return epub_text(zf, label, reach)
        if "content.xml" in names and "mimetype" in names and member(zf, "mimetype", label).strip() == _ODT_MIME:
            return odt_text(zf, label, reach)
        if "ppt/presentation.xml" in names:
            return pptx_text(zf, label, reach)
        kind = ("an Excel workbook (.xlsx)" if "xl/workbook.xml" in names else
                "an OpenDocument spreadsheet or presentation" if "content.xml" in names else None)
        if kind is None:
            meant = _meant_format(zf, names, label)
            if meant is not None:
                raise TmixError(f"{label} is a damaged {meant[0]}: it has no {meant[1]}")
    raise TmixError(f"{label} is {kind or 'a ZIP archive'}; tmix reads {FORMATS}")


def _meant_format(zf: zipfile.ZipFile, names: set[str], label: str) -> tuple[str, str] | None:
    """(format, main part) of a ZIP that its name's suffix or its declared content type says is a document tmix
    reads, though its main part is missing; None for another archive."""
    declared = b""
    for name in ("[Content_Types].xml", "mimetype"):
        if name in names:
            declared += member(zf, name, label)[:65536]
    by_suffix = (meant for suffix, _, meant in _ZIP_FORMATS if label.lower().endswith(suffix))
    by_type = (meant for _, content_type, meant in _ZIP_FORMATS if content_type in declared)
    return next(by_suffix, next(by_type, None))


def epub_text(zf: zipfile.ZipFile, label: str, reach: Reach | None = None) -> str:
    """Text of an EPUB's chapters in spine (reading) order, read until `reach` says it is surely past what the
    model could use."""
    reach = reach or Reach()
    container = parse_xml(member(zf, "META-INF/container.xml", label), label)
    rootfile = next((e.get("full-path") for e in container.iter() if e.tag.endswith("rootfile")), None)
    if not rootfile:
        raise TmixError(f"{label} is a damaged EPUB: META-INF/container.xml names no package file")
    rootfile = rootfile.lstrip("/")  # some books name it from the archive root
    opf = parse_xml(member(zf, rootfile, label), label)
    items = {e.get("id"): e.get("href") for e in opf.iter() if e.tag.endswith("}item")}
    base = dirname(rootfile)
    blocks = []
    for ref in (e.get("idref") for e in opf.iter() if e.tag.endswith("}itemref")):
        href = items.get(ref)
        if href:
            path = normpath(join(base, unquote(href.split("#")[0]))).lstrip("/")
            blocks.append(html_text(decode_html(member(zf, path, label), label)))
            if reach.past(blocks):
                break
    return join_blocks(blocks)


def decode_html(raw: bytes, label: str) -> str:
    """Decode HTML bytes: UTF-16/32 by a byte-order mark, mostly-Latin UTF-16 without one, UTF-8 (BOM allowed), the
    charset its <meta> declares, else Windows-1252 (what browsers assume for a Western page that declares none)."""
    text = bom_text(raw)
    if text is not None:
        return text
    utf16 = utf16_text(raw)
    if utf16 is not None:
        return utf16[0]
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    match = _CHARSET.search(raw[:4096])
    if match:
        try:
            return raw.decode(match.group(1).decode("ascii"))
        except (LookupError, UnicodeError):  # an unknown or non-text codec, or bytes it cannot decode
            pass
    text = western_text(raw)
    if text is not None:
        return text
    raise TmixError(f"{label} is HTML in an unknown encoding (not UTF-8 and no usable <meta charset>)")


def html_text(source: str, reach: Reach | None = None) -> str:
    """Visible text of an HTML page: block elements on their own lines; head, scripts, styles, navigation and
    hidden elements dropped; a page with a <main> element gives only its text (no site header, menus, footer).
    Parsed chunk by chunk until `reach` says the text is surely past what the model could use."""
    reach, parser, main_at = reach or Reach(), _HTMLText(), 0  # main_at: where a <main> may come; -1: none further on
    for start in range(0, len(source), HTML_CHUNK):
        parser.feed(source[start:start + HTML_CHUNK])
        mains = bool(parser.main or parser.main_blocks)
        if not reach.past(parser.main_blocks if mains else parser.blocks):
            continue
        unread = min(len(source), start + HTML_CHUNK) - len(parser.rawdata)  # what the parser holds back included
        if not mains and 0 <= main_at < unread:  # a <main> further on would leave out all read so far
            found = _MAIN.search(source, unread)
            main_at = found.start() if found else -1
        if mains or main_at < 0:
            return parser.text(whole=False)
    parser.close()
    return parser.text()


def _hidden(tag: str, attrs: list) -> bool:
    """Elements a browser does not show, or that only navigate: skipped with everything inside them."""
    if tag in _SKIP_TAGS:
        return True
    if tag in _OPTIONAL_END and tag != "p":  # no reliable end tag to stop skipping at (a <p> ends at a block)
        return False
    found = dict(attrs)
    return ("hidden" in found or found.get("aria-hidden") == "true" or found.get("role") == "navigation"
            or _HIDING_STYLE.search(found.get("style") or "") is not None)


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

    def parse_marked_section(self, i: int, report: int = 1) -> int:
        """Read a malformed `<![...` section as a browser does, as a bogus comment up to the next ">"."""
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:  # html.parser's complaint about a keyword or name it does not know
            end = self.rawdata.find(">", i)
            return -1 if end < 0 else end + 1

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self.skip is not None and self.skip[0] == "head" and tag not in _HEAD_TAGS:
            self.skip = None  # a page that leaves out </head>: <body> or any body element ends the head
        if self.skip is not None and self.skip[0] == "p" and tag in _BLOCK_TAGS:
            self.skip = None  # a block element ends a hidden <p> whose end tag is left out, as in a browser
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
        if self.skip is not None and self.skip[0] == "p" and tag != "p" and tag in _BLOCK_TAGS:
            self.skip = None  # the end of the element around a hidden <p> that leaves out its end tag
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

    def text(self, whole: bool = True) -> str:
        """The text of the blocks read; `whole`: the last one too, ended by the end of the page (else left out, so a
        page read in part ends with a whole paragraph, as the whole page does)."""
        if whole:
            self._flush()
        return "\n".join(self.main_blocks or self.blocks)
