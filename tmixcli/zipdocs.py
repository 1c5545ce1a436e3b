"""Text of EPUB books and the choice of reader for ZIP-based documents, with the standard library.

Each reader (here and in htmltext.py, docx.py, odt.py, pptx.py) returns plain text with one paragraph per line (table
rows become `a | b | c` lines, list items `- item`), as PDF text comes out: no blank lines between paragraphs, which the
small default model reads markedly better (on the sample report it answers the revenue question right with
single newlines and wrong, dense attention included, with blank lines). Any failure is a one-line TmixError
naming the file; an empty result is the caller's to refuse.
"""

from __future__ import annotations

import zipfile
from posixpath import dirname, join, normpath
from typing import NamedTuple
from urllib.parse import unquote

from tmixcli.errors import TmixError
from tmixcli.docx import docx_text
from tmixcli.embeds import Embeds
from tmixcli.formats import FORMATS
from tmixcli.htmlcodec import decode_html
from tmixcli.htmltext import html_text
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


class ZipText(NamedTuple):
    """A ZIP-based document's text and the notes for status lines (the charts and embedded files left out)."""

    text: str
    notes: tuple[str, ...]


def zip_document_text(raw: bytes, label: str, reach: Reach | None = None) -> ZipText:
    """Text of a ZIP-based document: .docx, .odt, .pptx or .epub; other archives are refused by what they hold.
    Read only until `reach` says the text is surely past what the model could use; an embedded Word, PowerPoint or
    OpenDocument file is read where it sits, as far as a reach of its own allows."""
    reach = reach or Reach()
    embeds = Embeds(lambda data, name: _zip_text(data, name, Reach(reach.enough), embeds))
    try:
        text = _zip_text(raw, label, reach, embeds)
    except RecursionError:  # the readers recurse into nested elements; thousands of levels only a broken file has
        raise TmixError(f"{label} is damaged: its XML is nested too deeply to read") from None
    return ZipText(text, embeds.left.notes(label))


def _zip_text(raw: bytes, label: str, reach: Reach, embeds: Embeds) -> str:
    """zip_document_text's text, without the guard against too deep nesting."""
    with open_zip(raw, label) as zf:
        names = set(zf.namelist())
        if "word/document.xml" in names:
            return docx_text(zf, label, reach, embeds)
        if "META-INF/container.xml" in names:
            return epub_text(zf, label, reach)
        if "content.xml" in names and "mimetype" in names and member(zf, "mimetype", label).strip() == _ODT_MIME:
            return odt_text(zf, label, reach, embeds)
        if "ppt/presentation.xml" in names:
            return pptx_text(zf, label, reach, embeds)
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
