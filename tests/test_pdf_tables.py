"""Tables in PDFs made with fpdf2 read as `a | b | c` rows, as in the office formats; prose, lists and key lines
drawn in one piece keep their plain text."""

from __future__ import annotations

import io

from fpdf import FPDF

from docfiles import placed_pdf, write
from tmixcli.documents import load_document

_ROWS = [("Segment", "2022", "2023", "Change"), ("Sonar", "18.2", "21.4", "+17.6%"),
         ("Bridge systems", "15.0", "16.9", "+12.7%"), ("Service and spare parts", "9.1", "10.4", "+14.3%")]


def _read(tmp_path, pdf: FPDF) -> list[str]:
    out = io.BytesIO()
    pdf.output(out)
    return load_document(write(tmp_path, "doc.pdf", out.getvalue())).text.split("\n")


def _table_pdf(**table) -> FPDF:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 6, "Revenue by segment, in million euros.", new_x="LMARGIN", new_y="NEXT")
    with pdf.table(**table) as t:
        for cells in _ROWS:
            row = t.row()
            for cell in cells:
                row.cell(cell)
    pdf.multi_cell(0, 6, "The table above shows revenue per segment.", new_x="LMARGIN", new_y="NEXT")
    return pdf


def test_a_table_reads_as_rows(tmp_path):
    lines = _read(tmp_path, _table_pdf())
    assert lines == ["Revenue by segment, in million euros.", *(" | ".join(row) for row in _ROWS),
                     "The table above shows revenue per segment."]


def test_right_aligned_numbers_line_up(tmp_path):
    lines = _read(tmp_path, _table_pdf(text_align=("LEFT", "RIGHT", "RIGHT", "CENTER")))
    assert [" | ".join(row) for row in _ROWS] == lines[1:5]


def test_empty_cells_keep_their_place(tmp_path):
    """A row with empty cells next to a full one keeps its values under their headings, also at a table's edge."""
    rows = [("Region", "Q1", "Q2", "Q3", "Q4"), ("South", "", "", "98", "101"), ("North", "90", "95", "97", "99"),
            ("West", "70", "", "", "75"), ("East", "80", "", "85", "")]
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    with pdf.table(text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT")) as t:
        for cells in rows:
            row = t.row()
            for cell in cells:
                row.cell(cell)
    assert _read(tmp_path, pdf) == [" ".join(" | ".join(row).split()) for row in rows]  # "South | | | 98 | 101"


def test_columns_set_at_tab_stops(tmp_path):
    """A price list typed with tab stops: left-aligned labels, right-aligned amounts of different widths."""
    items = [("Echo sounder ES-20", "1,250.00"), ("Sonar head SH-4", "980.50"), ("Cable kit", "45.00")]
    placed = [(30 + 8 * i, text, 11, x) for i, (label, amount) in enumerate(items)
              for text, x in ((label, 20), (amount, 150 - 2.3 * len(amount)))]
    text = load_document(write(tmp_path, "prices.pdf", placed_pdf([placed]))).text
    assert text.split("\n") == [f"{label} | {amount}" for label, amount in items]


def test_prose_lists_and_lone_lines_stay_plain(tmp_path):
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    body = ("**Note:** the board met eleven times during the year. Its main topics were the long-term strategy, "
            "the development of new products, the safety of employees and the management of risks. ") * 3
    pdf.multi_cell(0, 6, body, markdown=True, new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(0, 6, body.replace("**", ""), align="J", new_x="LMARGIN", new_y="NEXT")
    for marker, item in (("-", "Sonar units"), ("-", "Bridge systems"), ("1.", "Service"), ("2.", "Spare parts")):
        pdf.set_x(20)
        pdf.cell(6, 6, marker)
        pdf.cell(0, 6, item, new_x="LMARGIN", new_y="NEXT")
    pdf.set_x(20)
    pdf.cell(40, 6, "Total")
    pdf.cell(0, 6, "48.7 million euros", new_x="LMARGIN", new_y="NEXT")
    lines = _read(tmp_path, pdf)
    assert not [line for line in lines if "|" in line], lines
    assert "- Sonar units" in lines and "2. Spare parts" in lines and "Total 48.7 million euros" in lines


def test_two_text_columns_are_no_table(tmp_path):
    """A two-column page read across (pypdf's order) keeps plain lines: two cells of prose are page columns."""
    left = ["The council met on Monday to discuss the new", "budget for the town. Members argued about the cost",
            "of road repairs and the library, which has been closed"]
    right = ["Weather this week will be mild with some rain", "expected on Thursday. Farmers welcome the change",
             "after a long dry summer that left many fields parched"]
    placed = [item for i, (a, b) in enumerate(zip(left, right)) for item in ((20 + 5 * i, a, 10, 10),
                                                                             (20 + 5 * i, b, 10, 110))]
    text = load_document(write(tmp_path, "columns.pdf", placed_pdf([placed]))).text
    assert text.split("\n") == [f"{a} {b}" for a, b in zip(left, right)]


def test_sparse_rows_next_to_each_other_keep_their_empty_cells(tmp_path):
    """"Pears" and "Total" have no quantity: they line up with each other, and still sit in the table's columns."""
    rows = [("Item", "Qty", "Price"), ("Apples", "3", "1.20"), ("Pears", "", "0.80"), ("Total", "", "2.00")]
    placed = [(30 + 6 * i, cell, 11, x) for i, row in enumerate(rows) for x, cell in zip((10, 80, 130), row) if cell]
    text = load_document(write(tmp_path, "sparse.pdf", placed_pdf([placed]))).text
    assert text.split("\n") == ["Item | Qty | Price", "Apples | 3 | 1.20", "Pears | | 0.80", "Total | | 2.00"]


def test_bullets_and_numbered_headings_drawn_apart_stay_plain(tmp_path):
    items = [("o", "Sub item one"), ("o", "Sub item two"), ("1.1", "Scope of this document"),
             ("1.2", "Terms and definitions"), ("2.3.1.", "References")]
    placed = [(30 + 6 * i, text, 11, x) for i, pair in enumerate(items) for x, text in zip((20, 32), pair)]
    text = load_document(write(tmp_path, "items.pdf", placed_pdf([placed]))).text
    assert text.split("\n") == [f"{a} {b}" for a, b in items]
