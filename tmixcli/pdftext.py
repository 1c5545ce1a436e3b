"""A PDF's text with pypdf: opened (and decrypted) from its bytes, its pages read one by one, every pypdf failure
or complaint turned into one line."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from tmixcli import checkpoints
from tmixcli.errors import TmixError
from tmixcli.pdfforms import place_fields
from tmixcli.pdflines import PageLines, page_lines
from tmixcli.pdftables import mark_tables
from tmixcli.pdfpages import clean_pages, join_pages, select_pages
from tmixcli.pdfrunning import RUNNING_ROOM, furniture_only, keep_once, running_lines

if TYPE_CHECKING:
    from pypdf import PdfReader

_T = TypeVar("_T")

PDF_MAGIC = b"%PDF-"
PDF_END = 8192  # a PDF's last bytes, which hold its end-of-file marker


def is_pdf(raw: bytes, end: bytes | None = None) -> bool:
    """A PDF by its %PDF- header: at the start, or after up to about 4 KB of junk (which readers skip) in a file
    that also ends like a PDF (so a text that mentions "%PDF-" stays text). `end`: the input's last bytes where
    `raw` holds only its first ones (b"" where they are not known: then only a header at the start tells)."""
    last = raw if end is None else end
    return raw[:1024].lstrip()[:5] == PDF_MAGIC or (PDF_MAGIC in raw[:4096] and b"%%EOF" in last[-PDF_END:])


def named_pdf(name: str) -> bool:
    """Whether a file's name says it is a PDF (.pdf, any case), whatever its bytes are."""
    return name.lower().endswith(".pdf")


class PdfText(NamedTuple):
    """A PDF's text as read: the text, the pages read, the page it stopped at (`enough`; else None) and the notes
    for status lines (pages without text)."""

    text: str
    pages: int
    stopped: int | None
    notes: tuple[str, ...]


def pdf_text(raw: bytes, label: str, spec: str | None, password: str | None,
             enough: Callable[[int], bool] | None = None) -> PdfText:
    """Extract the cleaned text of the selected pages, running headers and footers kept once, form values placed,
    table rows as `a | b` lines, joined with short page markers; reading stops once `enough` says its characters are
    surely past the model's cap."""
    with _quiet_pypdf() as problems:
        reader = _open_pdf(raw, label, password)
        n_pages = _pdf_call(lambda: len(reader.pages), label)
        if n_pages == 0:
            raise TmixError(f"{label} is empty: the PDF has no pages")
        indexes = select_pages(spec, n_pages, label)
        pages: list[PageLines] = []
        total, stopped = 0, None
        for index in indexes:
            checkpoints.check()
            pages.append(_pdf_call(functools.partial(_page_text, reader, index), label))
            total += len(pages[-1].text()) - RUNNING_ROOM
            if enough is not None and enough(total) and len(pages) < len(indexes):
                stopped = index + 1
                break
        indexes = indexes[:len(pages)]
        running = running_lines(pages, indexes)
        for page in pages:  # after the running lines are found by their text as drawn
            mark_tables(page)
    texts = clean_pages(["\n".join(kept) for kept in keep_once(pages, running)])
    subject = label if spec is None else f"{label} (pages {spec})"
    if not any(texts) and problems:
        raise TmixError(f"{label} is a corrupt or damaged PDF: no text could be read "
                        f"({' '.join(problems[0].split())[:100]})")
    if not any(texts):
        raise TmixError(f"{subject} has no text layer (looks scanned); run OCR first, e.g. ocrmypdf")
    bare = {index for index, page, found in zip(indexes, pages, running) if furniture_only(page, found)}
    if len(bare) == len(pages):
        line = next(text for text in texts if text).split("\n")[0]
        raise TmixError(f"{subject} has no text layer but a line repeated on its pages ({line[:60]!r}): looks "
                        "scanned; run OCR first, e.g. ocrmypdf")
    scans = [index for index, page in zip(indexes, pages) if index in bare and page.images]
    notes = (_scanned_note(label, scans),) if scans else ()
    return PdfText(join_pages(indexes, texts), len(indexes), stopped, notes)


def _page_text(reader: PdfReader, index: int) -> PageLines:
    """A page's text: its lines, where they sit, and its form values placed on them."""
    page = reader.pages[index]
    lines = page_lines(page)
    place_fields(page, lines)
    return lines


def _scanned_note(label: str, indexes: list[int]) -> str:
    """The status line for pages that show images but have no text: "pages 2-5 of x.pdf have no text ..."."""
    spans: list[list[int]] = []
    for index in indexes:
        if spans and spans[-1][1] == index:
            spans[-1][1] = index + 1
        else:
            spans.append([index + 1, index + 1])
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in spans[:8]] + (["..."] if len(spans) > 8 else [])
    which = f"page {shown[0]}" if len(indexes) == 1 else f"pages {', '.join(shown)}"
    return (f"{which} of {label} {'has' if len(indexes) == 1 else 'have'} no text, only images (scanned?): "
            "not read; run OCR first to read them, e.g. ocrmypdf")


def _open_pdf(raw: bytes, label: str, password: str | None) -> PdfReader:
    """Open a PDF with pypdf and decrypt it if needed (empty password first, then `password`)."""
    from pypdf import PdfReader

    if b"%%EOF" not in raw[-PDF_END:]:
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
            raise TmixError(f"{label} is encrypted and could not be decrypted: {reason(exc)}") from None
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
        raise TmixError(f"{label} is a corrupt or unreadable PDF ({reason(exc)})") from None


def _missing_package(exc: Exception, label: str) -> str:
    """The one-line error for a PDF that needs a package pypdf lacks (AES encryption needs cryptography)."""
    if "AES" in str(exc) or "cryptography" in str(exc):
        return f"{label} is encrypted with AES, which needs the cryptography package: pip install cryptography"
    return f"{label} needs a package that is not installed ({reason(exc)})"


def reason(exc: Exception) -> str:
    """A short one-line reason for an exception of pypdf or another reader."""
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
