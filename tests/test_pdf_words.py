"""Words hyphenated at a PDF's line ends: joined again in any script with lower case, a hyphen that belongs to the
word kept ("self-driving", "follow-up"), the document's own spelling deciding where it has one (QA22 F14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from docfiles import make_pdf, write
from tmixcli.documents import load_document
from tmixcli.pdfpages import clean_page_text, clean_pages

UNICODE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@pytest.mark.parametrize("broken, joined", [
    ("a ware-\nhouse", "a warehouse"),
    ("a self-\ndriving fleet", "a self-driving fleet"),
    ("the follow-\nup call", "the follow-up call"),
    ("an e-\nmail", "an e-mail"),
    ("state-of-\nthe-art", "state-of-the-art"),
    ("значно розши-\nрилася.", "значно розширилася."),
    ("η διευθύ-\nντρια", "η διευθύντρια"),
    ("odborná doku-\nmentace, za-\nčátek", "odborná dokumentace, začátek"),
    ("Halvorsen-\nMarine", "Halvorsen-\nMarine"),
    ("2023-\n2024", "2023-\n2024"),
    ("COVID-\n19", "COVID-\n19"),
])
def test_line_end_hyphens(broken, joined):
    assert clean_page_text(broken) == joined


def test_the_document_spelling_decides():
    """A word the document writes with a hyphen elsewhere keeps it at a break; one it writes closed up is joined."""
    pages = ["Our co-operation with Oslo and the database grew.", "The co-\noperation and the data-\nbase."]
    assert clean_pages(pages)[1] == "The co-operation and the database."
    assert clean_pages(["Our cooperation grew.", "The co-\noperation and the data-\nbase."])[1] == (
        "The cooperation and the database.")


@pytest.mark.skipif(not UNICODE_FONT.is_file(), reason="needs the DejaVuSans font")
def test_a_pdf_rejoins_words_across_its_pages(tmp_path):
    pages = ["The centre uses a self-\ndriving forklift fleet and a follow-\nup plan.",
             "Kyiv: продажів у місті значно розши-\nрилася. The Nor-\ndic office uses a fleet-\nwide plan.",
             "The fleet-wide plan was approved."]
    text = load_document(write(tmp_path, "words.pdf", make_pdf(pages, font=UNICODE_FONT))).text
    assert "a self-driving forklift fleet and a follow-up plan." in text
    assert "значно розширилася. The Nordic office uses a fleet-wide plan." in text
