"""Write the sample documents (report.pdf/.docx/.odt/.html, notes.txt, facts.json,
questions.json) deterministically from sources here.

Run from anywhere: `python sample_docs/make_samples.py`. report.pdf is built from report.md with fpdf2
(core Helvetica font, so no font files are needed), report.docx (a minimal WordprocessingML package, stored
uncompressed with fixed timestamps), report.odt (a minimal OpenDocument text package, likewise) and report.html
from the same source; notes.txt, facts.json and
questions.json come from the constants below.
"""

from __future__ import annotations

import html
import json
import textwrap
import zipfile
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).resolve().parent
FIXED_DATE = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)

NOTES = """\
Lindholm Library renovation - project notes

These notes collect what the working group agreed during the planning of the renovation of the Lindholm \
public library. They are meant for staff, volunteers and the local council, and they will be updated as the \
work goes on.

Background

The library building is more than fifty years old. The roof leaks in heavy rain, the heating system is \
worn out and the rooms are laid out for a time when people came mainly to borrow books. Today visitors also \
come to study, to use computers, to attend events and to meet other people. The working group was asked to \
plan a renovation that fixes the building and makes it fit for the way it is used today.

Budget and schedule

The renovation budget is 2.4 million kroner. The council approved the budget at its meeting in the spring, \
and no further money is expected. The working group must therefore choose carefully and keep a reserve for \
surprises, which are common in old buildings.

The work will be done in two stages so that the library can stay partly open. In the first stage the roof, \
the heating system and the windows will be replaced. In the second stage the ground floor will be rebuilt \
with a new children's corner, quiet study rooms and a larger event space. The library will close completely \
for about three weeks between the two stages, when the floors are sanded and the shelves are moved.

What visitors asked for

Before the planning started, the library asked visitors what they wanted from a renovated building. More \
than four hundred people answered. The most common wishes were more quiet places to study, better light, \
more power sockets for laptops and phones, a warmer building in winter and longer opening hours. Parents \
asked for a children's area where noise is not a problem, and older visitors asked for more comfortable \
chairs and larger print on signs.

Several visitors also asked for a small cafe. The working group agreed that a full cafe is not possible \
within the budget, but a coffee machine and a few tables near the entrance will be included.

Rooms and layout

The new ground floor will be divided into three zones. The zone near the entrance will be lively, with new \
books, newspapers, the coffee corner and the help desk. The middle zone will hold the main collection and \
the computers. The zone at the back, furthest from the street, will be the quiet zone, with study rooms \
that can be booked online.

The children's corner will move from the first floor to the ground floor, next to the garden door, so that \
families with prams do not need the lift. The corner will have low shelves, soft seating and a small stage \
for story hours.

The event space on the first floor will be made larger by removing a wall between two old offices. It will \
seat about eighty people and will have a simple sound system and a screen for talks and films.

Energy and environment

The new heating system will use a heat pump instead of the old oil boiler. Together with new windows and \
better insulation in the roof, this is expected to cut the energy use of the building by more than half. \
Where possible, old materials will be reused. The oak shelves from the reading room are in good condition \
and will be cleaned and moved to the new quiet zone.

Accessibility

The building must be easy to use for everyone. The main entrance will get an automatic door and a gentle \
ramp instead of the steps. The lift will be replaced, and a new accessible toilet will be built on the \
ground floor. Shelves in the main collection will be lower, so that books can be reached from a wheelchair, \
and the signs will use large, clear letters.

Volunteers

The library has a strong group of volunteers who help with reading clubs, homework help and events. During \
the closed weeks the volunteers will help to pack and move the collection. A list of tasks will be posted \
on the notice board, and volunteers can sign up for the days that suit them.

Risks

The main risks are hidden damage in the old building, delays in the delivery of the heat pump and rising \
prices for materials. The working group will meet every second week during the building work to follow \
the progress and decide quickly if something goes wrong. If costs rise, the event space may be simplified \
before any cuts are made to the children's corner or the accessibility work.

Communication

Visitors will be kept informed through posters in the library, the library's web page and the local \
newspaper. A simple drawing of the new layout will hang in the entrance so that people can see what is \
coming. Questions can be left at the help desk or sent by e-mail, and the working group will answer them \
in a short question-and-answer note each month.

Responsibilities

The project manager is Tomas Brekke. He leads the working group, keeps the schedule and is the contact \
person for the builders. Library staff are responsible for planning the move of the collection, and the \
council's property office is responsible for the contracts.

Next steps

The working group will publish the final drawings next month and invite visitors to an open evening where \
they can ask questions. The building work is planned to start after the summer holidays.
"""

FACTS = [
    {"doc": "report.pdf", "question": "What was the company's total revenue in 2023?",
     "answer": "48.7 million", "where": "start"},
    {"doc": "report.pdf", "question": "In which city did the new headquarters open?",
     "answer": "Stavanger", "where": "middle"},
    {"doc": "report.pdf", "question": "Who is the chief executive officer of the company?",
     "answer": "Ingrid Vassdal", "where": "end"},
    {"doc": "notes.txt", "question": "What is the renovation budget?",
     "answer": "2.4 million kroner", "where": "start"},
    {"doc": "notes.txt", "question": "Who is the project manager?",
     "answer": "Tomas Brekke", "where": "end"},
]

# More questions for `tmix eval --facts sample_docs/questions.json`: the default 135M model misses many of
# these even with dense attention, which is the point: they show what a start layer costs beyond easy facts.
MORE_FACTS = [
    ("report.pdf", "How many employees did the company have at the end of 2023?", ["312"]),
    ("report.pdf", "In which year was Halvorsen Marine Systems founded?", ["1987"]),
    ("report.pdf", "How many sonar units did the company deliver in 2023?", ["1,140"]),
    ("report.pdf", "How many new patent applications did the company file in 2023?", ["six", "6"]),
    ("report.pdf", "Which new sonar did the company launch in 2023?", ["SeaEye 7"]),
    ("report.pdf", "How many service visits did the service team complete in 2023?", ["2,300"]),
    ("report.pdf", "What was the sick leave in 2023?", ["3.9 percent", "3.9%"]),
    ("report.pdf", "How many complete bridge systems did the company deliver in 2023?", ["86"]),
    ("report.pdf", "How many vessels were connected to the monitoring service at the end of 2023?", ["560"]),
    ("report.pdf", "When will the company's annual general meeting be held?", ["May 2024"]),
    ("notes.txt", "What will replace the old oil boiler?", ["heat pump"]),
    ("notes.txt", "How many people will the event space seat?", ["eighty", "80"]),
    ("notes.txt", "How many people answered the library's survey of visitors?", ["four hundred", "400"]),
    ("notes.txt", "Where will the children's corner move to?", ["ground floor"]),
]
QUESTIONS = {
    "prompts": [["report.pdf"], ["notes.txt"], ["report.pdf", "notes.txt"], ["notes.txt", "report.pdf"]],
    "facts": [{"doc": f["doc"], "question": f["question"], "accept": [f["answer"]]} for f in FACTS]
    + [{"doc": d, "question": q, "accept": a} for d, q, a in MORE_FACTS],
}


def markdown_blocks(source: str) -> list[tuple[str, str]]:
    """Split simple markdown into ("title"|"heading"|"para", text) blocks separated by blank lines."""
    blocks = []
    for chunk in source.strip().split("\n\n"):
        text = " ".join(chunk.split())
        if text.startswith("# "):
            blocks.append(("title", text[2:]))
        elif text.startswith("## "):
            blocks.append(("heading", text[3:]))
        else:
            blocks.append(("para", text))
    return blocks


def build_pdf(source: str) -> bytes:
    """Typeset the markdown source as an A4 PDF with a real text layer (Helvetica, no hyphenation)."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title("Halvorsen Marine Systems AS - Annual Report 2023")
    pdf.set_author("Halvorsen Marine Systems AS")
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    for kind, text in markdown_blocks(source):
        if kind == "title":
            pdf.set_font("Helvetica", style="B", size=16)
            pdf.multi_cell(0, 9, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
        elif kind == "heading":
            pdf.ln(2)
            pdf.set_font("Helvetica", style="B", size=12.5)
            pdf.multi_cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        else:
            pdf.set_font("Helvetica", size=10.5)
            pdf.multi_cell(0, 5.2, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2.5)
    return bytes(pdf.output())


_DOCX_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'officeDocument" Target="word/document.xml"/></Relationships>'),
}


def build_docx(source: str) -> bytes:
    """The markdown source as a Word document: Title / Heading1 / body paragraphs, one run each."""
    styles = {"title": "Title", "heading": "Heading1"}
    paras = []
    for kind, text in markdown_blocks(source):
        style = f'<w:pPr><w:pStyle w:val="{styles[kind]}"/></w:pPr>' if kind in styles else ""
        paras.append(f'<w:p>{style}<w:r><w:t xml:space="preserve">{html.escape(text, quote=False)}</w:t></w:r></w:p>')
    document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
                + "".join(paras) + "<w:sectPr/></w:body></w:document>")
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, text in [*_DOCX_PARTS.items(), ("word/document.xml", document)]:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 3, 1, 12, 0, 0)), text.encode("utf-8"))
    return buf.getvalue()


_ODF_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
           'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
           'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"')


def build_odt(source: str) -> bytes:
    """The markdown source as an OpenDocument text file: headings and paragraphs, mimetype stored first."""
    paras = []
    for kind, text in markdown_blocks(source):
        tag = "text:p" if kind == "para" else f'text:h text:outline-level="{1 if kind == "title" else 2}"'
        paras.append(f"<{tag}>{html.escape(text, quote=False)}</{tag.split()[0]}>")
    content = ('<?xml version="1.0" encoding="UTF-8"?>\n'
               f'<office:document-content {_ODF_NS} office:version="1.3"><office:body><office:text>'
               + "".join(paras) + "</office:text></office:body></office:document-content>")
    manifest = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<manifest:manifest {_ODF_NS} manifest:version="1.3">'
                '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/'
                'vnd.oasis.opendocument.text"/><manifest:file-entry manifest:full-path="content.xml" '
                'manifest:media-type="text/xml"/></manifest:manifest>')
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, text in [("mimetype", "application/vnd.oasis.opendocument.text"), ("content.xml", content),
                           ("META-INF/manifest.xml", manifest)]:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 3, 1, 12, 0, 0)), text.encode("utf-8"))
    return buf.getvalue()


def build_html(source: str) -> str:
    """The markdown source as a small standalone HTML page (with a style block and a script readers must skip)."""
    body = []
    for kind, text in markdown_blocks(source):
        tag = {"title": "h1", "heading": "h2"}.get(kind, "p")
        body.append(f"<{tag}>{html.escape(text, quote=False)}</{tag}>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>Halvorsen Marine Systems AS - Annual Report 2023</title>\n"
            "<style>body { font-family: sans-serif; max-width: 40em; }</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n<script>console.log('not document text');</script>\n</body>\n</html>\n")


def build_notes(source: str) -> str:
    """Wrap the notes source to 78 columns, keeping paragraphs."""
    paragraphs = [" ".join(chunk.split()) for chunk in source.strip().split("\n\n")]
    return "\n\n".join(textwrap.fill(p, width=78, break_on_hyphens=False) for p in paragraphs) + "\n"


def main() -> None:
    """Write report.pdf, report.docx, report.odt, report.html, notes.txt and facts.json next to this script."""
    source = (HERE / "report.md").read_text(encoding="utf-8")
    (HERE / "report.pdf").write_bytes(build_pdf(source))
    (HERE / "report.docx").write_bytes(build_docx(source))
    (HERE / "report.odt").write_bytes(build_odt(source))
    (HERE / "report.html").write_text(build_html(source), encoding="utf-8")
    (HERE / "notes.txt").write_text(build_notes(NOTES), encoding="utf-8")
    (HERE / "facts.json").write_text(json.dumps(FACTS, indent=2) + "\n", encoding="utf-8")
    (HERE / "questions.json").write_text(json.dumps(QUESTIONS, indent=1) + "\n", encoding="utf-8")
    print(f"wrote report.pdf, report.docx, report.odt, report.html, notes.txt, facts.json, questions.json in {HERE}")


if __name__ == "__main__":
    main()
