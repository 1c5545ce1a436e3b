"""PDF pages without text: a scanned PDF whose only text is a scanner's stamp is refused as a scan, and image pages
without text inside a text PDF are named in a status line (QA22 F11)."""

from __future__ import annotations

from docfiles import expect_error, make_pdf, placed_pdf, write
from runcli import run
from tmixcli.documents import load_document

_STAMP = (-8, "Scanned with CamScanner", 8)


def test_a_scan_with_a_stamp_on_every_page_is_refused(tmp_path):
    path = write(tmp_path, "contract.pdf", placed_pdf([[_STAMP]] * 5, images=frozenset(range(5))))
    expect_error(path, "contract.pdf has no text layer but a line repeated on its pages ('Scanned with CamScanner')",
                 "looks scanned; run OCR first, e.g. ocrmypdf")
    expect_error(path, "contract.pdf (pages 2-4) has no text layer but a line repeated", pages="2-4")


def test_image_pages_without_text_are_named(tmp_path, capsys):
    pages = [[(20, "Chapter one text."), _STAMP], [_STAMP], [(20, "Chapter two text."), _STAMP], [_STAMP], [_STAMP],
             [(20, "The end."), _STAMP]]
    path = write(tmp_path, "mixed.pdf", placed_pdf(pages, images=frozenset({1, 3, 4})))
    doc = load_document(path)
    assert "Chapter two text." in doc.text and doc.text.count("Scanned with CamScanner") == 1
    note = (f"pages 2, 4-5 of {path} have no text, only images (scanned?): not read; run OCR first to read them, "
            "e.g. ocrmypdf")
    assert doc.notes == (note,)
    assert load_document(path, pages="1-4").notes == (note.replace("4-5", "4"),)
    assert load_document(path, pages="1-2").notes == ()  # two pages: the stamp is not a running line there
    code, out, err = run(capsys, "text", path)
    assert code == 0 and err == f"tmix: {note}\n" and "Chapter one text." in out


def test_blank_and_drawn_pages_are_not_called_scans(tmp_path):
    doc = load_document(write(tmp_path, "blank.pdf", make_pdf(["Some text.", "", "More text."])))
    assert doc.notes == () and "More text." in doc.text
