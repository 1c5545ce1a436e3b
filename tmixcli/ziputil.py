"""ZIP-based documents (.docx, .odt, .pptx, .epub): members read with size and damage checks, XML parsed (a large
part as it is decompressed); how far a reader's text has come (Reach)."""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Callable, Iterator
from xml.etree import ElementTree

from tmixcli import checkpoints
from tmixcli.errors import TmixError

ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of a ZIP file (its first member's header)
MAX_MEMBER = 256 * 1024 * 1024  # bytes of one uncompressed ZIP member (guards against zip bombs)
CHUNK = 1 << 20  # bytes of a member decompressed and parsed at a time


class Reach:
    """How far a reader's text has come, told at each checkpoint (a paragraph, slide, chapter or chunk read): once
    `enough(characters)` says it is surely past what the model could use, the reader stops (`stopped`)."""

    def __init__(self, enough: Callable[[int], bool] | None = None) -> None:
        self.enough, self.stopped, self.chars = enough, False, 0
        self._blocks: list[str] | None = None
        self._seen = 0

    def past(self, blocks: list[str]) -> bool:
        """Whether the reader's growing list of text blocks is surely past the cap; its characters are counted
        without whitespace, which tidying may drop. A checkpoint of `tmix serve` too."""
        checkpoints.check()
        if blocks is not self._blocks:  # an HTML page's <main> blocks take the place of all its blocks
            self._blocks, self._seen, self.chars = blocks, 0, 0
        self.chars += sum(len("".join(b.split())) for b in blocks[self._seen:])
        self._seen = len(blocks)
        self.stopped = self.enough is not None and self.enough(self.chars)
        return self.stopped


def open_zip(raw: bytes, label: str) -> zipfile.ZipFile:
    """The ZIP archive in `raw`; a damaged one is a one-line TmixError."""
    try:
        return zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise TmixError(f"{label} is a damaged ZIP-based document ({exc})") from None


def member(zf: zipfile.ZipFile, name: str, label: str) -> bytes:
    """One member's bytes, refusing missing, encrypted, damaged or oversized members."""
    with _reading(name, label):
        return zf.read(_info(zf, name, label))


def _info(zf: zipfile.ZipFile, name: str, label: str) -> zipfile.ZipInfo:
    info = zf.getinfo(name)
    if info.file_size > MAX_MEMBER:
        raise TmixError(f"{label}: {name} is too large ({info.file_size >> 20} MiB uncompressed)")
    return info


@contextlib.contextmanager
def _reading(name: str, label: str) -> Iterator[None]:
    """A missing, encrypted or damaged member as a one-line TmixError."""
    try:
        yield
    except KeyError:
        raise TmixError(f"{label} is damaged: it has no {name}") from None
    except RuntimeError as exc:  # encrypted member
        raise TmixError(f"{label} cannot be read: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise TmixError(f"{label} is damaged ({name}: {exc})") from None


def children(zf: zipfile.ZipFile, name: str, label: str, parent: str) -> Iterator[ElementTree.Element]:
    """The child elements of the element at path `parent` (from the root, e.g. "{ns}body") of member `name`, each
    once complete, parsed as the member is decompressed; each is dropped from the tree as it is given, so a body of
    any size takes little memory."""
    builder = ElementTree.TreeBuilder()
    top = builder.start("top", {})  # the document's root is built into this element, where it can be reached
    parser = ElementTree.XMLParser(target=builder)
    with _reading(name, label), zf.open(_info(zf, name, label)) as stream:
        while chunk := stream.read(CHUNK):
            checkpoints.check()
            _fed(parser, chunk, label)
            yield from _complete(top, parent, last=False)
        _fed(parser, None, label)
        yield from _complete(top, parent, last=True)


def leading(zf: zipfile.ZipFile, name: str, label: str, tag: str, stop: str) -> ElementTree.Element | None:
    """The first element `tag` of member `name` that ends before an element `stop` starts (None: there is none),
    parsed from the start of the member only as far as needed (the styles ahead of a long document's body)."""
    parser = ElementTree.XMLPullParser(events=("start", "end"))
    with _reading(name, label), zf.open(_info(zf, name, label)) as stream:
        while chunk := stream.read(CHUNK):
            checkpoints.check()
            _fed(parser, chunk, label)
            for event, element in parser.read_events():
                if event == "start" and element.tag == stop:
                    return None
                if event == "end" and element.tag == tag:
                    return element
        _fed(parser, None, label)
    return None


def _fed(parser: ElementTree.XMLParser | ElementTree.XMLPullParser, chunk: bytes | None, label: str) -> None:
    """Feed `chunk` (None: the end of the document) to the parser."""
    try:
        if chunk is None:
            parser.close()
        else:
            parser.feed(chunk)
    except ElementTree.ParseError as exc:
        raise TmixError(f"{label} is damaged: invalid XML ({exc})") from None


def _complete(top: ElementTree.Element, parent: str, last: bool) -> list[ElementTree.Element]:
    """The children of `parent` parsed so far, taken from the tree, but the last (which may go on) unless `last`."""
    found = top[0].find(parent) if len(top) else None
    if found is None:
        return []
    done = list(found) if last else list(found)[:-1]
    del found[:len(done)]
    return done


def parse_xml(data: bytes, label: str) -> ElementTree.Element:
    """Parsed XML; invalid XML is a one-line TmixError naming the file."""
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise TmixError(f"{label} is damaged: invalid XML ({exc})") from None


def whole_number(value: str | None, default: int) -> int:
    """An XML attribute's whole number; `default` when it is missing or not a number (a damaged file reads on)."""
    try:
        return int(value or "")
    except ValueError:
        return default


def join_blocks(blocks: list[str]) -> str:
    """Non-empty text blocks, one per line."""
    return "\n".join(b for b in blocks if b.strip())
