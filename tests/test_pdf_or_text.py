"""One rule says what a PDF is (pdftext.is_pdf), for the size limits as for the reader: a text or an HTML page that
mentions "%PDF-" stays what it is, however large; a PDF after a few KB of junk stays a PDF, however large."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

import bigdocs
from tmixcli.documents import load_document
from tmixcli.errors import TmixError
from tmixcli.textcap import Budget, TextCap

SMALL_CAP = TextCap(1024, 100)  # read as at most 400 KiB of text
LINES = "The budget line says 42 units for this quarter and more.\n" * 20_000  # 1.1 MiB


def texts(tmp_path: Path) -> tuple[Path, Path]:
    """Two texts past the cap, the same but for their first line: the second mentions the PDF header."""
    plain, mention = tmp_path / "plain.txt", tmp_path / "mention.txt"
    plain.write_text("Notes on the file header.\n" + LINES)
    mention.write_text("Notes on the %PDF- header.\n" + LINES)
    return plain, mention


def refusal(path: Path, budget: Budget) -> str:
    with pytest.raises(TmixError) as err:
        load_document(str(path), budget=budget)
    return str(err.value).replace(path.name, "NAME")


def test_a_text_that_mentions_the_pdf_header_is_refused_by_its_size_as_any_text(tmp_path):
    """Was read whole (as a PDF is) and refused by its characters: "mention.txt has 1160026 characters of text"."""
    plain, mention = texts(tmp_path)
    budget = Budget(False, lambda: SMALL_CAP)
    assert refusal(mention, budget) == refusal(plain, budget)
    assert refusal(mention, budget).endswith("NAME is 1.1 MiB, more than the model's 1024-token context can hold (at "
                                             "most 102400 characters: 1024 tokens of up to 100); use --truncate to "
                                             "keep its beginning")


def test_a_text_that_mentions_the_pdf_header_is_cut_as_any_text(tmp_path):
    """--truncate reads only as far as the cap for both, and says so (was: read whole, without the note)."""
    plain, mention = texts(tmp_path)
    docs = [load_document(str(p), budget=Budget(True, lambda: SMALL_CAP)) for p in (plain, mention)]
    assert [d.notes for d in docs] == [(f"read only the first 400.0 KiB of {p} (1.1 MiB in all) for --truncate",)
                                       for p in (plain, mention)]
    assert docs[0].text.split("\n")[1:] == docs[1].text.split("\n")[1:] and docs[1].partial


def test_an_html_page_that_mentions_the_pdf_header_is_read_in_chunks(tmp_path):
    """Its head is that of an HTML page, not a PDF's: never held whole (was: read whole into memory)."""
    path = bigdocs.write(tmp_path / "page.html", ["Notes on the %PDF- header.", *bigdocs.paragraphs(80_000)])
    tracemalloc.start()
    try:
        doc = load_document(str(path), budget=Budget(True, lambda: SMALL_CAP))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert doc.partial and doc.text.startswith("Notes on the %PDF- header.\nParagraph 0:")
    assert peak < path.stat().st_size, peak  # held whole, it took twice its size


def test_a_pdf_after_junk_past_the_text_cap_is_read_as_a_pdf(tmp_path):
    """Its header is not at the start, so its end (read from the file) tells: a PDF, not a text too long to read."""
    fpdf = pytest.importorskip("fpdf", reason="making a PDF needs fpdf2")
    pdf = fpdf.FPDF()
    pdf.set_subject("padding " * 40_000)  # 320 KB: past the bytes read before the limit is asked for
    pdf.set_font("Helvetica", size=12)
    for text in ("Alpha page one text.", "Bravo page two text.", "Charlie page three text."):
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    path = tmp_path / "mail.pdf"
    path.write_bytes(b"JUNK" * 300 + b"\n" + bytes(pdf.output()))
    doc = load_document(str(path), budget=Budget(False, lambda: TextCap(64, 10)))  # read as at most 2560 bytes of text
    assert doc.pages == 3 and "Bravo page two text." in doc.text
