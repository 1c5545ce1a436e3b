"""tmixcli.pdftext and pdfpages through load_document: real PDFs built in tmp_path (pages, passwords, damage, running
headers and footers), every failure a one-line TmixError."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pytest
from fpdf import FPDF

from docfiles import encrypt, expect_error, make_pdf, write
from tmixcli.documents import Document, load_document, load_documents
from tmixcli.errors import TmixError
from tmixcli.pdfpages import clean_page_text, parse_pages

UNICODE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def test_pdf_all_pages(tmp_path, three_pages):
    path = write(tmp_path, "doc.pdf", three_pages)
    doc = load_document(path)
    assert isinstance(doc, Document)
    assert doc.name == "doc.pdf"
    assert doc.pages == 3
    assert doc.sha256 == hashlib.sha256(three_pages).hexdigest()
    assert doc.text == ("Alpha page one text.\n\n--- page 2 ---\n\nBravo page two text.\n\n"
                        "--- page 3 ---\n\nCharlie page three text.")


def test_pdf_detected_by_magic_not_suffix(tmp_path, three_pages):
    doc = load_document(write(tmp_path, "download.bin", three_pages))
    assert doc.pages == 3 and "Bravo" in doc.text


@pytest.mark.parametrize("spec, expected, pages", [
    ("2", ["Bravo"], 1),
    ("1,3", ["Alpha", "--- page 3 ---", "Charlie"], 2),
    ("2-3", ["Bravo", "Charlie"], 2),
    ("2-", ["Bravo", "Charlie"], 2),
    ("-2", ["Alpha", "Bravo"], 2),
    (" 3 , 1-1 ", ["Alpha", "Charlie"], 2),
])
def test_pdf_page_selection(tmp_path, three_pages, spec, expected, pages):
    doc = load_document(write(tmp_path, "doc.pdf", three_pages), pages=spec)
    assert doc.pages == pages
    for fragment in expected:
        assert fragment in doc.text
    missing = {"Alpha", "Bravo", "Charlie"} - {w for w in expected if "-" not in w}
    assert not any(word in doc.text for word in missing)


@pytest.mark.parametrize("spec, text", [
    ("2-3", "--- page 2 ---\n\nBravo page two text.\n\n--- page 3 ---\n\nCharlie page three text."),
    ("1,3", "Alpha page one text.\n\n--- page 3 ---\n\nCharlie page three text."),
])
def test_pdf_selected_pages_are_marked(tmp_path, three_pages, spec, text):
    assert load_document(write(tmp_path, "doc.pdf", three_pages), pages=spec).text == text


@pytest.mark.parametrize("spec, fragment", [
    ("", "bad page spec"),
    ("abc", "bad page spec"),
    ("1,,2", "bad page spec"),
    ("0", "pages start at 1"),
    ("3-1", "not a valid range"),
    ("2-5", "out of range"),
    ("4", "has 3 page(s)"),
])
def test_pdf_bad_page_specs(tmp_path, three_pages, spec, fragment):
    path = write(tmp_path, "doc.pdf", three_pages)
    expect_error(path, "doc.pdf", fragment, pages=spec)


def test_parse_pages():
    assert parse_pages("3-10", 12) == list(range(2, 10))
    assert parse_pages("1,4,7-9", 9) == [0, 3, 6, 7, 8]
    assert parse_pages("2,2,1-2", 3) == [0, 1]
    assert parse_pages("5-", 6) == [4, 5]
    assert parse_pages("-2", 6) == [0, 1] and parse_pages("- 2,5-", 6) == [0, 1, 4, 5]  # -N: pages 1 to N
    with pytest.raises(TmixError, match="page 7 in '-7' is out of range"):
        parse_pages("-7", 6)
    for bad in ("-", "--2", "2--", "-2-"):
        with pytest.raises(TmixError, match="bad page spec"):
            parse_pages(bad, 6)
    with pytest.raises(TmixError, match="page 7 in '7-' is out of range"):
        parse_pages("7-", 6)
    with pytest.raises(TmixError, match="out of range"):
        parse_pages("1-13", 12)
    with pytest.raises(TmixError, match="bad page spec"):
        parse_pages("1;2", 12)
    assert parse_pages("0000000000002", 3) == [1]
    with pytest.raises(TmixError, match=r"page 999999999999\.\.\. in the page spec is out of range"):
        parse_pages("2-" + "9" * 5000, 12)


def test_pages_on_text_file_is_an_error(tmp_path):
    expect_error(write(tmp_path, "notes.txt", b"hello"), "notes.txt", "--pages only applies to PDF",
                 pages="1")


def test_password_only_for_pdfs(tmp_path, three_pages):
    """--password on a document that is not a PDF is refused as --pages is; among several, one PDF is enough."""
    txt = write(tmp_path, "notes.txt", b"hello")
    expect_error(txt, "--password only applies to PDF files, and", "notes.txt is not a PDF", password="s")
    with pytest.raises(TmixError, match="--password only applies to PDF files, and .*notes.txt is not a PDF"):
        load_documents([txt], password="s")
    other = write(tmp_path, "other.txt", b"bye")
    with pytest.raises(TmixError, match="--password only applies to PDF files, and none of the documents is a PDF"):
        load_documents([txt, other], password="s")
    locked = write(tmp_path, "locked.pdf", encrypt(three_pages, "s"))
    assert "Alpha page one text." in load_documents([txt, locked], password="s").text
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder, "a.txt", b"alpha")
    write(folder, "b.pdf", encrypt(three_pages, "s"))
    assert load_documents([str(folder)], password="wrong").text == "alpha"  # tried on b.pdf, which is skipped
    (folder / "b.pdf").unlink()
    with pytest.raises(TmixError, match="none of the documents is a PDF"):
        load_documents([str(folder)], password="s")


def test_encrypted_pdf_needs_password(tmp_path, three_pages):
    path = write(tmp_path, "locked.pdf", encrypt(three_pages, "secret"))
    expect_error(path, "locked.pdf", "encrypted", "--password")
    expect_error(path, "locked.pdf", "wrong password", "--password", password="nope")
    doc = load_document(path, password="secret")
    assert doc.pages == 3 and "Charlie page three text." in doc.text


def test_encrypted_pdf_with_empty_user_password_loads(tmp_path, three_pages):
    doc = load_document(write(tmp_path, "owner-only.pdf", encrypt(three_pages, "")))
    assert "Alpha page one text." in doc.text


def _without_cryptography(monkeypatch) -> None:
    """Make pypdf act as without the cryptography package: its AES functions raise DependencyError."""
    from pypdf import _encryption
    from pypdf._crypt_providers import _fallback

    for name in ("CryptAES", "aes_cbc_decrypt", "aes_cbc_encrypt", "aes_ecb_decrypt", "aes_ecb_encrypt"):
        monkeypatch.setattr(_encryption, name, getattr(_fallback, name))


@pytest.mark.parametrize("algorithm, user_password", [("AES-256", "s3cret"), ("AES-128", "")])
def test_aes_encrypted_pdf(tmp_path, monkeypatch, three_pages, algorithm, user_password):
    """AES needs cryptography: with it an AES PDF is read; without it the error says so, never 'corrupt'."""
    pytest.importorskip("cryptography", reason="making an AES-encrypted PDF needs the cryptography package")
    path = write(tmp_path, "aes.pdf", encrypt(three_pages, user_password, algorithm))
    assert "Charlie page three text." in load_document(path, password=user_password or None).text
    if user_password:
        expect_error(path, "aes.pdf is encrypted; give its password with --password")
    _without_cryptography(monkeypatch)
    for password in {None, user_password or None}:
        expect_error(path, "aes.pdf is encrypted with AES, which needs the cryptography package: "
                     "pip install cryptography", password=password)


def test_missing_crypto_package_is_not_corrupt(tmp_path, monkeypatch, three_pages):
    """A DependencyError from any pypdf step (here a page of an encrypted PDF) names what to install."""
    from pypdf import PageObject
    from pypdf.errors import DependencyError

    def needs_aes(*_, **__) -> str:
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(PageObject, "extract_text", needs_aes)
    path = write(tmp_path, "locked.pdf", encrypt(three_pages, ""))
    err = expect_error(path, "locked.pdf is encrypted with AES", "pip install cryptography")
    assert "corrupt" not in str(err)


def test_scanned_pdf_needs_ocr(tmp_path):
    path = write(tmp_path, "scan.pdf", make_pdf(["", ""]))
    expect_error(path, "scan.pdf has no text layer", "looks scanned", "OCR", "ocrmypdf")


def test_selected_pages_without_text(tmp_path):
    path = write(tmp_path, "mixed.pdf", make_pdf(["Some text.", ""]))
    assert load_document(path).text == "Some text.\n\n--- page 2 ---"
    expect_error(path, "mixed.pdf", "no text layer", pages="2")


def test_truncated_pdf(tmp_path, three_pages):
    path = write(tmp_path, "cut.pdf", three_pages[: len(three_pages) // 2])
    expect_error(path, "cut.pdf", "corrupt")


@pytest.mark.parametrize("data", [
    b"%PDF-1.7\n" + b"this is not a pdf body " * 50,
    b"%PDF-1.4\ngarbage garbage\n%%EOF\n",
    b"%PDF-",
])
def test_garbage_after_magic(tmp_path, data):
    expect_error(write(tmp_path, "bad.pdf", data), "bad.pdf", "corrupt")


def test_damaged_pdf_body_is_corrupt_and_quiet(tmp_path, three_pages, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    damaged = three_pages[:300] + three_pages[700:]
    expect_error(write(tmp_path, "damaged.pdf", damaged), "damaged.pdf", "corrupt")
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_recoverable_pdf_loads_without_log_noise(tmp_path, three_pages, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    bent = re.sub(rb"startxref\n\d+", b"startxref\n12", three_pages)
    doc = load_document(write(tmp_path, "bent.pdf", bent))
    assert "Bravo page two text." in doc.text
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_pdf_after_junk(tmp_path, three_pages):
    """Up to a few KB before %PDF- are skipped, as PDF readers do; a text quoting the header stays text."""
    doc = load_document(write(tmp_path, "mail.pdf", b"\xef\xbb\xbf" + b"JUNK" * 300 + b"\n" + three_pages))
    assert doc.pages == 3 and "Bravo page two text." in doc.text
    text = b"A PDF file starts with %PDF-1.7 and ends with a trailer.\n"
    assert load_document(write(tmp_path, "about.txt", text)).text == text.decode().strip()


def test_pdf_suffix_without_magic(tmp_path):
    expect_error(write(tmp_path, "fake.pdf", b"just some words\n"), "fake.pdf", "not a valid PDF")


def test_pdf_hyphenation_and_spaces(tmp_path):
    text = "This is an exam-\nple of a state-of-the-art   layout.\nKeep Halvorsen-\nMarine and 2023-\n2024."
    doc = load_document(write(tmp_path, "hy.pdf", make_pdf([text])))
    assert "an example of a state-of-the-art layout." in doc.text
    assert "Halvorsen-\nMarine" in doc.text and "2023-\n2024" in doc.text
    assert not any(line != line.rstrip() for line in doc.text.splitlines())


@pytest.mark.skipif(not UNICODE_FONT.is_file(), reason="needs the DejaVuSans font")
def test_pdf_ligatures(tmp_path):
    pdf = make_pdf(["The \ufb01rst \ufb02oor has an o\ufb03ce and a wa\ufb04e sta\ufb00 room."], font=UNICODE_FONT)
    doc = load_document(write(tmp_path, "lig.pdf", pdf))
    assert "The first floor has an office and a waffle staff room." in doc.text


def test_clean_page_text_rules():
    raw = ("The \ufb01nal exam-\n  ple of bl\u00e5-\n\u00f8yd  of\r\nsoft\u00adhyph\u00ad\nenation   \r\n"
           "well-known  \n\n\n\nEnd")
    assert clean_page_text(raw) == "The final example of bl\u00e5\u00f8yd of\nsofthyphenation\nwell-known\n\nEnd"


class _ReportPDF(FPDF):
    def header(self):
        self.set_font("Helvetica", size=9)
        self.cell(0, 6, "Acme Shipping ASA - Annual Report 2023", new_x="LMARGIN", new_y="NEXT")

    def footer(self):
        self.set_y(-15)
        self.set_font("Helvetica", size=9)
        self.cell(0, 6, f"Page {self.page_no()} of {{nb}}")


def test_pdf_running_header_and_footer_kept_once(tmp_path):
    pdf = _ReportPDF()
    bodies = [f"Section {i}. The fleet grew to {10 + i} vessels.\nAcme Shipping ASA - Annual Report 2023 is "
              f"quoted here in the body of page {i}.\nPage {i} of 5\nThe end of section {i}." for i in range(1, 6)]
    for body in bodies:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 6, body)
    text = load_document(write(tmp_path, "annual.pdf", bytes(pdf.output()))).text
    assert text.count("Acme Shipping ASA - Annual Report 2023\n") == 1  # the header once, body quotes stay
    assert text.count("is quoted here in the body") == 5
    assert text.count("Page 1 of 5") == 2 and text.count("Page 3 of 5") == 1  # the footer once, mid-page copies stay
    for i in range(1, 6):
        assert f"The fleet grew to {10 + i} vessels." in text and f"The end of section {i}." in text
        assert i == 1 or f"--- page {i} ---" in text


def test_pdf_short_repeated_lines_kept_below_threshold(tmp_path):
    two = make_pdf(["Draft\nAlpha page one text.", "Draft\nBravo page two text."])
    assert load_document(write(tmp_path, "two.pdf", two)).text.count("Draft") == 2  # two pages: nothing dropped


def test_pdf_differing_figures_are_not_running_lines(tmp_path):
    """Short edge lines alike but for their figures are content; digits that count the pages mark running lines."""
    budgets = [("Harbor", 120), ("Forest", 340), ("Mountain", 75), ("River", 910)]
    pages = [f"- {i + 10} -\nProject {name} is led by team {i}.\nQ{i} revenue: {budget}\nBudget: {budget} million"
             for i, (name, budget) in enumerate(budgets, 1)]
    text = load_document(write(tmp_path, "projects.pdf", make_pdf(pages))).text
    assert text == ("- 11 -\nProject Harbor is led by team 1.\nQ1 revenue: 120\nBudget: 120 million\n\n"
                    "--- page 2 ---\n\nProject Forest is led by team 2.\nQ2 revenue: 340\nBudget: 340 million\n\n"
                    "--- page 3 ---\n\nProject Mountain is led by team 3.\nQ3 revenue: 75\nBudget: 75 million\n\n"
                    "--- page 4 ---\n\nProject River is led by team 4.\nQ4 revenue: 910\nBudget: 910 million")


_PLACES = ["Oslo", "Bergen", "Flam", "Alesund", "Trondheim"]


@pytest.mark.parametrize("line,furniture", [
    ("Page {n}", True), ("{n} of 5", True), ("- {n} -", True), ("p. {n}", True), ("{n}", True), ("{n}/5", True),
    ("Page {n} of 5", True), ("Harbour Guide 2024 | Page {n} of 5", True), ("Harbour Guide 2024 Page {n}", True),
    ("Harbour Guide - {n}", True), ("{n} | Harbour Guide", True),
    ("Day {n}", False), ("Step {n}", False), ("Question {n} (10 points)", False), ("Day {n} of 5", False),
    ("Chapter {n}", False), ("Part {n}: the trip", False), ("{n}. Introduction", False), ("Harbour Guide {n}", False),
])
def test_pdf_page_numbers_dropped_headings_kept(tmp_path, line, furniture):
    """A line that only numbers the page (beside a title at most) is kept once; a heading numbered like the pages
    ("Day 3" on page 3) is content on every page."""
    pages = [f"{line.format(n=n)}\nVisit {n} goes to {place}.\nThe group sleeps in {place}."
             for n, place in enumerate(_PLACES, 1)]
    text = load_document(write(tmp_path, "trip.pdf", make_pdf(pages))).text
    for n, place in enumerate(_PLACES, 1):
        assert f"Visit {n} goes to {place}." in text
        assert (line.format(n=n) in text.split("\n")) == (n == 1 or not furniture), text
