"""A filled PDF form: the values of its AcroForm fields, which the page text lacks, put beside their labels
(QA22 F5)."""

from __future__ import annotations

from docfiles import placed_pdf, with_fields, write
from tmixcli.documents import load_document

_H = 841.89  # an A4 page's height in points; placed_pdf takes millimetres from the top


def _y(mm: float) -> float:
    return _H - mm * 72 / 25.4


def _x(mm: float) -> float:
    return mm * 72 / 25.4


def test_text_fields_beside_their_labels(tmp_path):
    form = placed_pdf([[(15, "Application form", 14), (30, "Applicant name:"), (40, "Date of birth:"),
                        (50, "Requested amount:"), (50, "Currency:", 11, 120)]])
    fields = [dict(name="name", value="Greta Lindqvist", rect=(150, _y(30) - 5, 320, _y(30) + 12)),
              dict(name="dob", value="1984-02-29", rect=(150, _y(40) - 5, 320, _y(40) + 12)),
              dict(name="amount", value="12,500", rect=(150, _y(50) - 5, 330, _y(50) + 12)),
              dict(name="currency", value="EUR", rect=(400, _y(50) - 5, 480, _y(50) + 12)),
              dict(name="ref", value="A-77", tooltip="Reference number", rect=(150, _y(120), 300, _y(120) + 15)),
              dict(name="empty", value="", rect=(150, _y(60), 300, _y(60) + 15)),
              dict(name="secret", value="hidden value", flag=2, rect=(150, _y(70), 300, _y(70) + 15))]
    text = load_document(write(tmp_path, "form.pdf", with_fields(form, fields))).text
    assert text == ("Application form\nApplicant name: Greta Lindqvist\nDate of birth: 1984-02-29\n"
                    "Requested amount: 12,500 Currency: EUR\nReference number: A-77")


def test_check_boxes_choices_and_radio_buttons(tmp_path):
    form = placed_pdf([[(20, "Smoker"), (30, "Newsletter"), (40, "Country:"), (50, "Payment:"),
                        (50, "Card", 11, 110), (50, "Cash", 11, 150)], [(20, "Page two.")]])
    radio = 1 << 15
    fields = [dict(name="smoker", value="/Yes", kind="/Btn", state="/Yes", rect=(60, _y(20) - 4, 72, _y(20) + 8)),
              dict(name="news", value="/Off", kind="/Btn", state="/Off", rect=(60, _y(30) - 4, 72, _y(30) + 8)),
              dict(name="country", value="Norway", kind="/Ch", rect=(100, _y(40) - 4, 200, _y(40) + 10)),
              dict(name="pay", value="/Cash", kind="/Btn", flags=radio, state="/Off",
                   rect=(_x(104), _y(50) - 4, _x(108), _y(50) + 8)),
              dict(name="pay", value="/Cash", kind="/Btn", flags=radio, state="/Cash",
                   rect=(_x(144), _y(50) - 4, _x(148), _y(50) + 8)),
              dict(name="notes", value="Call after 5 pm", page=1, rect=(60, _y(30), 300, _y(30) + 14)),
              dict(name="send", value="/Off", kind="/Btn", flags=1 << 16, rect=(60, _y(90), 100, _y(90) + 14))]
    text = load_document(write(tmp_path, "boxes.pdf", with_fields(form, fields))).text
    assert text == ("Smoker [x]\nNewsletter [ ]\nCountry: Norway\nPayment: ( ) Card (x) Cash\n\n--- page 2 ---\n\n"
                    "Page two.\nnotes: Call after 5 pm")
