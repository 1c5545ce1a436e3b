"""OpenDocument text as a word processor shows it: comments and hidden text left out, text boxes on lines of their
own, list numbers from the list styles, table rows one line each, page headers and footers once."""

from __future__ import annotations

from test_zipdocs import ODF, write, zip_bytes

from tmixcli.documents import load_document

NS = (f'{ODF} xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
      'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
      'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" xmlns:dc="http://purl.org/dc/elements/1.1/"'
      ' xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0"')


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


HIDING_STYLES = ('<office:styles><style:default-style style:family="paragraph"><style:text-properties '
                 'fo:font-size="12pt"/></style:default-style>'
                 '<style:style style:name="Secret" style:family="paragraph"><style:text-properties '
                 'text:display="none"/></style:style><style:style style:name="Secret_20_Note" style:family="paragraph" '
                 'style:parent-style-name="Secret"/><style:style style:name="Public" style:family="paragraph" '
                 'style:parent-style-name="Secret"><style:text-properties text:display="true"/></style:style>'
                 '<style:style style:name="Loop" style:family="paragraph" style:parent-style-name="Loop"/>'
                 '<style:style style:name="Hidden_20_Char" style:family="text"><style:text-properties '
                 'text:display="none"/></style:style><style:style style:name="Shown_20_Char" style:family="text">'
                 '<style:text-properties text:display="true"/></style:style>'
                 '<style:style style:name="Conditional" style:family="text"><style:text-properties '
                 'text:display="condition" text:condition="none"/></style:style></office:styles>')
HIDING_AUTOMATIC = ('<style:style style:name="P1" style:family="paragraph" style:parent-style-name="Secret_20_Note"/>'
                    '<style:style style:name="T1" style:family="text"><style:text-properties text:display="none"/>'
                    '</style:style><style:style style:name="T2" style:family="text" '
                    'style:parent-style-name="Hidden_20_Char"><style:text-properties fo:font-weight="bold"/>'
                    '</style:style>')


def styled(style: str, *inner: str) -> str:
    return f'<text:p text:style-name="{style}">{"".join(inner)}</text:p>'


def span(style: str, text: str) -> str:
    return f'<text:span text:style-name="{style}">{text}</text:span>'


def test_text_hidden_through_its_style_is_left_out(tmp_path):
    note = ('<text:note><text:note-citation>1</text:note-citation><text:note-body><text:p>Hidden note.</text:p>'
            '</text:note-body></text:note>')
    body = ("<text:p>Visible intro.</text:p>" + styled("Secret", "Hidden by its style.")
            + styled("P1", '<text:a>Hidden through two parent styles.</text:a>')
            + '<text:h text:style-name="Secret_20_Note">Hidden heading</text:h>'
            + styled("Public", "Shown: its style shows text again.") + styled("Loop", "Loop shown.")
            + styled("Missing", "Unknown style shown.")
            + "<text:p>Total: " + span("T1", "(draft) ") + span("T2", "(inherited) ") + "42" + span("T1", note)
            + span("T1", '<draw:frame><draw:text-box><text:p>Hidden box.</text:p></draw:text-box></draw:frame>')
            + ".</text:p>"
            + styled("Secret", "gone ", span("Shown_20_Char", "Shown again"), " gone",
                     span("Hidden_20_Char", "still gone"))
            + "<text:p>" + span("T1", "outer " + span("Shown_20_Char", "inner shown") + " outer") + "</text:p>"
            + "<text:p>" + span("Conditional", "Condition is not read.") + "</text:p>")
    assert read(tmp_path, body, automatic=HIDING_AUTOMATIC, styles=HIDING_STYLES) == (
        "Visible intro.\nShown: its style shows text again.\nLoop shown.\nUnknown style shown.\nTotal: 42.\n"
        "Shown again\ninner shown\nCondition is not read.")
    assert read(tmp_path, styled("Secret", "No styles part.")) == "No styles part."


def test_a_default_paragraph_style_that_hides_text_hides_unstyled_paragraphs(tmp_path):
    hiding = ('<office:styles><style:default-style style:family="paragraph"><style:text-properties '
              'text:display="none"/></style:default-style><style:style style:name="Shown" style:family="paragraph">'
              '<style:text-properties text:display="true"/></style:style></office:styles>')
    body = "<text:p>Hidden by default.</text:p>" + styled("Shown", "Shown by its style.")
    assert read(tmp_path, body, styles=hiding) == "Shown by its style."


def test_hidden_fields_and_sections_are_left_out(tmp_path):
    body = ('<text:p>Price: <text:hidden-text text:condition="ooow:Draft == 1" text:string-value="(draft price)" '
            'text:is-hidden="true">(draft price)</text:hidden-text>12 EUR<text:hidden-text text:condition='
            '"ooow:Draft == 0" text:string-value=" net" text:is-hidden="false"> net</text:hidden-text>.</text:p>'
            '<text:p>Internal only.<text:span><text:hidden-paragraph text:condition="ooow:Public == 1" '
            'text:is-hidden="true"/></text:span><text:note><text:note-body><text:p>Hidden note.</text:p>'
            '</text:note-body></text:note></text:p>'
            '<text:p>Kept.<text:hidden-paragraph text:condition="ooow:Public == 0" text:is-hidden="false"/></text:p>'
            '<text:section text:name="S1" text:display="none"><text:p>Hidden section.</text:p></text:section>'
            '<text:section text:name="S2" text:display="condition" text:condition="ooow:Public == 1" '
            'text:is-hidden="true"><text:p>Hidden by its condition.</text:p></text:section>'
            '<text:section text:name="S3" text:display="condition" text:condition="ooow:Public == 0">'
            '<text:p>Condition false: shown.</text:p></text:section>'
            '<text:section text:name="S4" text:display="condition"><text:p>No condition: hidden.</text:p>'
            '</text:section><text:section text:name="S5" text:display="true"><text:list><text:list-item>'
            '<text:p>Shown section.</text:p></text:list-item></text:list></text:section>')
    assert read(tmp_path, body) == "Price: 12 EUR net.\nKept.\nCondition false: shown.\n- Shown section."


def test_headers_and_footers_hide_text_as_the_automatic_styles_of_styles_xml_say(tmp_path):
    styles = ('<office:automatic-styles><style:style style:name="MT1" style:family="text"><style:text-properties '
              'text:display="none"/></style:style><style:style style:name="MP1" style:family="paragraph">'
              '<style:text-properties text:display="none"/></style:style></office:automatic-styles>'
              '<office:master-styles>'
              '<style:master-page style:name="Standard"><style:header><text:p>CONFIDENTIAL'
              '<text:span text:style-name="MT1"> (draft 3)</text:span></text:p></style:header>'
              '<style:footer><text:p text:style-name="MP1">Hidden footer</text:p></style:footer>'
              '</style:master-page></office:master-styles>')
    automatic = ('<style:style style:name="MT1" style:family="text"><style:text-properties text:display="true"/>'
                 '</style:style>')
    body = '<text:p>Body <text:span text:style-name="MT1">shown</text:span>.</text:p>'
    assert read(tmp_path, body, automatic=automatic, styles=styles) == "CONFIDENTIAL\nBody shown."
