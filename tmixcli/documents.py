"""Turn an input file (PDF, Word .docx, EPUB, HTML, UTF-8 text, or stdin) into clean text for the model."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import re
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from tmixcli import checkpoints, textcap
from tmixcli.charsets import BOMS, bom_text, mixed_text, utf16_codec, utf16_text, western_text
from tmixcli.errors import TmixError
from tmixcli.inputs import HEAD, SMALL, Chunks, Input, file_chunks, held_chunks, read_input, sha256, whole_lines
from tmixcli.markup import FORMATS, page_text, zip_document_text
from tmixcli.paths import names_stdin, not_a_file
from tmixcli.textcap import Budget
from tmixcli.ziputil import Reach

if TYPE_CHECKING:
    from pypdf import PdfReader

_T = TypeVar("_T")

_PDF_MAGIC = b"%PDF-"
_ZIP_MAGIC = b"PK\x03\x04"
_HTML_SUFFIXES = (".html", ".htm", ".xhtml")
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                           "\ufb05": "st", "\ufb06": "st"})
_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office file (.doc/.xls/.ppt)"),
    (b"\x7fELF", "an executable program"),
    (b"\xff\xfe", "damaged UTF-16 text (convert it to UTF-8)"),  # reached only when it does not decode
    (b"\xfe\xff", "damaged UTF-16 text (convert it to UTF-8)"),
)
_HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])[-\u2010][ \t]*\n[ \t]*(?=[a-z\u00df-\u00ff])")
_SOFT_HYPHEN_BREAK = re.compile(r"\u00ad[ \t]*\n?[ \t]*")
_SPACE_RUN = re.compile(r"[ \t\u00a0]+")
_BLANK_RUN = re.compile(r"\n{3,}")
_DIGIT_RUN = re.compile(r"\d+")
_DIGIT_SPLIT = re.compile(r"(\d+)")
_PAGE_SPEC = re.compile(r"(\d+)(?:\s*-\s*(\d*))?|-\s*(\d+)")  # N, N-M, N- (to the end), -M (from page 1)
_COUNTER = re.compile(r"(?:(?P<word>(?<![\w.])(?:page|pg\.?|p\.|pag\.|pagina|página|seite|s\.|side|sida)\s*))?"
                      r"@(?:\s*(?:of|/|von|de|di|sur|av|af)\s*\d+)?")  # a page number, @ in a running line
_SEPARATORS = ("|", "-", "\u2013", "\u2014", "\u00b7", "\u2022", "/", ",", "~")  # between a title and its page number
_COUNTER_WORDS = 12  # longest running line with a page number, in words


@dataclass(frozen=True)
class Document:
    """A loaded document: its name, cleaned text, hash of the raw bytes and page count (PDFs only).

    Several documents asked about together are one Document whose `parts` are the originals."""

    name: str
    text: str
    sha256: str
    pages: int | None
    parts: tuple[Document, ...] = ()
    notes: tuple[str, ...] = ()  # what the reader had to assume (e.g. a legacy text encoding), for status lines
    partial: bool = False  # --truncate: its text was cut past what the model could use, unread or left out


def load_document(path: str, pages: str | None = None, password: str | None = None,
                  stdin: BinaryIO | None = None, budget: Budget | None = None, *, among: bool = False) -> Document:
    """Read `path` (or stdin for "-") and return its cleaned text; any failure is a one-line TmixError. With a
    `budget`, an input beyond what the model could use is refused, or (--truncate) read only so far. A `password`
    for a document that is not a PDF is refused, unless it is read `among` others."""
    checkpoints.check()
    budget = budget or Budget()
    got = read_input(path, stdin, functools.partial(_raw_limit, path, budget))
    chunks = _html_chunks(path, got)
    cut = got.more and chunks is None
    raw = _cut_input(got, budget) if cut else got.raw
    try:
        doc = _parse(got.name, got.label, raw, pages, password, budget, among, chunks)
    except TmixError:
        raise
    except Exception as exc:  # noqa: BLE001 - a reader's unforeseen failure on odd input: still one line, named
        raise TmixError(f"{got.label} could not be read ({_reason(exc)})") from None
    if cut:
        whole = f"{got.amount()} in all" if got.size else "it went on"
        doc = replace(doc, partial=True, notes=(*doc.notes, f"read only the first {textcap.size(len(raw))} of "
                                                f"{got.label} ({whole}) for --truncate"))
    cap = budget.cap if len(doc.text) > SMALL else None  # the model tokenizes a shorter text in well under a second
    return within_cap(doc, cap, budget.truncate, got.label)


def _raw_limit(label: str, budget: Budget, head: bytes, size: int | None) -> int:
    """Bytes read at most: a text's reach in the model's context, or a fixed cap for PDF, ZIP-based and HTML documents
    (their size says little about their text), of which an HTML file's head alone is held (_html_file); a file known
    to be bigger is refused unread, unless --truncate."""
    container = _container(head, label)
    cap = None if container else budget.cap
    most = textcap.MAX_CONTAINER_BYTES if container else cap.text_bytes if cap else textcap.FALLBACK_TEXT_BYTES
    if size is not None and size > most and (container or not budget.truncate):
        _refuse_input(Input("", label, head, True, size), budget)
    return HEAD if _html_file(head, label, size) else most


def _html_chunks(path: str, got: Input) -> Chunks | None:
    """All the bytes of an HTML file of which only the head was read (_html_file), read again in chunks; else None."""
    if got.more and got.size is not None and _html_file(got.raw, got.label, got.size):
        return file_chunks(path, got.size)
    return None


def _html_file(head: bytes, label: str, size: int | None) -> bool:
    """Whether an input that starts with `head` is an HTML page in a file (its size known), which is read again in
    chunks, to hash and to parse it, rather than held whole."""
    return size is not None and not head.startswith(_ZIP_MAGIC) and _PDF_MAGIC not in head and _looks_html(head, label)


def _container(head: bytes, label: str) -> bool:
    """Whether an input's first bytes are a PDF's, a ZIP-based document's or an HTML page's, read up to
    MAX_CONTAINER_BYTES whatever the model's cap."""
    return _PDF_MAGIC in head or head.startswith(_ZIP_MAGIC) or _looks_html(head, label)


def _cut_input(got: Input, budget: Budget) -> bytes:
    """The bytes kept of an input that went on past its limit: the whole lines of a text with --truncate."""
    if _container(got.raw[:HEAD], got.label) or not budget.truncate:
        _refuse_input(got, budget)
    return whole_lines(got.raw)


def _refuse_input(got: Input, budget: Budget) -> None:
    """The one-line error for an input past its limit: binary data, a PDF, ZIP-based or HTML document too big to
    read, or a text longer than the model's context could hold."""
    head = got.raw[:HEAD]
    if _container(head, got.label):
        raise TmixError(f"{got.label} is {got.amount()}: tmix reads PDF, ZIP-based and HTML documents of up to "
                        f"{textcap.size(textcap.MAX_CONTAINER_BYTES)}")
    if not head.startswith(BOMS) and utf16_codec(head) is None:  # UTF-16/32 text has NUL bytes
        _refuse_binary(got.raw, got.label)
    raise TmixError(textcap.too_much(f"{got.label} is {got.amount()}", budget.cap))


def within_cap(doc: Document, cap: textcap.TextCap | None, truncate: bool, label: str | None = None) -> Document:
    """A document whose text reaches past the model's `cap`: refused, or (--truncate) each long part cut where no kept
    token lies (textcap.cut), so that the same tokens are kept as from the whole text."""
    if cap is None or len(doc.text) <= cap.chars:
        return doc
    if not truncate:
        raise TmixError(textcap.too_much(f"{label or doc.name} has {len(doc.text)} characters of text", cap,
                                         pdf=doc.pages is not None and not doc.parts))
    if not doc.parts:
        return cut_document(doc, cap)
    parts = tuple(cut_document(p, cap) for p in doc.parts)
    return replace(doc, text=joined_text([(p.name, p.text) for p in parts]), parts=parts,
                   partial=any(p.partial for p in parts))


def cut_document(doc: Document, cap: textcap.TextCap) -> Document:
    """The document with its text cut past the last token the model could keep (textcap.cut), marked partial."""
    text = textcap.cut(doc.text, cap)
    return doc if text == doc.text else replace(doc, text=text, partial=True)


def _parse(name: str, label: str, raw: bytes, pages: str | None, password: str | None,
           budget: Budget, among: bool = False, chunks: Chunks | None = None) -> Document:
    """The Document in `raw`, read by the reader its format needs; `chunks` gives all the bytes of an HTML file of
    which `raw` holds only the head."""
    if _is_pdf(raw):
        return _pdf_document(name, label, raw, hashlib.sha256(raw).hexdigest(), pages, password, budget)
    if pages is not None:
        raise TmixError(f"--pages only applies to PDF files, and {label} is not a PDF")
    if password is not None and not among:
        raise TmixError(f"--password only applies to PDF files, and {label} is not a PDF")
    digest = sha256(chunks) if chunks else hashlib.sha256(raw).hexdigest()
    reach = Reach(functools.partial(_past_cap, budget=budget))
    if raw.startswith(_ZIP_MAGIC):
        text = _nonempty(_tidy(zip_document_text(raw, label, reach)), label)
    elif _looks_html(raw, label):
        text = _nonempty(_tidy(page_text(chunks or held_chunks(raw), label, reach)), label)
    else:
        text, note = _text_file(raw, label)
        return Document(name=name, text=text, sha256=digest, pages=None, notes=(note,) if note else ())
    doc = Document(name=name, text=text, sha256=digest, pages=None)
    return _read_in_part(doc, label, budget) if reach.stopped else doc


def load_documents(paths: Sequence[str], pages: str | None = None, password: str | None = None,
                   stdin: BinaryIO | None = None, budget: Budget | None = None) -> Document:
    """One document, or several joined under numbered headings; `password` is tried on every encrypted PDF, `budget`
    caps what is read (load_document). A folder stands for its files in name order; unreadable ones are skipped."""
    if not paths:
        raise TmixError("no document given")
    if "" in paths:
        raise TmixError("empty document path")  # Path("") is the current folder
    budget = budget or Budget()
    if len(paths) == 1 and not _is_folder(paths[0]):
        return load_document(paths[0], pages=pages, password=password, stdin=stdin, budget=budget)
    if pages is not None:
        raise TmixError("--pages applies to a single PDF; give one document with it")
    if sum(map(names_stdin, paths)) > 1:
        raise TmixError("stdin (-) can be read only once")
    members = {p: folder_files(Path(p), unreadable=True) for p in paths if _is_folder(p)}
    _refuse_twice([(f, p, p in members) for p in paths if p != "-" for f in members.get(p, [Path(p)])
                   if p not in members or f.is_file()])  # a folder's broken links and FIFOs are skipped, not compared
    docs: list[Document] = []
    skipped: list[str] = []
    pdfs = 0  # PDFs skipped in a folder (a wrong --password, a damaged file): --password was tried on them
    for p in paths:
        if p not in members:
            docs.append(load_document(p, password=password, stdin=stdin, budget=budget, among=True))
            continue
        before, reasons = len(docs), len(skipped)
        for f in members[p]:
            try:
                why = not_a_file(f)  # a FIFO or a link to a device would block or never end: not read at all
                if why is not None:
                    raise TmixError(f"{f}: {why}")
                docs.append(load_document(str(f), password=password, budget=budget, among=True))
            except TmixError as err:
                skipped.append(f"skipped {f.name}: {str(err).removeprefix(str(f)).lstrip(' :')}")
                pdfs += f.suffix.lower() == ".pdf"
        if len(docs) == before:
            raise TmixError(f"no document tmix can read in {p}{_skipped_list(skipped[reasons:])}")
    if password is not None and not pdfs and all(d.pages is None for d in docs):
        raise TmixError("--password only applies to PDF files, and none of the documents is a PDF")
    doc = docs[0] if len(docs) == 1 else combine(docs)
    cap = budget.cap if len(doc.text) > SMALL and not budget.truncate else None
    if cap is not None and len(doc.text) > cap.chars:
        raise TmixError(textcap.too_much(f"{doc.name} have {len(doc.text)} characters of text together", cap))
    return replace(doc, notes=doc.notes + tuple(skipped))


MAX_FOLDER_FILES = 200
LISTED_SKIPS = 6  # skipped files named in a folder's error, the rest counted


def _skipped_list(skipped: Sequence[str]) -> str:
    """ " (skipped a.pdf: why | b.xlsx: why | and 3 more)" for a folder's skip notes, or "" for none."""
    if not skipped:
        return ""
    shown = len(skipped) if len(skipped) <= LISTED_SKIPS + 1 else LISTED_SKIPS
    more = f" | and {len(skipped) - shown} more" if shown < len(skipped) else ""
    return " (skipped " + " | ".join(s.removeprefix("skipped ") for s in skipped[:shown]) + more + ")"


def _refuse_twice(files: Sequence[tuple[Path, str, bool]]) -> None:
    """Refuse a file given twice, naming both arguments as they were typed (`files`: each file, the argument that
    gave it, whether that is a folder)."""
    seen: dict[Path, tuple[str, bool]] = {}
    for file, arg, folder in files:
        real = _resolved(file)
        if real not in seen:
            seen[real] = (arg, folder)
            continue
        if seen[real][0] == arg:
            raise TmixError(f"{arg} is given twice")
        first, then = (f"in folder {a}" if f else f"as {a}" for a, f in (seen[real], (arg, folder)))
        raise TmixError(f"{real.name} is given twice: {first} and {then}")


def _resolved(file: Path) -> Path:
    """The file's real path, to spot one given twice; as written when it cannot be resolved (a symlink loop)."""
    try:
        return file.resolve()
    except (OSError, RuntimeError):
        return file.absolute()


def _is_folder(path: str) -> bool:
    return path != "-" and Path(path).is_dir()


def folder_files(folder: Path, unreadable: bool = False) -> list[Path]:
    """The files directly inside `folder` in natural name order (report2 before report10), hidden ones left out;
    `unreadable` adds what is neither a file nor a folder there (a FIFO, a device, a broken link), to be skipped."""
    try:
        files = [f for f in folder.iterdir()
                 if not f.name.startswith(".") and (f.is_file() or unreadable and not f.is_dir())]
    except OSError as exc:
        raise TmixError(f"cannot read folder {folder}: {exc.strerror or exc}") from None
    if not files:
        raise TmixError(f"{folder} has no files (subfolders are not read)")
    if len(files) > MAX_FOLDER_FILES:
        raise TmixError(f"{folder} holds {len(files)} files, more than {MAX_FOLDER_FILES}; name the documents instead")
    return sorted(files, key=_natural)


def _natural(f: Path) -> list:
    """Sort key: digit runs compare as numbers (split() puts them at the odd places), the rest case-folded."""
    return [int(t) if i % 2 else t.lower() for i, t in enumerate(_DIGIT_SPLIT.split(f.name))]


def combine(docs: Sequence[Document]) -> Document:
    """Several documents as one: each under a "Document i of n: name" heading, in the order given."""
    digest = hashlib.sha256("\n".join(d.sha256 for d in docs).encode()).hexdigest()
    pdf_pages = [d.pages for d in docs if d.pages is not None]
    return Document(name=" + ".join(d.name for d in docs), text=joined_text([(d.name, d.text) for d in docs]),
                    sha256=digest, pages=sum(pdf_pages) if pdf_pages else None, parts=tuple(docs),
                    notes=tuple(n for d in docs for n in d.notes), partial=any(d.partial for d in docs))


def joined_text(named_texts: Sequence[tuple[str, str]]) -> str:
    """The text the model reads for several documents."""
    n = len(named_texts)
    return "\n\n".join(f"Document {i} of {n}: {name}\n\n{text.strip()}"
                        for i, (name, text) in enumerate(named_texts, 1))


def parse_pages(spec: str, n_pages: int) -> list[int]:
    """Parse a 1-based inclusive page spec ("3-10", "1,4,7-9", "5-", "-2") into sorted 0-based indexes."""
    parts = [part.strip() for part in spec.split(",")]
    if not spec.strip() or any(not part for part in parts):
        raise TmixError(f"bad page spec {spec!r}: use e.g. 3-10 or 1,4,7-9")
    selected: set[int] = set()
    for part in parts:
        first, last = _page_range(part, spec, n_pages)
        selected.update(range(first - 1, last))
    return sorted(selected)


def _page_range(part: str, spec: str, n_pages: int) -> tuple[int, int]:
    """One comma-separated item of a page spec as a 1-based inclusive (first, last) within 1..n_pages."""
    match = _PAGE_SPEC.fullmatch(part)
    if match is None:
        raise TmixError(f"bad page spec {spec!r}: {part!r} is not a page number or range like 3-10")
    if match.group(3) is not None:
        first, last = 1, _page_number(match.group(3), spec, n_pages)
    else:
        first = _page_number(match.group(1), spec, n_pages)
        last = first if match.group(2) is None else _page_number(match.group(2) or str(n_pages), spec, n_pages)
    if first < 1:
        raise TmixError(f"bad page spec {spec!r}: pages start at 1")
    if max(first, last) > n_pages:
        raise TmixError(f"page {max(first, last)} in {spec!r} is out of range: "
                        f"the document has {n_pages} page(s)")
    if last < first:
        raise TmixError(f"bad page spec {spec!r}: {part!r} is not a valid range (write low-high)")
    return first, last


def _page_number(digits: str, spec: str, n_pages: int) -> int:
    """A page number as written; one of more than nine digits is out of range (int() refuses thousands)."""
    if len(digits.lstrip("0")) > 9:
        raise TmixError(f"page {digits[:12]}... in the page spec is out of range: the document has {n_pages} page(s)")
    return int(digits)


def _text_file(raw: bytes, label: str) -> tuple[str, str | None]:
    """Decode UTF-8 text (BOM allowed), UTF-16/32 text with a BOM, mostly-Latin UTF-16 without one, else Western
    Windows-1252 text, rejecting binary data; tidy it. Returns the text and a note when it was not UTF-8 or marked."""
    text = bom_text(raw)
    if text is not None:
        return _nonempty(_tidy(text), label), None
    utf16 = utf16_text(raw)
    if utf16 is not None:
        return _nonempty(_tidy(utf16[0]), label), f"{label} has no byte-order mark; read it as {_codec_name(utf16[1])}"
    _refuse_binary(raw, label)
    if label.lower().endswith(".pdf"):
        raise TmixError(f"{label} is not a valid PDF (no %PDF- header); it may be corrupt")
    try:
        return _nonempty(_tidy(raw.decode("utf-8-sig")), label), None
    except UnicodeDecodeError as exc:
        text = mixed_text(raw)
        if text is not None:
            return _nonempty(_tidy(text), label), (f"{label} is UTF-8 with some other bytes (the first at offset "
                                                   f"{exc.start}); read those as Windows-1252")
        text = western_text(raw)
        if text is None:
            raise TmixError(f"{label} is not a document tmix reads ({FORMATS}): a byte at offset {exc.start} is "
                            f"not UTF-8; convert it to UTF-8, e.g. iconv -f ENCODING -t UTF-8") from None
    return _nonempty(_tidy(text), label), f"{label} is not UTF-8; read it as Windows-1252 (Western European)"


def _refuse_binary(raw: bytes, label: str) -> None:
    """A one-line error for binary data (an image, an archive, NUL bytes) given as a text."""
    description = _binary_kind(raw)
    if description is not None:
        raise TmixError(f"{label} is not a document tmix reads ({FORMATS}): it looks like {description}")


def _is_pdf(raw: bytes) -> bool:
    """A PDF by its %PDF- header: at the start, or after up to about 4 KB of junk (which readers skip) in a file
    that also ends like a PDF (so a text that mentions "%PDF-" stays text)."""
    return raw[:1024].lstrip()[:5] == _PDF_MAGIC or (_PDF_MAGIC in raw[:4096] and b"%%EOF" in raw[-8192:])


def _looks_html(raw: bytes, label: str) -> bool:
    """HTML by file suffix, or (stdin, odd names) by a leading doctype / <html> tag."""
    if label.lower().endswith(_HTML_SUFFIXES):
        return True
    head = raw[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or (head.startswith(b"<?xml") and b"<html" in head)


def _nonempty(text: str, label: str) -> str:
    if not text:
        raise TmixError(f"{label} is empty: it contains no text")
    return text


def _binary_kind(raw: bytes) -> str | None:
    """Describe binary data by its magic bytes; None if it may be text."""
    for magic, description in _BINARY_MAGIC:
        if raw.startswith(magic):
            return description
    codec = utf16_codec(raw)
    if codec is not None:
        name = _codec_name(codec)
        return (f"damaged {name} text without a byte-order mark (convert it to UTF-8, e.g. "
                f"iconv -f {name.replace(' ', '')} -t UTF-8)")
    if b"\x00" in raw:
        return "binary data (it contains NUL bytes)"
    return None


def _codec_name(codec: str) -> str:
    """A codec as users know it: "utf-16-le" -> "UTF-16 LE"."""
    return codec.upper().replace("-LE", " LE").replace("-BE", " BE")


def _tidy(text: str) -> str:
    """Light clean-up shared by all formats: newlines, ligatures, trailing spaces, long blank runs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LIGATURES)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUN.sub("\n\n", text).strip()


def _clean_page_text(text: str) -> str:
    """Clean one PDF page's text: ligatures, words hyphenated at line ends, space runs, newlines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LIGATURES)
    text = _SPACE_RUN.sub(" ", text)
    text = _SOFT_HYPHEN_BREAK.sub("", text)
    text = _HYPHEN_BREAK.sub("", text)
    return _tidy(text)


def _pdf_document(name: str, label: str, raw: bytes, digest: str, spec: str | None, password: str | None,
                  budget: Budget) -> Document:
    """A PDF's Document; its pages are read only until their text is surely past the model's cap."""
    text, n_pages, stopped = _pdf_text(raw, label, spec, password, budget)
    doc = Document(name=name, text=text, sha256=digest, pages=n_pages)
    return doc if stopped is None else _read_in_part(doc, label, budget, stopped)


def _read_in_part(doc: Document, label: str, budget: Budget, page: int | None = None) -> Document:
    """A document read only until its text was surely past the model's cap (up to `page` of a PDF): refused, or
    with --truncate marked partial, with a note."""
    where = f" by page {page}" if page else ""
    if not budget.truncate:
        raise TmixError(textcap.too_much(f"{label} has at least {len(doc.text)} characters of text{where}",
                                         budget.cap, pdf=page is not None))
    read = f"{label} only up to page {page}" if page else f"only the beginning of {label}"
    return replace(doc, partial=True, notes=(f"read {read}: the most the model could use",))


RUNNING_ROOM = 4 * 121  # characters running lines (see _drop_running_lines) may take from a page: 4 edge rows


def _pdf_text(raw: bytes, label: str, spec: str | None, password: str | None,
              budget: Budget | None = None) -> tuple[str, int, int | None]:
    """Extract cleaned text of the selected pages, joined with short page markers; returns (text, pages read, the
    page number it stopped at once the text was surely past the budget's cap, else None)."""
    with _quiet_pypdf() as problems:
        reader = _open_pdf(raw, label, password)
        n_pages = _pdf_call(lambda: len(reader.pages), label)
        if n_pages == 0:
            raise TmixError(f"{label} is empty: the PDF has no pages")
        indexes = _select_pages(spec, n_pages, label)
        texts: list[str] = []
        total, stopped = 0, None
        for index in indexes:
            checkpoints.check()
            texts.append(_page_text(reader, index, label))
            total += len(texts[-1]) - RUNNING_ROOM
            if budget is not None and _past_cap(total, budget) and len(texts) < len(indexes):
                stopped = index + 1
                break
        indexes = indexes[:len(texts)]
        texts = _drop_running_lines(texts, indexes)
    if not any(texts) and problems:
        raise TmixError(f"{label} is a corrupt or damaged PDF: no text could be read "
                        f"({' '.join(problems[0].split())[:100]})")
    if not any(texts):
        subject = label if spec is None else f"{label} (pages {spec})"
        raise TmixError(f"{subject} has no text layer (looks scanned); run OCR first, e.g. ocrmypdf")
    return _join_pages(indexes, texts), len(indexes), stopped


def _past_cap(chars: int, budget: Budget) -> bool:
    """Whether `chars` characters of text are past what the model could use even after a --truncate cut (the cap
    is looked up only past SMALL of them)."""
    if chars <= SMALL:
        return False
    cap = budget.cap
    return cap is not None and chars > cap.chars + textcap.MARGIN + textcap.TAIL + 2


def _page_text(reader: PdfReader, index: int, label: str) -> str:
    """The cleaned text of one page ("" when it has none)."""
    return _clean_page_text(_pdf_call(lambda: reader.pages[index].extract_text() or "", label))


def _drop_running_lines(texts: list[str], numbers: Sequence[int] | None = None, edge: int = 2) -> list[str]:
    """Keep a PDF's running headers and footers (see _running_keys) once; `numbers` are the pages' 0-based indexes
    in the file (default 0, 1, 2, ...), against which page numbering in such lines is checked."""
    numbers = range(len(texts)) if numbers is None else numbers
    pages = [text.split("\n") for text in texts]
    edges = [_edge_rows(lines, edge) for lines in pages]
    running = _running_keys(pages, edges, numbers)
    if not running:
        return texts
    seen: set[tuple[str, str | int]] = set()
    out = []
    for lines, rows, number in zip(pages, edges, numbers):
        kept = []
        for i, line in enumerate(lines):
            k = _running_key(line, number, running) if i in rows else None
            if k is not None:
                if k in seen:
                    continue
                seen.add(k)
            kept.append(line)
        out.append(_tidy("\n".join(kept)))
    return out


def _edge_rows(lines: list[str], edge: int) -> set[int]:
    """Indexes of the first and last `edge` non-blank lines of a page (up to 120 characters long)."""
    rows = [i for i, line in enumerate(lines) if line.strip()]
    return {i for i in rows[:edge] + rows[-edge:] if len(lines[i]) <= 120}


def _running_keys(pages: list[list[str]], edges: list[set[int]],
                  numbers: Sequence[int]) -> set[tuple[str, str | int]]:
    """Keys of the lines at the edge of at least half the pages (3 or more): ("=", line) for exact repeats, and
    (line with its page number as @, page number minus page index) for page furniture such as "Page 3 of 9"."""
    found: dict[tuple[str, str | int], set[int]] = defaultdict(set)
    for lines, rows, number in zip(pages, edges, numbers):
        for i in rows:
            line = _normal(lines[i])
            found["=", line].add(number)
            for key in _counter_keys(line, number):
                found[key].add(number)
    need = max(3, len(pages) / 2)
    return {key for key, on in found.items()
            if len(on) >= need and (key[0] == "=" or _is_furniture(key[0]))}


def _counter_keys(line: str, number: int) -> Iterator[tuple[str, int]]:
    """(line with one digit run as @, that run minus the page index) for each digit run of a short line."""
    if len(line.split()) > _COUNTER_WORDS:
        return
    for run in _DIGIT_RUN.finditer(line):
        yield f"{line[:run.start()]}@{line[run.end():]}", int(run.group()) - number


def _is_furniture(marked: str) -> bool:
    """True for a page number as page furniture ("3", "- 3 -", "Page 3", "p. 3", "3 of 9"), also beside a title
    after a separator ("Annual Report | 3 of 9") or before "Page"; False for a heading such as "Day 3"."""
    match = _COUNTER.search(marked)
    if match is None:
        return False
    before, after = marked[:match.start()].rstrip(), marked[match.end():].lstrip()
    if match.group("word"):
        return True
    return ((not _has_word(before) or before.endswith(_SEPARATORS))
            and (not _has_word(after) or after.startswith(_SEPARATORS)))


def _has_word(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _running_key(line: str, number: int, running: set[tuple[str, str | int]]) -> tuple[str, str | int] | None:
    """The key of the running line `line` on page index `number`, or None when it is content."""
    line = _normal(line)
    if ("=", line) in running:
        return "=", line
    return next((key for key in _counter_keys(line, number) if key in running), None)


def _normal(line: str) -> str:
    """A line with whitespace runs as single spaces, lower-cased: how running lines are compared."""
    return " ".join(line.split()).lower()


def _join_pages(indexes: list[int], texts: list[str]) -> str:
    """Join page texts with a short "--- page N ---" marker (real 1-based numbers) before each page but page 1
    (so a selection such as 2-3 marks its first page too)."""
    parts = []
    for index, text in zip(indexes, texts):
        if index > 0:
            parts.append(f"--- page {index + 1} ---")
        parts.append(text)
    return "\n\n".join(part for part in parts if part)


def _select_pages(spec: str | None, n_pages: int, label: str) -> list[int]:
    """All pages, or those chosen by a --pages spec (errors name the file)."""
    if spec is None:
        return list(range(n_pages))
    try:
        return parse_pages(spec, n_pages)
    except TmixError as exc:
        raise TmixError(f"{label}: {exc}") from None


def _open_pdf(raw: bytes, label: str, password: str | None) -> PdfReader:
    """Open a PDF with pypdf and decrypt it if needed (empty password first, then `password`)."""
    from pypdf import PdfReader

    if b"%%EOF" not in raw[-8192:]:
        raise TmixError(f"{label} is a corrupt or truncated PDF (no end-of-file marker)")
    reader = _pdf_call(lambda: PdfReader(io.BytesIO(raw)), label)
    if _pdf_call(lambda: reader.is_encrypted, label):
        _decrypt(reader, label, password)
    return reader


def _decrypt(reader: PdfReader, label: str, password: str | None) -> None:
    """Decrypt in place, trying the empty user password before `password`."""
    from pypdf.errors import DependencyError

    for candidate in ("", password) if password else ("",):
        try:
            if reader.decrypt(candidate):
                return
        except DependencyError as exc:
            raise TmixError(_missing_package(exc, label)) from None
        except Exception as exc:  # noqa: BLE001 - any pypdf failure becomes a one-line error
            raise TmixError(f"{label} is encrypted and could not be decrypted: {_reason(exc)}") from None
    if password:
        raise TmixError(f"wrong password for encrypted PDF {label}; check the --password value")
    raise TmixError(f"{label} is encrypted; give its password with --password")


def _pdf_call(fn: Callable[[], _T], label: str) -> _T:
    """Run a pypdf call, turning any failure into a "corrupt PDF" TmixError (a missing package: what to install)."""
    from pypdf.errors import DependencyError

    try:
        return fn()
    except TmixError:
        raise
    except DependencyError as exc:  # AES decryption at any step (opening, the empty password, a page) without it
        raise TmixError(_missing_package(exc, label)) from None
    except Exception as exc:  # noqa: BLE001 - any pypdf failure becomes a one-line error
        raise TmixError(f"{label} is a corrupt or unreadable PDF ({_reason(exc)})") from None


def _missing_package(exc: Exception, label: str) -> str:
    """The one-line error for a PDF that needs a package pypdf lacks (AES encryption needs cryptography)."""
    if "AES" in str(exc) or "cryptography" in str(exc):
        return f"{label} is encrypted with AES, which needs the cryptography package: pip install cryptography"
    return f"{label} needs a package that is not installed ({_reason(exc)})"


def _reason(exc: Exception) -> str:
    """A short one-line reason for a pypdf exception."""
    message = " ".join(str(exc).split())[:120]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class _Collect(logging.Handler):
    """Keeps pypdf's log messages instead of letting them reach the user."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[list[str]]:
    """Silence pypdf's logger and warnings while it runs; yields the warning messages it logged."""
    logger = logging.getLogger("pypdf")
    saved = logger.level, logger.propagate, logger.handlers[:]
    handler = _Collect()
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.handlers[:] = [handler]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield handler.messages
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]
