"""Documents as the model reads them: each input (a file or stdin, in any format tmix reads) parsed by its format's
reader into a Document of clean text, several inputs and folders joined as one under "Document i: name" headings, and
a text past what the model could use refused or (--truncate) cut; how many bytes are read is textcap's."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from tmixcli import checkpoints, textcap
from tmixcli.errors import TmixError
from tmixcli.folders import distinct_names, folder_files, is_folder, read_folder, refuse_twice
from tmixcli.htmltext import looks_html, page_text
from tmixcli.inputs import SMALL, Chunks, Input, file_chunks, held_chunks, read_input, sha256, spool_chunks
from tmixcli.zipdocs import zip_document_text
from tmixcli.filekind import names_stdin, readable_name
from tmixcli.pdftext import is_pdf, named_pdf, pdf_text, reason
from tmixcli.sizes import human_size
from tmixcli.textcap import Budget
from tmixcli.textfile import text_file
from tmixcli.tidy import nonempty, tidy
from tmixcli.ziputil import ZIP_MAGIC, Reach


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
    got = read_input(path, stdin, functools.partial(textcap.raw_limit, path, budget),
                     functools.partial(textcap.html_page, label=path))
    try:
        doc = _read(path, got, pages, password, budget, among)
    finally:
        got.close()
    cap = budget.cap if len(doc.text) > SMALL else None  # the model tokenizes a shorter text in well under a second
    return within_cap(doc, cap, budget.truncate, got.label)


def _read(path: str, got: Input, pages: str | None, password: str | None, budget: Budget, among: bool) -> Document:
    """The Document of what read_input got: its bytes whole, its head with the rest read again in chunks (an HTML
    page), or (--truncate) its first lines; any reader's failure is a one-line TmixError. Only an input read whole
    can be a PDF (one past its limit was refused)."""
    end = textcap.input_end(path, got.size) if got.more else b""
    chunks = _html_chunks(path, got, end)
    cut = got.more and chunks is None
    raw = textcap.cut_input(got, budget, end) if cut else got.raw
    try:
        doc = _parse(got.name, got.label, raw, not got.more and is_pdf(raw), pages, password, budget, among, chunks)
    except TmixError:
        raise
    except Exception as exc:  # noqa: BLE001 - a reader's unforeseen failure on odd input: still one line, named
        raise TmixError(f"{got.label} could not be read ({reason(exc)})") from None
    if cut:
        whole = f"{got.amount()} in all" if got.size else "it went on"
        doc = replace(doc, partial=True, notes=(*doc.notes, f"read only the first {human_size(len(raw))} of "
                                                f"{got.label} ({whole}) for --truncate"))
    return doc


def _html_chunks(path: str, got: Input, end: bytes) -> Chunks | None:
    """All the bytes of an HTML page of which only the head is held, read again in chunks: from its file or from the
    temp file a stream was copied to (textcap.html_page); else None."""
    if got.spool is not None and got.size is not None:
        return spool_chunks(got.spool, got.size)
    if got.more and got.size is not None and textcap.html_page(got.raw, got.label, end):
        return file_chunks(path, got.size)
    return None


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


def _parse(name: str, label: str, raw: bytes, pdf: bool, pages: str | None, password: str | None,
           budget: Budget, among: bool = False, chunks: Chunks | None = None) -> Document:
    """The Document in `raw` (a PDF's where `pdf`), read by the reader its format needs; `chunks` gives all the bytes
    of an HTML file of which `raw` holds only the head."""
    if pdf:
        return _pdf_document(name, label, raw, hashlib.sha256(raw).hexdigest(), pages, password, budget)
    if pages is not None:
        raise TmixError(f"--pages only applies to PDF files, and {label} is not a PDF")
    if password is not None and not among:
        raise TmixError(f"--password only applies to PDF files, and {label} is not a PDF")
    digest = sha256(chunks) if chunks else hashlib.sha256(raw).hexdigest()
    reach = Reach(functools.partial(_past_cap, budget=budget))
    notes: tuple[str, ...] = ()
    if raw.startswith(ZIP_MAGIC):
        text, notes = zip_document_text(raw, label, reach)
        if notes and not tidy(text):
            raise TmixError(f"{label} has no text tmix can read ({'; '.join(notes)})")
        text = nonempty(tidy(text), label)
    elif looks_html(raw, label):
        text = nonempty(tidy(page_text(chunks or held_chunks(raw), label, reach)), label)
    else:
        text, note = text_file(raw, label)
        return Document(name=name, text=text, sha256=digest, pages=None, notes=(note,) if note else ())
    doc = Document(name=name, text=text, sha256=digest, pages=None, notes=notes)
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
    if len(paths) == 1 and not is_folder(paths[0]):
        return load_document(paths[0], pages=pages, password=password, stdin=stdin, budget=budget)
    if pages is not None:
        raise TmixError("--pages applies to a single PDF; give one document with it")
    if sum(map(names_stdin, paths)) > 1:
        raise TmixError("stdin (-) can be read only once")
    members = {p: folder_files(Path(p), unreadable=True) for p in paths if is_folder(p)}
    refuse_twice([(f, p, p in members) for p in paths if p != "-" for f in members.get(p, [Path(p)])
                   if p not in members or f.is_file()])  # a folder's broken links and FIFOs are skipped, not compared
    docs: list[Document] = []
    sources: list[str] = []  # each document's path as given, or as its folder and its name
    skipped: list[str] = []
    pdfs = 0  # PDFs skipped in a folder (a wrong --password, a damaged file): --password was tried on them
    read = functools.partial(load_document, password=password, budget=budget, among=True)
    for p in paths:
        if p not in members:
            docs.append(read(p, stdin=stdin))
            sources.append(p)
            continue
        got, notes, refused = read_folder(p, members[p], read)
        sources += [f for f, _ in got]
        docs += [d for _, d in got]
        skipped += notes
        pdfs += sum(named_pdf(f.name) for f in refused)
    if password is not None and not pdfs and all(d.pages is None for d in docs):
        raise TmixError("--password only applies to PDF files, and none of the documents is a PDF")
    names = distinct_names(sources, [d.name for d in docs])
    docs = [replace(d, name=readable_name(name)) for d, name in zip(docs, names)]
    skipped += _same_content(docs)
    doc = docs[0] if len(docs) == 1 else combine(docs)
    cap = budget.cap if len(doc.text) > SMALL and not budget.truncate else None
    if cap is not None and len(doc.text) > cap.chars:
        raise TmixError(textcap.too_much(f"{doc.name} have {len(doc.text)} characters of text together", cap))
    return replace(doc, notes=doc.notes + tuple(skipped))


def _same_content(docs: Sequence[Document]) -> list[str]:
    """A note for each document whose bytes are those of one before it (a copy in a folder): both are read."""
    first: dict[str, str] = {}
    notes = []
    for d in docs:
        if d.sha256 in first:
            notes.append(f"{d.name} has the same content as {first[d.sha256]} (both are read)")
        first.setdefault(d.sha256, d.name)
    return notes


def combine(docs: Sequence[Document]) -> Document:
    """Several documents as one: each under a "Document i: name" heading, in the order given."""
    digest = hashlib.sha256("\n".join(d.sha256 for d in docs).encode()).hexdigest()
    pdf_pages = [d.pages for d in docs if d.pages is not None]
    return Document(name=" + ".join(d.name for d in docs), text=joined_text([(d.name, d.text) for d in docs]),
                    sha256=digest, pages=sum(pdf_pages) if pdf_pages else None, parts=tuple(docs),
                    notes=tuple(n for d in docs for n in d.notes), partial=any(d.partial for d in docs))


def joined_text(named_texts: Sequence[tuple[str, str]]) -> str:
    """The text the model reads for several documents. A heading does not name how many follow, so one more document
    at the end leaves the earlier ones' tokens as they were: their KV rows are reused (reuse.py)."""
    return "\n\n".join(f"Document {i}: {name}\n\n{text.strip()}" for i, (name, text) in enumerate(named_texts, 1))


def _pdf_document(name: str, label: str, raw: bytes, digest: str, spec: str | None, password: str | None,
                  budget: Budget) -> Document:
    """A PDF's Document; its pages are read only until their text is surely past the model's cap."""
    got = pdf_text(raw, label, spec, password, functools.partial(_past_cap, budget=budget))
    doc = Document(name=name, text=got.text, sha256=digest, pages=got.pages, notes=got.notes)
    return doc if got.stopped is None else _read_in_part(doc, label, budget, got.stopped)


def _read_in_part(doc: Document, label: str, budget: Budget, page: int | None = None) -> Document:
    """A document read only until its text was surely past the model's cap (up to `page` of a PDF): refused, or
    with --truncate marked partial, with a note."""
    where = f" by page {page}" if page else ""
    if not budget.truncate:
        raise TmixError(textcap.too_much(f"{label} has at least {len(doc.text)} characters of text{where}",
                                         budget.cap, pdf=page is not None))
    read = f"{label} only up to page {page}" if page else f"only the beginning of {label}"
    return replace(doc, partial=True, notes=(*doc.notes, f"read {read}, already more than the model's context could "
                                             "hold"))


def _past_cap(chars: int, budget: Budget) -> bool:
    """Whether `chars` characters of text are past what the model could use even after a --truncate cut (the cap
    is looked up only past SMALL of them)."""
    if chars <= SMALL:
        return False
    cap = budget.cap
    return cap is not None and chars > cap.chars + textcap.MARGIN + textcap.TAIL + 2

