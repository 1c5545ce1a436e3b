"""Text of markup documents (HTML, EPUB) and the choice of reader for ZIP-based ones, with the standard library.

Each reader (here and in docx.py, odt.py, pptx.py) returns plain text with one paragraph per line (table rows become
`a | b | c` lines, list items `- item`), as PDF text comes out: no blank lines between paragraphs, which the
small default model reads markedly better (on the sample report it answers the revenue question right with
single newlines and wrong, dense attention included, with blank lines). Any failure is a one-line TmixError
naming the file; an empty result is the caller's to refuse.
"""

from __future__ import annotations

import functools
import re
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from html.parser import HTMLParser
from posixpath import dirname, join, normpath
from urllib.parse import unquote

from tmixcli.charsets import bom_codec, decoded, has_controls, utf16_codec, western
from tmixcli.errors import TmixError
from tmixcli.inputs import HEAD, Chunks, held_chunks
from tmixcli.docx import docx_text
from tmixcli.odt import odt_text
from tmixcli.pptx import pptx_text
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
_MAIN_TAG = len("<main")  # characters of a <main> tag before the word boundary its pattern ends with
HTML_CHUNK = 1 << 20  # characters of HTML parsed at a time
_HIDING_STYLE = re.compile(r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse))\s*"
                           r"(?:!\s*important\s*)?(?:;|$)", re.IGNORECASE)  # an inline style a browser hides
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HTML_SUFFIXES = (".html", ".htm", ".xhtml")


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


def looks_html(raw: bytes, label: str) -> bool:
    """HTML by file suffix, or (stdin, odd names) by a leading doctype / <html> tag."""
    if label.lower().endswith(_HTML_SUFFIXES):
        return True
    head = raw[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or (head.startswith(b"<?xml") and b"<html" in head)


def decode_html(raw: bytes, label: str) -> str:
    """Decode HTML bytes held in memory with the codec html_codec picks."""
    return raw.decode(html_codec(held_chunks(raw), label)[0])


def html_codec(chunks: Chunks, label: str) -> tuple[str, int]:
    """The codec of an HTML page's bytes, which `chunks` reads from the start, and where its last <main> tag starts in
    its text (-1: none). Each candidate is tried on all the bytes as they are read (_candidates)."""
    head = b""
    for piece in chunks():
        head += piece[:HEAD - len(head)]
        if len(head) == HEAD:
            break
    for codec, test in _candidates(head):
        mains = _Mains()
        try:
            if test(mains.scan(decoded(chunks(), codec))):
                return codec, mains.last
        except (LookupError, UnicodeError):  # an unknown or non-text codec, or bytes it cannot decode
            pass
    raise TmixError(f"{label} is HTML in an unknown encoding (not UTF-8 and no usable <meta charset>)")


def _candidates(head: bytes) -> Iterator[tuple[str, Callable[[Iterable[str]], bool]]]:
    """The codecs an HTML page may be in, in the order tried, each with the test its whole text must pass: UTF-16/32
    by a byte-order mark, UTF-16 without one (no control characters), UTF-8 (BOM allowed), the charset its <meta>
    declares, else Windows-1252 (what browsers assume for a Western page that declares none)."""
    bom, utf16, match = bom_codec(head), utf16_codec(head), _CHARSET.search(head)
    if bom:
        yield bom, _whole
    if utf16:
        yield utf16, lambda texts: not any(map(has_controls, texts))
    yield "utf-8-sig", _whole
    if match:
        yield match.group(1).decode("ascii"), _whole
    yield "cp1252", western


def _whole(texts: Iterable[str]) -> bool:
    """Any text passes, once all of it is read."""
    deque(texts, maxlen=0)
    return True


class _Mains:
    """Where the last <main> tag starts in a text read piece by piece, a tag cut between two pieces included."""

    def __init__(self) -> None:
        self.last, self._at, self._tail = -1, 0, ""  # _tail: the last characters read, from offset _at on

    def scan(self, texts: Iterable[str]) -> Iterator[str]:
        """`texts`, unchanged, looked through on the way."""
        for text in texts:
            self._look(self._tail + text, final=False)
            yield text
        self._look(self._tail, final=True)

    def _look(self, text: str, final: bool) -> None:
        for match in _MAIN.finditer(text):
            if final or match.end() < len(text):  # what follows the tag is read: \b is decided
                self.last = self._at + match.start()
        keep = 0 if final else min(len(text), _MAIN_TAG)
        self._at, self._tail = self._at + len(text) - keep, text[len(text) - keep:]


def _last_main(texts: Iterable[str]) -> int:
    """Where the last <main> tag starts in the text of `texts` (-1: none)."""
    mains = _Mains()
    deque(mains.scan(texts), maxlen=0)
    return mains.last


def page_text(chunks: Chunks, label: str, reach: Reach | None = None) -> str:
    """The visible text (html_text) of an HTML page whose bytes `chunks` reads from the start, decoded as html_codec
    says; neither its bytes nor its text are held whole."""
    codec, last_main = html_codec(chunks, label)
    return _parsed(_pieces(decoded(chunks(), codec)), reach, lambda: last_main)


def html_text(source: str, reach: Reach | None = None) -> str:
    """Visible text of an HTML page: block elements on their own lines; head, scripts, styles, navigation and
    hidden elements dropped; a page with a <main> element gives only its text (no site header, menus, footer)."""
    return _parsed(_pieces([source]), reach, lambda: _last_main([source]))


def _pieces(texts: Iterable[str]) -> Iterator[str]:
    """The text of `texts` again, in pieces of HTML_CHUNK characters (the last one shorter)."""
    rest = ""
    for text in texts:
        text = rest + text if rest else text
        end = len(text) - len(text) % HTML_CHUNK
        yield from (text[at:at + HTML_CHUNK] for at in range(0, end, HTML_CHUNK))
        rest = text[end:]
    if rest:
        yield rest


def _parsed(pieces: Iterable[str], reach: Reach | None, last_main: Callable[[], int]) -> str:
    """html_text of a page in `pieces`, parsed one at a time until `reach` says the text is surely past what the model
    could use, unless a <main> further on (`last_main`: where the last one starts) would leave out all read so far."""
    reach, parser, fed, last_main = reach or Reach(), _HTMLText(), 0, functools.cache(last_main)
    for piece in pieces:
        parser.feed(piece)
        fed += len(piece)
        mains = bool(parser.main or parser.main_blocks)
        if not reach.past(parser.main_blocks if mains else parser.blocks):
            continue
        if mains or last_main() < fed - len(parser.rawdata):  # what the parser holds back is unread
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
