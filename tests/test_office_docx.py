"""Word documents as Word shows them: text boxes once, tracked moves accepted, equations, tables a row a line, list
numbers, headers and footers once, hidden text left out, charts and diagrams read."""

from __future__ import annotations

from test_zipdocs import W_NS, write, zip_bytes
from test_office_pptx import CHART, DIAGRAM, RELS

from tmixcli.documents import load_document

NS = (f'xmlns:w="{W_NS}" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
      'xmlns:m="http://schemas.openxmlformats.org/officeDocument/2006/math" '
      'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
      'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
      'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
      'xmlns:v="urn:schemas-microsoft-com:vml"')
OFFICE_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def p(text: str, props: str = "") -> str:
    return f'<w:p>{props}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'


def read(tmp_path, body: str, parts: dict[str, str] | None = None, rels: dict[str, tuple[str, str]] | None = None,
         name: str = "d.docx") -> str:
    """The text of a .docx whose body is `body`, with more parts (word/...) and document relationships
    (id -> (type, target))."""
    files = {"[Content_Types].xml": "<Types/>",
             "word/document.xml": f"<w:document {NS}><w:body>{body}</w:body></w:document>"}
    files.update({name: text.replace("NS", NS) for name, text in (parts or {}).items()})
    if rels:
        files["word/_rels/document.xml.rels"] = f'<Relationships xmlns="{RELS}">' + "".join(
            f'<Relationship Id="{rid}" Type="{OFFICE_RELS}/{kind}" Target="{target}"/>'
            for rid, (kind, target) in rels.items()) + "</Relationships>"
    return load_document(write(tmp_path, name, zip_bytes(files))).text


def test_a_text_box_saved_twice_is_read_once_its_paragraphs_on_lines_of_their_own(tmp_path):
    box = ("<w:txbxContent>" + p("Key figure: 27 new clients.") + p("Churn fell to 3%.") + "</w:txbxContent>")
    body = (f'<w:p><w:r><w:t xml:space="preserve">See the box. </w:t></w:r><w:r><mc:AlternateContent>'
            f'<mc:Choice Requires="wps"><w:drawing><a:graphic><a:graphicData><wps:wsp><wps:txbx>{box}</wps:txbx>'
            f'</wps:wsp></a:graphicData></a:graphic></w:drawing></mc:Choice><mc:Fallback><w:pict><v:shape>'
            f'<v:textbox>{box}</v:textbox></v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r>'
            '<w:r><w:t>The meeting ended at noon.</w:t></w:r></w:p>'
            f'<w:p><w:r><w:pict><v:shape><v:textbox>{p("Old-style box.")}</v:textbox></v:shape></w:pict></w:r></w:p>')
    assert read(tmp_path, body) == ("See the box. The meeting ended at noon.\nKey figure: 27 new clients.\n"
                                    "Churn fell to 3%.\nOld-style box.")


def test_tracked_changes_read_as_accepted_moves_included(tmp_path):
    body = ('<w:p><w:r><w:t xml:space="preserve">The budget is </w:t></w:r><w:del><w:r><w:delText>3.5</w:delText>'
            '</w:r></w:del><w:ins><w:r><w:t>4.2</w:t></w:r></w:ins><w:r><w:t xml:space="preserve"> million.</w:t>'
            '</w:r></w:p>'
            '<w:p><w:moveFromRangeStart w:id="1" w:name="m"/><w:moveFrom><w:r><w:t>The auditor is Kim Lee.</w:t>'
            '</w:r></w:moveFrom><w:moveFromRangeEnd w:id="1"/></w:p>'
            + p("The chair is Paul Grant.") +
            '<w:p><w:moveTo><w:r><w:t>The auditor is Kim Lee.</w:t></w:r></w:moveTo></w:p>'
            '<w:tbl><w:tr><w:tc>' + p("kept row") + '</w:tc></w:tr><w:tr><w:trPr><w:del/></w:trPr><w:tc>'
            '<w:p><w:del><w:r><w:delText>deleted row</w:delText></w:r></w:del></w:p></w:tc></w:tr></w:tbl>')
    assert read(tmp_path, body) == ("The budget is 4.2 million.\nThe chair is Paul Grant.\n"
                                    "The auditor is Kim Lee.\nkept row")


def test_equations_become_linear_text(tmp_path):
    def r(text: str) -> str:
        return f"<m:r><m:t>{text}</m:t></m:r>"

    fraction = f"<m:f><m:num>{r('F')}</m:num><m:den>{r('p-v')}</m:den></m:f>"
    power = f"<m:sSup><m:e>{r('x')}</m:e><m:sup>{r('n+1')}</m:sup></m:sSup>"
    index = f"<m:sSub><m:e>{r('a')}</m:e><m:sub>{r('i')}</m:sub></m:sSub>"
    root = f"<m:rad><m:radPr><m:degHide m:val=\"1\"/></m:radPr><m:deg/><m:e>{r('2')}</m:e></m:rad>"
    brackets = f"<m:d><m:e>{r('a+b')}</m:e></m:d>"
    total = (f'<m:nary><m:naryPr><m:chr m:val="\u2211"/></m:naryPr><m:sub>{r("i=1")}</m:sub><m:sup>{r("n")}</m:sup>'
             f"<m:e>{index}</m:e></m:nary>")
    body = (f'<w:p><w:r><w:t xml:space="preserve">Break-even: </w:t></w:r><m:oMath>{r("Q=")}{fraction}</m:oMath>'
            '<w:r><w:t xml:space="preserve"> units.</w:t></w:r></w:p>'
            f"<w:p><m:oMathPara><m:oMath>{r('r=0.07')}</m:oMath><m:oMath>{power}{r('+')}{root}{r('+')}{brackets}"
            f"</m:oMath></m:oMathPara></w:p><w:p><m:oMath>{r('S=')}{total}</m:oMath></w:p>")
    assert read(tmp_path, body) == ("Break-even: Q=F/(p-v) units.\nr=0.07\nx^(n+1)+sqrt(2)+(a+b)\n"
                                    "S=\u2211_(i=1)^n a_i")


def cell(*paras: str, props: str = "") -> str:
    return f"<w:tc>{props}{''.join(paras)}</w:tc>"


def test_a_table_row_stays_one_line_whatever_its_cells_hold(tmp_path):
    bullets = '<w:pPr><w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr></w:pPr>'
    numbering = ('<w:numbering NS><w:abstractNum w:abstractNumId="0"><w:lvl w:ilvl="0"><w:numFmt w:val="bullet"/>'
                 '<w:lvlText w:val="\u2022"/></w:lvl></w:abstractNum><w:num w:numId="1"><w:abstractNumId w:val="0"/>'
                 '</w:num></w:numbering>')
    body = ("<w:tbl><w:tr>" + cell() + cell(p("2022")) + cell(p("2023")) + "</w:tr>"
            "<w:tr>" + cell(p("Lyon")) + cell('<w:p><w:r><w:t>Marie Roux</w:t><w:br/><w:t>(acting)</w:t></w:r></w:p>',
                                              p("since May")) + cell(p("12 staff", bullets), p("data centre", bullets))
            + "</w:tr><w:tr>" + cell(p("Total"), props='<w:tcPr><w:gridSpan w:val="2"/></w:tcPr>') + cell(p("9"))
            + "</w:tr></w:tbl>")
    assert read(tmp_path, body, {"word/numbering.xml": numbering}) == (
        "| 2022 | 2023\nLyon | Marie Roux (acting) since May | 12 staff; data centre\nTotal |  | 9")


NUMBERING = ('<w:numbering NS>'
             '<w:abstractNum w:abstractNumId="0"><w:lvl w:ilvl="0"><w:start w:val="1"/><w:numFmt w:val="decimal"/>'
             '<w:lvlText w:val="%1."/></w:lvl><w:lvl w:ilvl="1"><w:start w:val="1"/><w:numFmt w:val="lowerLetter"/>'
             '<w:lvlText w:val="%2)"/></w:lvl><w:lvl w:ilvl="2"><w:start w:val="1"/><w:numFmt w:val="lowerRoman"/>'
             '<w:lvlText w:val="%1.%2.%3"/><w:isLgl/></w:lvl></w:abstractNum>'
             '<w:abstractNum w:abstractNumId="1"><w:lvl w:ilvl="0"><w:numFmt w:val="bullet"/><w:lvlText w:val="o"/>'
             '</w:lvl></w:abstractNum>'
             '<w:abstractNum w:abstractNumId="2"><w:lvl w:ilvl="0"><w:start w:val="3"/><w:numFmt w:val="upperRoman"/>'
             '<w:lvlText w:val="Article %1 -"/></w:lvl></w:abstractNum>'
             '<w:num w:numId="1"><w:abstractNumId w:val="0"/></w:num>'
             '<w:num w:numId="2"><w:abstractNumId w:val="1"/></w:num>'
             '<w:num w:numId="3"><w:abstractNumId w:val="0"/><w:lvlOverride w:ilvl="0"><w:startOverride w:val="1"/>'
             '</w:lvlOverride></w:num>'
             '<w:num w:numId="4"><w:abstractNumId w:val="2"/></w:num></w:numbering>')
STYLES = ('<w:styles NS><w:style w:type="paragraph" w:styleId="Clause"><w:pPr><w:numPr><w:numId w:val="4"/>'
          '</w:numPr></w:pPr></w:style><w:style w:type="paragraph" w:styleId="SubClause"><w:basedOn w:val="Clause"/>'
          '</w:style></w:styles>')


def item(text: str, num: int, level: int = 0) -> str:
    return p(text, f'<w:pPr><w:numPr><w:ilvl w:val="{level}"/><w:numId w:val="{num}"/></w:numPr></w:pPr>')


def test_numbered_and_bulleted_list_items_get_their_markers(tmp_path):
    body = (item("Sign the lease", 1) + item("first part", 1, 1) + item("detail", 1, 2) + item("second part", 1, 1)
            + item("Hire two auditors", 1) + item("Note", 2) + p("Between lists.") + item("Continues", 1)
            + item("Restarted", 3) + item("Again", 3) + p("Not a list", '<w:pPr><w:numPr><w:numId w:val="0"/>'
                                                          '</w:numPr></w:pPr>')
            + p("Scope", '<w:pPr><w:pStyle w:val="SubClause"/></w:pPr>') + item("Unknown list", 9)
            + '<w:p><w:pPr><w:numPr><w:numId w:val="1"/></w:numPr></w:pPr></w:p>')
    assert read(tmp_path, body, {"word/numbering.xml": NUMBERING, "word/styles.xml": STYLES}) == (
        "1. Sign the lease\na) first part\n1.1.1 detail\nb) second part\n2. Hire two auditors\n- Note\n"
        "Between lists.\n3. Continues\n1. Restarted\n2. Again\nNot a list\nArticle III - Scope\n- Unknown list")
    assert read(tmp_path, item("No numbering part", 1)) == "- No numbering part"


def test_headers_and_footers_once_hidden_text_and_comments_left_out(tmp_path):
    header = f"<w:hdr NS>{p('CONFIDENTIAL - Orion Holdings')}</w:hdr>"
    footer = f"<w:ftr NS>{p('Registered in Ireland No. 55210')}</w:ftr>"
    body = ('<w:p><w:r><w:t xml:space="preserve">Visible. </w:t></w:r><w:r><w:rPr><w:vanish/></w:rPr>'
            '<w:t>SECRET HIDDEN NOTE.</w:t></w:r><w:r><w:rPr><w:vanish w:val="false"/></w:rPr><w:t>Shown.</w:t></w:r>'
            '<w:commentRangeStart w:id="0"/><w:r><w:t xml:space="preserve"> Headcount 85.</w:t></w:r>'
            '<w:commentRangeEnd w:id="0"/><w:r><w:commentReference w:id="0"/></w:r></w:p>'
            '<w:sectPr><w:headerReference r:id="rId1"/><w:headerReference r:id="rId3"/>'
            '<w:footerReference r:id="rId2"/></w:sectPr>')
    parts = {"word/header1.xml": header, "word/header2.xml": header, "word/footer1.xml": footer,
             "word/comments.xml": f'<w:comments NS><w:comment w:id="0">{p("HR says 80.")}</w:comment></w:comments>'}
    rels = {"rId1": ("header", "header1.xml"), "rId3": ("header", "header2.xml"), "rId2": ("footer", "footer1.xml"),
            "rId4": ("comments", "comments.xml")}
    assert read(tmp_path, body, parts, rels) == ("CONFIDENTIAL - Orion Holdings\nVisible. Shown. Headcount 85.\n"
                                                 "Registered in Ireland No. 55210")


def test_charts_and_diagrams_in_a_word_document_are_read(tmp_path):
    frame = ('<w:p><w:r><w:drawing><a:graphic><a:graphicData><c:chart xmlns:c="http://schemas.openxmlformats.org/'
             'drawingml/2006/chart" r:id="rId7"/></a:graphicData></a:graphic></w:drawing></w:r></w:p>'
             '<w:p><w:r><w:drawing><a:graphic><a:graphicData><dgm:relIds xmlns:dgm="http://schemas.openxmlformats.org/'
             'drawingml/2006/diagram" r:dm="rId8"/></a:graphicData></a:graphic></w:drawing></w:r></w:p>')
    text = read(tmp_path, p("Figures:") + frame, {"word/charts/chart1.xml": CHART, "word/diagrams/data1.xml": DIAGRAM},
                {"rId7": ("chart", "charts/chart1.xml"), "rId8": ("diagramData", "diagrams/data1.xml")})
    assert text == ("Figures:\nChart: Revenue by year (EUR m)\n| Revenue | Costs\n2022 | 41.2 | 30.1\n"
                    "2023 | 48.7 | 33.0\nStep 1: Sign lease\nStep 2: Hire auditors\nStep 3: Publish report")


HIDING = ('<w:styles NS><w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:pPr><w:rPr><w:vanish/>'
          '</w:rPr></w:pPr></w:style>'  # hides only the paragraph mark: its text shows
          '<w:style w:type="paragraph" w:styleId="Secret"><w:rPr><w:vanish/></w:rPr></w:style>'
          '<w:style w:type="paragraph" w:styleId="SecretNote"><w:basedOn w:val="Secret"/></w:style>'
          '<w:style w:type="paragraph" w:styleId="Public"><w:basedOn w:val="Secret"/><w:rPr><w:vanish w:val="0"/>'
          '</w:rPr></w:style><w:style w:type="paragraph" w:styleId="Loop"><w:basedOn w:val="Loop"/></w:style>'
          '<w:style w:type="character" w:styleId="HiddenChar"><w:rPr><w:vanish/></w:rPr></w:style>'
          '<w:style w:type="character" w:styleId="Secret"><w:rPr><w:b/></w:rPr></w:style></w:styles>')


def run(text: str, props: str = "") -> str:
    return f'<w:r><w:rPr>{props}</w:rPr><w:t xml:space="preserve">{text}</w:t></w:r>'


def styled(style: str, *runs: str) -> str:
    return f'<w:p><w:pPr><w:pStyle w:val="{style}"/></w:pPr>{"".join(runs)}</w:p>'


def test_text_hidden_through_its_style_is_left_out(tmp_path):
    hidden_char = '<w:rStyle w:val="HiddenChar"/>'
    body = (p("Visible intro.") + styled("Secret", run("Hidden by its style."))
            + styled("SecretNote", '<w:hyperlink r:id="x">' + run("Hidden through basedOn.") + "</w:hyperlink>")
            + styled("Public", run("Shown: its style turns hiding off.")) + styled("Loop", run("Loop shown."))
            + styled("Missing", run("Unknown style shown."))
            + "<w:p>" + run("Total: ") + run("(draft) ", hidden_char) + run("42.", '<w:rStyle w:val="Secret"/>')
            + "</w:p>" + styled("Secret", run("Shown anyway.", '<w:vanish w:val="0"/>'), run(" gone"))
            + styled("Secret", run("Toggled back.", hidden_char)))
    assert read(tmp_path, body, {"word/styles.xml": HIDING}) == (
        "Visible intro.\nShown: its style turns hiding off.\nLoop shown.\nUnknown style shown.\nTotal: 42.\n"
        "Shown anyway.\nToggled back.")
    assert read(tmp_path, styled("Secret", run("No styles part."))) == "No styles part."


def test_symbol_font_characters_are_read_as_the_characters_they_show(tmp_path):
    def sym(font: str, char: str) -> str:
        return f'<w:r><w:sym w:font="{font}" w:char="{char}"/></w:r>'

    body = ('<w:p><w:r><w:t xml:space="preserve">Pore size 5 </w:t></w:r>' + sym("Symbol", "F06D")
            + '<w:r><w:t xml:space="preserve">m, T </w:t></w:r>' + sym("Symbol", "F0B3") + sym("Symbol", "0020")
            + '<w:r><w:t xml:space="preserve">40 </w:t></w:r>' + sym("Symbol", "F0B0") + "<w:r><w:t>C; </w:t></w:r>"
            + sym("Symbol", "F057") + sym("Symbol", "F0E6") + "</w:p>"
            + "<w:p>" + sym("Wingdings", "F0FE") + '<w:r><w:t xml:space="preserve"> Yes </w:t></w:r>'
            + sym("Wingdings", "F0A8") + '<w:r><w:t xml:space="preserve"> No </w:t></w:r>' + sym("Wingdings", "F04A")
            + sym("Arial", "2013") + sym("Arial", "F020") + sym("Symbol", "zz") + "</w:p>")
    assert read(tmp_path, body) == "Pore size 5 \u03bcm, T \u2265 40 \u00b0C; \u03a9\n\u2611 Yes \u25fb No \u2013"
