"""OpenDocument text as a word processor shows it: comments left out, text boxes on lines of their own, list
numbers from the list styles, table rows one line each, page headers and footers once."""

from __future__ import annotations

from test_markup import ODF, write, zip_bytes

from tmixcli.documents import load_document

NS = (f'{ODF} xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
      'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
      'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" xmlns:dc="http://purl.org/dc/elements/1.1/"')


def read(tmp_path, body: str, automatic: str = "", styles: str = "") -> str:
    """The text of an .odt whose office:text holds `body`, with automatic styles in content.xml ahead of the body
    and styles.xml's office:styles and office:master-styles."""
    content = (f"<office:document-content {NS}><office:automatic-styles>{automatic}</office:automatic-styles>"
               f"<office:body><office:text>{body}</office:text></office:body></office:document-content>")
    files = {"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": content}
    if styles:
        files["styles.xml"] = f"<office:document-styles {NS}>{styles}</office:document-styles>"
    return load_document(write(tmp_path, "d.odt", zip_bytes(files))).text


def test_comments_are_left_out_and_text_boxes_get_lines_of_their_own(tmp_path):
    body = ('<text:p>Headcount will grow to 85 people.<office:annotation office:name="c1"><dc:creator>Bob Smith'
            '</dc:creator><dc:date>2024-05-14T11:20:00</dc:date><text:p>Is 85 right? HR says 80.</text:p>'
            '</office:annotation> The chair is <office:annotation-end office:name="c1"/>Paul Grant.</text:p>'
            '<text:p>See the box. <draw:frame draw:name="Frame1"><svg:title>Box title</svg:title><draw:text-box>'
            '<text:p>Key figure: 27 new clients.</text:p><text:p>Churn fell to 3%.</text:p></draw:text-box>'
            '</draw:frame>The meeting ended at noon.</text:p>')
    assert read(tmp_path, body) == ("Headcount will grow to 85 people. The chair is Paul Grant.\n"
                                    "See the box. The meeting ended at noon.\nKey figure: 27 new clients.\n"
                                    "Churn fell to 3%.")


NUMBERED = ('<text:list-style style:name="L1">'
            '<text:list-level-style-number text:level="1" style:num-suffix="." style:num-format="1"/>'
            '<text:list-level-style-number text:level="2" style:num-suffix=")" style:num-format="a"/>'
            '<text:list-level-style-number text:level="3" style:num-suffix="." style:num-format="1" '
            'text:display-levels="3"/></text:list-style>')
BULLETED = ('<text:list-style style:name="L2"><text:list-level-style-bullet text:level="1" text:bullet-char="*"/>'
            '</text:list-style>')


def items(*texts: str) -> str:
    return "".join(f"<text:list-item><text:p>{t}</text:p></text:list-item>" for t in texts)


def test_list_items_are_numbered_as_their_list_style_says(tmp_path):
    nested = ('<text:list-item><text:p>Hire auditors</text:p><text:list>' + items("first part")
              + '<text:list-item><text:p>second part</text:p><text:list>' + items("detail") + "</text:list>"
              "</text:list-item></text:list></text:list-item>")
    body = ('<text:list text:style-name="L1">' + items("Sign the lease") + nested + "</text:list>"
            "<text:p>Between the lists.</text:p>"
            '<text:list text:style-name="L1" text:continue-numbering="true">' + items("Publish the report")
            + "</text:list>"
            '<text:list text:style-name="L1"><text:list-header><text:p>Header, no number</text:p></text:list-header>'
            '<text:list-item text:start-value="7"><text:p>Seventh</text:p></text:list-item>' + items("Eighth")
            + "</text:list>"
            '<text:list text:style-name="L2">' + items("bullet") + "</text:list>"
            '<text:list text:style-name="Unknown">' + items("no style") + "</text:list>")
    assert read(tmp_path, body, automatic=NUMBERED, styles=f"<office:styles>{BULLETED}</office:styles>") == (
        "1. Sign the lease\n2. Hire auditors\na) first part\nb) second part\n2.b.1. detail\nBetween the lists.\n"
        "3. Publish the report\nHeader, no number\n7. Seventh\n8. Eighth\n- bullet\n- no style")


def test_a_table_row_stays_one_line_repeated_and_covered_cells_included(tmp_path):
    def cell(*paras: str, attrs: str = "") -> str:
        return f"<table:table-cell{attrs}>{''.join(paras)}</table:table-cell>"

    body = ("<table:table><table:table-header-rows><table:table-row>" + cell() + cell("<text:p>2022</text:p>")
            + cell("<text:p>2023</text:p>") + "</table:table-row></table:table-header-rows><table:table-row>"
            + cell("<text:p>Lyon</text:p>") + cell("<text:p>Marie Roux<text:line-break/>(acting)</text:p>",
                                                   "<text:p>since May</text:p>")
            + cell("<text:list>" + items("12 staff", "data centre") + "</text:list>") + "</table:table-row>"
            "<table:table-row>" + cell("<text:p>Total</text:p>", attrs=' table:number-columns-spanned="2"')
            + "<table:covered-table-cell/>" + cell("<text:p>9</text:p>") + "</table:table-row><table:table-row>"
            + cell("<text:p>Oslo</text:p>") + cell(attrs=' table:number-columns-repeated="2"')
            + "</table:table-row></table:table>")
    assert read(tmp_path, body) == ("| 2022 | 2023\nLyon | Marie Roux (acting) since May | 12 staff; data centre\n"
                                    "Total |  | 9\nOslo |  |")


def test_page_headers_and_footers_are_read_once(tmp_path):
    masters = ('<office:master-styles><style:master-page style:name="Standard"><style:header><text:p>CONFIDENTIAL'
               '</text:p></style:header><style:header-first><text:p>CONFIDENTIAL</text:p></style:header-first>'
               '<style:footer><text:p>Registered in Ireland No. 55210</text:p></style:footer>'
               '<style:footer-left style:display="false"><text:p>switched off</text:p></style:footer-left>'
               '</style:master-page><style:master-page style:name="Landscape"><style:header><text:p>Annex header'
               '</text:p></style:header></style:master-page></office:master-styles>')
    assert read(tmp_path, "<text:p>Body.</text:p>", styles=masters) == (
        "CONFIDENTIAL\nAnnex header\nBody.\nRegistered in Ireland No. 55210")


def test_bad_numbers_in_list_and_table_attributes_read_on(tmp_path):
    body = ('<text:list text:style-name="L1"><text:list-item text:start-value="seven"><text:p>first</text:p>'
            '</text:list-item></text:list><table:table><table:table-row><table:table-cell '
            'table:number-columns-repeated="x"><text:p>a</text:p></table:table-cell><table:table-cell '
            'table:number-columns-repeated="99999999999999999999"/></table:table-row></table:table>')
    assert read(tmp_path, body, automatic=NUMBERED) == "1. first\na" + " | " * 63 + " |"  # at most 64 columns a cell
