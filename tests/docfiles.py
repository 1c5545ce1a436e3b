"""Documents built in tmp_path for the reader tests: PDFs (make_pdf, encrypt), files (write), and the check that
reading one fails in one line (expect_error)."""

from __future__ import annotations

import io
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
