"""The visible text of an HTML page, one paragraph per line as the other readers give it: table rows as `a | b | c`
lines, list items as `- item` or, in an ordered list, `1. item`; parsed a piece at a time with html.parser."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

from tmixcli.charsets import decoded
from tmixcli.formats import HTML_SUFFIXES
from tmixcli.htmlcodec import html_codec, last_main
from tmixcli.inputs import Chunks
from tmixcli.listnumbers import number_label
from tmixcli.tablerow import BULLET, MAX_SPAN, cell_text, row_line
from tmixcli.ziputil import Reach, whole_number

_SPACES = re.compile(r"[ \t\n\r\f\u00a0]+")
_BLOCK_TAGS = {"address", "article", "aside", "blockquote", "body", "caption", "dd", "div", "dl", "dt",
               "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
               "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul"}
_LAYOUT = {"h1", "h2", "h3", "h4", "h5", "h6", "main", "article", "section", "header", "footer",
           "aside"}  # headings and page sections: a table cell holding one is page layout, not data
_SKIP_TAGS = {"head", "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "nav"}
_HEAD_TAGS = {"base", "link", "meta", "noscript", "script", "style", "template", "title"}  # what a <head> holds
_OPTIONAL_END = {"p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option", "optgroup",
                 "colgroup", "caption", "rt", "rp", "html", "body"}  # end tags HTML lets pages leave out
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_TABLE_TAGS = {"table", "tr", "td", "th", "thead", "tbody", "tfoot"}
_SECTIONS = {"thead", "tbody", "tfoot"}
_MOST_ROWS = 1000  # a rowspan counts for at most this many rows
HTML_CHUNK = 1 << 20  # characters of HTML parsed at a time
_HIDING_STYLE = re.compile(r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse))\s*"
                           r"(?:!\s*important\s*)?(?:;|$)", re.IGNORECASE)  # an inline style a browser hides


def looks_html(raw: bytes, label: str) -> bool:
    """HTML by file suffix, or (stdin, odd names) by a leading doctype / <html> tag."""
    if label.lower().endswith(HTML_SUFFIXES):
        return True
    head = raw[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or (head.startswith(b"<?xml") and b"<html" in head)


def page_text(chunks: Chunks, label: str, reach: Reach | None = None) -> str:
    """The visible text (html_text) of an HTML page whose bytes `chunks` reads from the start, decoded as html_codec
    says; neither its bytes nor its text are held whole."""
    codec, main_at = html_codec(chunks, label)
    return _parsed(_pieces(decoded(chunks(), codec)), reach, lambda: main_at)


def html_text(source: str, reach: Reach | None = None) -> str:
    """Visible text of an HTML page: block elements on their own lines; head, scripts, styles, navigation and
    hidden elements dropped; a page with a <main> element gives only its text (no site header, menus, footer)."""
    return _parsed(_pieces([source]), reach, lambda: last_main([source]))


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


def _parsed(pieces: Iterable[str], reach: Reach | None, main_at: Callable[[], int]) -> str:
    """html_text of a page in `pieces`, parsed one at a time until `reach` says the text is surely past what the model
    could use, unless a <main> further on (`main_at`: where the last one starts) would leave out all read so far."""
    reach, parser, fed, main_at = reach or Reach(), _HTMLText(), 0, functools.cache(main_at)
    for piece in pieces:
        parser.feed(piece)
        fed += len(piece)
        mains = bool(parser.main or parser.main_blocks)
        if not reach.past(parser.main_blocks if mains else parser.blocks):
            continue
        if mains or main_at() < fed - len(parser.rawdata):  # what the parser holds back is unread
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


@dataclass
class _List:
    """An open <ol> or <ul>: the number of its next item (None: bulleted), its counting step and numbering type."""

    number: int | None
    step: int = 1
    kind: str = "1"

    def marker(self) -> str:
        """The next item's marker ("- ", "3. ", "c. ", "iv. "), counting on."""
        if self.number is None:
            return BULLET
        n, self.number = self.number, self.number + self.step
        return f"{number_label(n, self.kind)}. "


def _ordered(attrs: dict) -> _List:
    """The _List of an <ol>: its start, type and reversed attributes (reversed without a start: bulleted, since its
    first number is the count of items still unread)."""
    kind = attrs.get("type") if attrs.get("type") in ("1", "a", "A", "i", "I") else "1"
    if "reversed" in attrs:
        start = whole_number(attrs.get("start"), 0)
        return _List(start, -1, kind) if start else _List(None)
    return _List(whole_number(attrs.get("start"), 1), 1, kind)


@dataclass(eq=False)
class _Cell:
    """A table cell's text blocks, each (list marker, text, whether it is inside <main>); `layout`: it holds a table,
    a heading or a page section, so its row is page layout rather than data."""

    blocks: list[tuple[str, str, bool]] = field(default_factory=list)
    layout: bool = False

    def line(self) -> str:
        """The cell's text on one line (tablerow.cell_text: bulleted items joined by "; ")."""
        return cell_text([marker + text for marker, text, _ in self.blocks])


@dataclass(eq=False)
class _Table:
    """An open table: its current row's cells, the open cell, and the columns rows above still cover (rowspan)."""

    layout: bool
    row: list[_Cell] | None = None
    cell: _Cell | None = None
    real: int = 0  # cells of the row written in the page (not a colspan's or rowspan's padding)
    covered: dict[int, int] = field(default_factory=dict)  # column -> rows below the current one it still takes
    taken: set[int] = field(default_factory=set)  # columns of the current row a rowspan above takes


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
        self.marker = ""  # the open list item's marker, for its first block
        self.lists: list[_List] = []
        self.tables: list[_Table] = []

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
        if self.skip is not None and self.skip[0] == "p" and (tag in _BLOCK_TAGS or tag in _TABLE_TAGS):
            self.skip = None  # a block element ends a hidden <p> whose end tag is left out, as in a browser
        if self.skip is not None:
            if tag == self.skip[0]:
                self.skip = (tag, self.skip[1] + 1)
        elif tag not in _VOID_TAGS and _hidden(tag, attrs):
            self.skip = (tag, 1)
        elif tag == "br":
            self.line.append("\n")
        elif tag in _TABLE_TAGS:
            self._table_start(tag, dict(attrs))
        elif tag in _BLOCK_TAGS:
            self._flush()
            self.pre += tag == "pre"
            self.main += tag == "main"
            self._block_start(tag, dict(attrs))

    def _block_start(self, tag: str, attrs: dict) -> None:
        """A list opens (<ol>, <ul>), an item starts (<li>: its marker, a value attribute renumbering it), or a
        heading or page section starts (inside a table cell: the cell is page layout)."""
        if tag == "ol":
            self.lists.append(_ordered(attrs))
        elif tag == "ul":
            self.lists.append(_List(None))
        elif tag == "li":
            top = self.lists[-1] if self.lists else _List(None)
            if top.number is not None and "value" in attrs:
                top.number = whole_number(attrs.get("value"), top.number)
            self.marker = top.marker()
        elif tag in _LAYOUT and self.tables and self.tables[-1].cell is not None:
            self.tables[-1].cell.layout = True

    def _table_start(self, tag: str, attrs: dict) -> None:
        """A table, row section, row or cell starts: what it ends is ended first."""
        self._flush()
        if tag == "table":
            self.tables.append(_Table(layout=attrs.get("role") in ("presentation", "none")))
            return
        if not self.tables:
            return  # a cell or row outside any table: its text runs on as a browser shows it
        table = self.tables[-1]
        table.cell = None
        if tag != "td" and tag != "th":
            self._end_row(table)
            if tag in _SECTIONS:
                table.covered.clear()  # a rowspan stops at its row group
            return
        if table.row is None:
            self._start_row(table)
        while len(table.row) in table.taken:
            table.row.append(_Cell())
        column = len(table.row)
        table.cell = _Cell()
        table.row.append(table.cell)
        table.real += 1
        span = min(max(whole_number(attrs.get("colspan"), 1), 1), MAX_SPAN)
        table.row.extend(_Cell() for _ in range(span - 1))
        rows = min(max(whole_number(attrs.get("rowspan"), 1), 1), _MOST_ROWS)
        for at in range(column, column + span) if rows > 1 else ():
            table.covered[at] = rows - 1

    def _start_row(self, table: _Table) -> None:
        """A new row: the columns that rowspans above take in it."""
        table.row, table.real = [], 0
        table.taken = set(table.covered)
        table.covered = {at: rows - 1 for at, rows in table.covered.items() if rows > 1}

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if self.skip is not None:
            return
        if tag == "br":
            self.line.append("\n")
        elif tag in _TABLE_TAGS:
            self._table_start(tag, dict(attrs))  # <td/> opens a cell, as in a browser
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self.skip is not None and self.skip[0] == "p" and tag != "p" and (tag in _BLOCK_TAGS or tag in _TABLE_TAGS):
            self.skip = None  # the end of the element around a hidden <p> that leaves out its end tag
        if self.skip is not None:
            if tag == self.skip[0]:
                self.skip = (tag, self.skip[1] - 1) if self.skip[1] > 1 else None
        elif tag in _TABLE_TAGS:
            self._table_end(tag)
        elif tag in _BLOCK_TAGS:
            self._flush()
            self.pre = max(0, self.pre - (tag == "pre"))
            self.main = max(0, self.main - (tag == "main"))
            if tag in ("ol", "ul") and self.lists:
                self.lists.pop()
            if tag in ("li", "ol", "ul"):
                self.marker = ""  # an empty item's marker is not the next block's

    def _table_end(self, tag: str) -> None:
        """A table, row section, row or cell ends, with what it holds."""
        self._flush()
        if not self.tables:
            return
        table = self.tables[-1]
        table.cell = None
        if tag in ("td", "th"):
            return
        self._end_row(table)
        if tag == "table":
            self.tables.pop()

    def _end_row(self, table: _Table) -> None:
        """Write the row: one `a | b | c` line; a layout row (one cell, a cell holding a table, heading or page
        section, a table marked role="presentation") as its cells' blocks, each on its own line."""
        row, table.row = table.row, None
        if not row:
            return
        depth = len(self.tables) - 1  # the table ending a row is the innermost
        if table.layout or (table.real == 1 and not table.taken) or any(cell.layout for cell in row):
            for cell in row:
                for marker, text, main in cell.blocks:
                    self._put(marker, text, depth, nested=True, main=main)
            return
        line = row_line([cell.line() for cell in row])
        main = bool(self.main) or any(block[2] for cell in row for block in cell.blocks)
        if line:
            self._put("", line, depth, True, main)

    def handle_data(self, data: str) -> None:
        if self.skip is None:
            self.line.append(data if self.pre else _SPACES.sub(" ", data))

    def _flush(self) -> None:
        text = "".join(self.line)
        self.line = []
        if not self.pre:
            text = "\n".join(" ".join(part.split()) for part in text.split("\n"))
        if text.strip(" -\n"):
            self._put(self.marker, text.strip("\n"), len(self.tables))
            self.marker = ""

    def _put(self, marker: str, text: str, depth: int, nested: bool = False, main: bool | None = None) -> None:
        """A block of text (after a list `marker`), read inside the first `depth` open tables: into the innermost
        of their open cells, else a line of the page (of <main>'s text where `main` says, by default where the
        parser is now). A cell given a table's text (`nested`: a row of a table inside it) is page layout."""
        main = bool(self.main) if main is None else main
        for index in range(depth - 1, -1, -1):
            cell = self.tables[index].cell
            if cell is not None:
                cell.blocks.append((marker, text, main))
                cell.layout = cell.layout or nested or depth > index + 1
                return
        self.blocks.append(marker + text)
        if main:
            self.main_blocks.append(self.blocks[-1])

    def text(self, whole: bool = True) -> str:
        """The text of the blocks read; `whole`: the last one too, ended by the end of the page, and the rows of
        tables it leaves open (else left out, so a page read in part ends with a whole paragraph, as the whole page
        does)."""
        if whole:
            self._flush()
            while self.tables:
                self._table_end("table")
        return "\n".join(self.main_blocks or self.blocks)
