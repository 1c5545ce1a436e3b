"""HTML tables, lists and invisible characters: a row is one `a | b | c` line whatever its cells hold, ordered lists
keep their numbers, soft hyphens and zero-width characters are gone."""

from __future__ import annotations

import pytest
from docfiles import write

from tmixcli import htmltext
from tmixcli.documents import load_document
from tmixcli.htmltext import html_text


def page_text(tmp_path, body: str) -> str:
    return load_document(write(tmp_path, "page.html", f"<!DOCTYPE html><html><body>{body}</body></html>".encode())).text


def test_cells_holding_blocks_lists_and_breaks_stay_in_their_row(tmp_path):
    """QA22 F8: <p>, <div>, <ul> and <br> inside a cell no longer break the row apart (items joined as the office
    formats join them, tablerow.cell_text)."""
    body = ("<table><tr><td><p>Lyon</p></td><td><p>Marie Roux</p><p>(acting)</p></td><td><p>40 staff</p></td></tr>"
            "<tr><td><div>Tallinn</div></td><td>Jaan Tamm<br>(since May)</td><td><ul><li>12 staff</li>"
            "<li>data centre</li></ul></td></tr></table><p>After.</p>")
    assert page_text(tmp_path, body) == ("Lyon | Marie Roux (acting) | 40 staff\n"
                                         "Tallinn | Jaan Tamm (since May) | 12 staff; data centre\nAfter.")


def test_empty_cells_are_kept_so_headings_line_up(tmp_path):
    """QA22 F8: an empty top-left header cell and an empty data cell keep their columns."""
    body = ("<table><thead><tr><th></th><th>2022</th><th>2023</th></tr></thead><tbody>"
            "<tr><th>Revenue</th><td>41.2</td><td>48.7</td></tr><tr><th>Staff</th><td></td><td>1205</td></tr>"
            "</tbody></table>")
    assert page_text(tmp_path, body) == "| 2022 | 2023\nRevenue | 41.2 | 48.7\nStaff |  | 1205"


def test_colspan_and_rowspan_pad_the_columns_they_cover(tmp_path):
    body = ("<table><tr><th>Region</th><th colspan=2>2023</th><th>Total</th></tr>"
            "<tr><td rowspan=2>North</td><td>1</td><td>2</td><td>3</td></tr>"
            "<tr><td>4</td><td>5</td><td>9</td></tr>"
            "<tr><td colspan=4>Figures in EUR m</td></tr></table>")
    assert page_text(tmp_path, body) == ("Region | 2023 |  | Total\nNorth | 1 | 2 | 3\n| 4 | 5 | 9\n"
                                         "Figures in EUR m")


def test_cells_and_rows_without_end_tags(tmp_path):
    body = "<table><tr><td>a<td>b<tr><td>c<td>d</table><p>e"
    assert page_text(tmp_path, body) == "a | b\nc | d\ne"


def test_layout_tables_keep_their_lines(tmp_path):
    """A one-cell row, a cell holding a table or a heading, or role=presentation: the page's own lines."""
    body = ("<table><tr><td><h1>News</h1><p>First paragraph.</p><p>Second paragraph.</p></td>"
            "<td><p>Sidebar</p></td></tr></table>"
            "<table><tr><td><p>One.</p><p>Two.</p></td></tr></table>"
            "<table role=presentation><tr><td>Left</td><td>Right</td></tr></table>"
            "<table><tr><td><table><tr><td>x</td><td>y</td></tr></table></td><td>z</td></tr></table>")
    assert page_text(tmp_path, body) == ("News\nFirst paragraph.\nSecond paragraph.\nSidebar\nOne.\nTwo.\nLeft\n"
                                         "Right\nx | y\nz")


def test_ordered_lists_keep_their_numbers(tmp_path):
    """QA22 F13: <ol> items are "1. ", honouring start, type, value and reversed; <ul> stays "- "."""
    body = ("<ol><li>Sign the lease</li><li>Hire two auditors</li><li>Publish the report</li></ol>"
            "<ol start=4><li>four<li>five</ol><ol type=a><li>a one<li>a two</ol><ol type=I start=3><li>three</ol>"
            "<ol><li>first<li value=10>tenth<li>eleventh</ol><ol reversed start=3><li>c<li>b</ol>"
            "<ul><li>bullet<ol><li>nested</li></ol></li><li>again</li></ul><ol reversed><li>unknown start</ol>"
            "<ol><li></li><li>second</li></ol><p>after</p>")
    assert page_text(tmp_path, body) == (
        "1. Sign the lease\n2. Hire two auditors\n3. Publish the report\n4. four\n5. five\na. a one\nb. a two\n"
        "III. three\n1. first\n10. tenth\n11. eleventh\n3. c\n2. b\n- bullet\n1. nested\n- again\n- unknown start\n"
        "2. second\nafter")


def test_an_ordered_list_in_a_cell_keeps_its_numbers(tmp_path):
    body = "<table><tr><td>Steps</td><td><ol><li>sign</li><li>hire</li></ol></td></tr></table>"
    assert page_text(tmp_path, body) == "Steps | 1. sign 2. hire"


def test_a_table_in_main_and_a_page_read_in_pieces(monkeypatch):
    """Rows written at their end still go to <main>'s text, also where the page is parsed in pieces of 7 characters."""
    page = ("<header>Site</header><main><table><tr><td><p>a</p></td><td><p>b</p><p>c</p></td></tr></table>"
            "<ol start=2><li>x</li></ol></main><footer>foot</footer>")
    assert html_text(page) == "a | b c\n2. x"
    monkeypatch.setattr(htmltext, "HTML_CHUNK", 7)
    assert html_text(page) == "a | b c\n2. x"
    layout = "<table><tr><td><nav>Menu</nav><p>Side</p></td><td><main><p>Article.</p></main></td></tr></table>"
    assert html_text(layout) == "Article."  # a <main> inside a layout table's cell


@pytest.mark.parametrize("mark", ["&shy;", "\u00ad", "&#8203;", "\u200c", "\u200d", "&#x2060;", "\ufeff"])
def test_soft_hyphens_and_zero_width_characters_are_removed(tmp_path, mark):
    """QA22 F17: unseen in a browser, each would split the word into byte tokens."""
    body = f"<p>Die Haft{mark}pflicht{mark}versicherung kostet 120&nbsp;Euro. Kontakt:{mark}info@example.com</p>"
    assert page_text(tmp_path, body) == "Die Haftpflichtversicherung kostet 120 Euro. Kontakt:info@example.com"
