"""Documents built in tmp_path for the reader tests: PDFs (make_pdf, placed_pdf, with_fields, encrypt), files
(write), and the check that reading one fails in one line (expect_error)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from tmixcli.documents import load_document
from tmixcli.errors import TmixError


def make_pdf(pages: list[str], font: Path | None = None) -> bytes:
    """A PDF with one page per string ("" gives a page with only a drawn rectangle, no text)."""
    pdf = FPDF()
    if font is not None:
        pdf.add_font("Uni", fname=str(font))
    for text in pages:
        pdf.add_page()
        if text:
            pdf.set_font("Uni" if font else "Helvetica", size=12)
            pdf.multi_cell(0, 6, text)
        else:
            pdf.set_fill_color(40, 40, 40)
            pdf.rect(20, 20, 150, 200, style="F")
    return bytes(pdf.output())


def encrypt(data: bytes, user_password: str, algorithm: str | None = None) -> bytes:
    """Re-save a PDF encrypted with the given user password (RC4 by default, which needs no extra package)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-pw", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> str:
    """Write bytes to tmp_path/name and return the path as a string."""
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def expect_error(path: str, *fragments: str, **kwargs) -> TmixError:
    """load_document must raise a code-2, one-line TmixError naming the file and containing fragments."""
    with pytest.raises(TmixError) as info:
        load_document(path, **kwargs)
    message = str(info.value)
    assert info.value.code == 2
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def placed_pdf(pages: list[list[tuple]], images: frozenset[int] = frozenset()) -> bytes:
    """A PDF (A4) with text where given: each page a list of (y, text) or (y, text, size) or (y, text, size, x) in
    mm, a negative y counted from the bottom edge (the baseline sits there); pages in `images` show a picture."""
    pdf = FPDF()
    pdf.set_auto_page_break(False)
    for index, items in enumerate(pages):
        pdf.add_page()
        if index in images:
            pdf.image(io.BytesIO(png_bytes()), x=10, y=10, w=190, h=260)
        for item in items:
            y, text, size, x = _placement(item)
            pdf.set_font("Helvetica", size=size)
            pdf.text(x, y if y >= 0 else 297 + y, text)
    return bytes(pdf.output())


def _placement(item: tuple) -> tuple:
    """(y, text, size, x) of a placed_pdf item, size 11 and x 20 mm unless given."""
    return (*item, 11, 20)[:4] if len(item) == 2 else (*item, 20)[:4]


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    """A small grey-gradient PNG, as a scanned page's picture."""
    rows = b"".join(b"\x00" + bytes((x * 5 + y * 3) % 256 for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def with_fields(data: bytes, fields: list[dict]) -> bytes:
    """Re-save a PDF with filled AcroForm widgets on its pages: each field a dict with page, name, value, rect
    (x0, y0, x1, y1 in points) and optional kind (/Tx, /Ch, /Btn), flags (/Ff), tooltip (/TU), state (/AS) and
    flag (the annotation's /F)."""
    from pypdf.generic import ArrayObject, DictionaryObject, FloatObject, NameObject, NumberObject, TextStringObject

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    refs = ArrayObject()
    for spec in fields:
        value = spec["value"]
        widget = DictionaryObject({
            NameObject("/Type"): NameObject("/Annot"), NameObject("/Subtype"): NameObject("/Widget"),
            NameObject("/FT"): NameObject(spec.get("kind", "/Tx")), NameObject("/T"): TextStringObject(spec["name"]),
            NameObject("/Rect"): ArrayObject(FloatObject(v) for v in spec["rect"]),
            NameObject("/V"): NameObject(value) if value.startswith("/") else TextStringObject(value),
        })
        if "flags" in spec:
            widget[NameObject("/Ff")] = NumberObject(spec["flags"])
        if "tooltip" in spec:
            widget[NameObject("/TU")] = TextStringObject(spec["tooltip"])
        if "state" in spec:
            widget[NameObject("/AS")] = NameObject(spec["state"])
        if "flag" in spec:
            widget[NameObject("/F")] = NumberObject(spec["flag"])
        ref = writer._add_object(widget)
        page = writer.pages[spec.get("page", 0)]
        page.setdefault(NameObject("/Annots"), ArrayObject()).append(ref)
        refs.append(ref)
    writer._root_object[NameObject("/AcroForm")] = DictionaryObject({NameObject("/Fields"): refs})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
