"""Running headers and footers of PDFs made with fpdf2, text placed where a real layout puts it: page furniture in
the top or bottom margin is kept once, content that repeats (fields, year headings, body lines) stays on every page."""

from __future__ import annotations

from fpdf import FPDF

from docfiles import placed_pdf, write
from tmixcli.documents import load_document

_STAFF = [("Anna Kowal", "Active"), ("Ben Ortiz", "Terminated"), ("Chen Wei", "Active"), ("Dara Singh", "Active"),
          ("Eli Novak", "Terminated"), ("Fay Moreau", "Active")]


def _text(tmp_path, pages, name="doc.pdf", **kwargs) -> str:
    return load_document(write(tmp_path, name, placed_pdf(pages, **kwargs))).text


def _page(text: str, n: int) -> str:
    """Page n's part of a document's text."""
    return text.split("--- page ")[n - 1]


def test_one_record_per_page_keeps_its_repeated_fields(tmp_path):
    """A record's "Department: Logistics" and "Status: Active" repeat on most pages; the page title, the repeated
    footer and its page number are the furniture (QA22 F1)."""
    pages = [[(15, "Staff record"), (23, f"Name: {name}"), (31, f"Employee number: E-{1000 + i}"),
              (39, "Department: Logistics"), (47, f"Status: {status}"), (-20, f"Status: {status}"),
              (-10, f"Page {i} of 6", 9)] for i, (name, status) in enumerate(_STAFF, 1)]
    text = _text(tmp_path, pages)
    assert text.count("Staff record") == 1 and text.count("Page 1 of 6") == 1 and "Page 2 of 6" not in text
    for i, (name, status) in enumerate(_STAFF, 1):
        page = _page(text, i)
        assert f"Name: {name}" in page and "Department: Logistics" in page, page
        assert page.count(f"Status: {status}") == 2, page


def test_headings_that_are_numbers_stay(tmp_path):
    """Year headings (numbered like the pages, 2017 apart), "§ n" and "n." headings are content; a bare page number
    in the bottom margin is not."""
    for heading in ("{year}", "§ {n}", "{n}.", "{year}", "Section {n}"):
        pages = [[(15, heading.format(n=n, year=2017 + n)), (25, f"Event number {n} of the history, at length."),
                  (-10, str(n), 9)] for n in range(1, 7)]
        text = _text(tmp_path, pages)
        for n in range(1, 7):
            assert heading.format(n=n, year=2017 + n) in _page(text, n).split("\n"), text
            assert f"Event number {n}" in text
        assert text.split("\n").count("1") == 1 and not {"2", "3", "6"} & set(text.split("\n"))


def test_a_line_repeated_below_changing_first_lines_stays(tmp_path):
    """The second line of every page repeats, but the line above it differs: it is body text, not a header."""
    places = ["Ghent", "Lyon", "Porto", "Riga"]
    pages = [[(15, f"Page about the plant in {place}."), (23, "A second line of this page.")] for place in places]
    text = _text(tmp_path, pages)
    assert text.count("A second line of this page.") == 4


def test_a_line_repeated_mid_page_stays(tmp_path):
    pages = [[(15, f"Minutes of meeting {n}"), (140, "Approved by the board."), (150, f"Budget {n * 7} million")]
             for n in range(1, 6)]
    assert _text(tmp_path, pages).count("Approved by the board.") == 5


def test_header_and_two_line_footer_kept_once_in_any_stream_order(tmp_path):
    """A header drawn after the body (as Word does) and a footer of two lines, the inner one repeated exactly."""
    pages = [[(30, f"Body of page {n}: the fleet grew to {10 + n} vessels."), (40, "Status: Active"),
              (12, "Acme Shipping ASA - Annual Report 2023", 9), (-16, "Confidential - internal use only", 8),
              (-10, f"- {n} -", 8)] for n in range(1, 6)]
    text = _text(tmp_path, pages)
    for line in ("Acme Shipping ASA - Annual Report 2023", "Confidential - internal use only", "- 1 -"):
        assert text.count(line) == 1, text
    assert "- 2 -" not in text and text.count("Status: Active") == 5
    for n in range(1, 6):
        assert f"the fleet grew to {10 + n} vessels." in _page(text, n)


def test_a_bare_figure_in_the_footer_that_is_not_the_page_number_stays(tmp_path):
    pages = [[(20, f"Row {n} of the table."), (-10, "42" if n == 4 else str(n), 9)] for n in range(1, 6)]
    lines = _text(tmp_path, pages).split("\n")
    assert lines.count("42") == 1 and lines.count("1") == 1 and not {"2", "3", "5"} & set(lines)


def test_journal_running_heads_with_the_page_number_apart(tmp_path):
    """Even pages "4   Smith et al.", odd pages "Tidal Forecasting with Deep Learning   5": a title and a page
    number set apart by white space only are running heads, each kept once (QA22 F16)."""
    pages = []
    for n in range(1, 9):
        head = ([(12, str(n), 9, 20), (12, "Smith et al.", 9, 170)] if n % 2 == 0 else
                [(12, "Tidal Forecasting with Deep Learning", 9, 20), (12, str(n), 9, 188)] if n > 1 else [])
        pages.append([*head, (25, f"Body of page {n}: an error of {n / 10:.1f} metres on test set {n}.")])
    text = _text(tmp_path, pages)
    assert text.count("Smith et al.") == 1 and text.count("Tidal Forecasting") == 1, text
    for n in range(1, 9):
        assert f"on test set {n}." in _page(text, n)


def test_book_running_heads_whose_title_changes(tmp_path):
    """One-piece heads "Chapter 2: Naming 5" set apart from the body: each chapter's head kept once."""
    chapters = ["Chapter 1: Syntax"] * 3 + ["Chapter 2: Naming"] * 4
    pages = [[(14, f"{title} {n}"), (30, f"Text of page {n}, which explains the rules."),
              (36, "More text follows on this page.")] for n, title in enumerate(chapters, 1)]
    text = _text(tmp_path, pages)
    assert text.count("Chapter 1: Syntax") == 1 and text.count("Chapter 2: Naming") == 1, text
    assert text.count("More text follows on this page.") == 7


def test_numbered_headings_in_the_body_flow_stay(tmp_path):
    """A heading numbered like the page, in the body's size and spacing, is content ("Harbour Guide 3")."""
    for heading in ("Harbour Guide {n}", "Day {n}"):
        pages = [[(15, heading.format(n=n)), (21, f"Visit {n} goes to the harbour."),
                  (27, "The group sleeps on board.")] for n in range(1, 6)]
        text = _text(tmp_path, pages)
        assert all(heading.format(n=n) in text for n in range(1, 6)), text


def test_a_number_heading_larger_than_the_body_is_not_a_page_number(tmp_path):
    """A bare number in a heading's size at the top of each page is a heading; the page numbers in the footer,
    smaller than the body, are not."""
    pages = [[(15, str(n), 20), (30, f"The text of part {n}."), (-10, str(n), 9)] for n in range(1, 6)]
    lines = _text(tmp_path, pages).split("\n")
    for n in range(1, 6):
        assert lines.count(str(n)) == (2 if n == 1 else 1), lines


def test_a_turned_watermark_leaves_the_header_to_be_found(tmp_path):
    """Text drawn turned ("DRAFT" across the page) has no place on the page; the running lines still do."""
    pdf = FPDF()
    for n in range(1, 5):
        pdf.add_page()
        pdf.set_font("Helvetica", size=9)
        pdf.text(20, 12, "Orion Holdings - Quarterly Review")
        pdf.text(100, 287, f"Page {n}")
        with pdf.rotation(45, 100, 150):
            pdf.set_font("Helvetica", size=40)
            pdf.text(60, 150, "DRAFT")
        pdf.set_font("Helvetica", size=11)
        pdf.text(20, 30, f"Quarter {n} sales rose by {n * 3} percent.")
    text = load_document(write(tmp_path, "draft.pdf", bytes(pdf.output()))).text
    assert text.count("Orion Holdings") == 1 and "Page 2" not in text and text.count("DRAFT") == 4, text


def test_a_footer_split_into_pieces_at_one_height(tmp_path):
    """A footer whose left and right parts are drawn apart in the page's stream (one part, the body, then the
    other) is one row: its page number is a running line though the left part differs on each page."""
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
    for first in (True, False):
        pages = []
        for n, day in enumerate(days, 1):
            left, number = (-10, f"Minutes of {day}", 9), (-10, f"Page {n} of 5", 9, 170)
            pages.append([number, (25, f"The board met on {day}."), left] if first else
                         [left, (25, f"The board met on {day}."), number])
        text = load_document(write(tmp_path, "split.pdf", placed_pdf(pages))).text
        assert text.count("Page 1 of 5") == 1 and "Page 3 of 5" not in text, text
        assert all(f"Minutes of {day}" in text for day in days)
