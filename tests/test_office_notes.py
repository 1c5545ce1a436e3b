"""Office documents say what they leave out: Office 2016 charts read (or counted), embedded Word, PowerPoint and HTML
files read where they sit, other embedded objects named in a status line; OpenDocument charts and formulas read."""

from __future__ import annotations

from runcli import run
from test_zipdocs import ODF, write, zip_bytes
from test_office_docx import NS, OFFICE_RELS, RELS, p
from test_office_odt import NS as ODT_NS
from test_office_pptx import deck

from tmixcli.documents import load_document
from tmixcli.embeds import MOST_READ

CX_NS = 'xmlns:cx="http://schemas.microsoft.com/office/drawing/2014/chartex"'
A_NS = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
CHARTEX_REL = "http://schemas.microsoft.com/office/2014/relationships/chartEx"
O_NS = 'xmlns:o="urn:schemas-microsoft-com:office:office"'


def rels_xml(rels: dict[str, tuple[str, str]]) -> str:
    """A relationships part: id -> (type, or a full type URI; target)."""
    return f'<Relationships xmlns="{RELS}">' + "".join(
        f'<Relationship Id="{rid}" Type="{kind if "/" in kind else f"{OFFICE_RELS}/{kind}"}" Target="{target}"/>'
        for rid, (kind, target) in rels.items()) + "</Relationships>"


def docx_bytes(body: str, parts: dict[str, str | bytes] | None = None,
               rels: dict[str, tuple[str, str]] | None = None) -> bytes:
    files: dict[str, str | bytes] = {"[Content_Types].xml": "<Types/>",
                                     "word/document.xml": f"<w:document {NS} {O_NS}><w:body>{body}</w:body>"
                                                          "</w:document>"}
    files.update({name: data.replace("NS", NS) if isinstance(data, str) else data
                  for name, data in (parts or {}).items()})
    if rels:
        files["word/_rels/document.xml.rels"] = rels_xml(rels)
    return zip_bytes(files)


def waterfall(title: str = "Cash bridge (EUR m)") -> str:
    """An Office 2016 waterfall chart part: a title, one series, its categories and values."""
    cats = "".join(f'<cx:pt idx="{i}">{c}</cx:pt>' for i, c in enumerate(("Start", "Sales", "Costs", "End")))
    vals = "".join(f'<cx:pt idx="{i}">{v}</cx:pt>' for i, v in enumerate(("100", "20", "-40", "80")))
    head = (f"<cx:title><cx:tx><cx:rich><a:bodyPr/><a:p><a:r><a:t>{title}</a:t></a:r></a:p></cx:rich></cx:tx>"
            "</cx:title>" if title else '<cx:title pos="t"/>')
    return (f"<cx:chartSpace {CX_NS} {A_NS}><cx:chartData><cx:externalData/><cx:data id=\"0\"><cx:strDim type=\"cat\">"
            f"<cx:f>Sheet1!$A$2:$A$5</cx:f><cx:lvl ptCount=\"4\">{cats}</cx:lvl></cx:strDim><cx:numDim type=\"val\">"
            f"<cx:f>Sheet1!$B$2:$B$5</cx:f><cx:lvl ptCount=\"4\" formatCode=\"General\">{vals}</cx:lvl></cx:numDim>"
            f"</cx:data></cx:chartData><cx:chart>{head}<cx:plotArea><cx:plotAreaRegion>"
            '<cx:series layoutId="waterfall"><cx:tx><cx:txData><cx:f>Sheet1!$B$1</cx:f><cx:v>Cash</cx:v>'
            '</cx:txData></cx:tx><cx:dataId val="0"/></cx:series></cx:plotAreaRegion></cx:plotArea></cx:chart>'
            "</cx:chartSpace>")


TREEMAP = (f'<cx:chartSpace {CX_NS}><cx:chartData><cx:data id="0"><cx:strDim type="cat"><cx:f dir="row">x</cx:f>'
           '<cx:lvl ptCount="3"><cx:pt idx="0">Oslo</cx:pt><cx:pt idx="1">Bergen</cx:pt><cx:pt idx="2">Lyon</cx:pt>'
           '</cx:lvl><cx:lvl ptCount="3"><cx:pt idx="0">Norway</cx:pt><cx:pt idx="1">Norway</cx:pt>'
           '<cx:pt idx="2">France</cx:pt></cx:lvl></cx:strDim><cx:numDim type="size"><cx:lvl ptCount="3">'
           '<cx:pt idx="0">12</cx:pt><cx:pt idx="1">7</cx:pt><cx:pt idx="2">9</cx:pt></cx:lvl></cx:numDim></cx:data>'
           '</cx:chartData><cx:chart><cx:plotArea><cx:plotAreaRegion><cx:series layoutId="treemap"><cx:dataId val="0"/>'
           '</cx:series><cx:series layoutId="paretoLine" ownerIdx="0"><cx:dataId val="0"/></cx:series>'
           '</cx:plotAreaRegion></cx:plotArea></cx:chart></cx:chartSpace>')
EMPTY_CHARTEX = f'<cx:chartSpace {CX_NS}><cx:chartData/><cx:chart/></cx:chartSpace>'


def chartex_frame(rid: str) -> str:
    """A Word drawing of an Office 2016 chart as Word saves it: the chart for new readers, a picture for old ones."""
    return ('<w:p><w:r><mc:AlternateContent><mc:Choice Requires="cx1"><w:drawing><a:graphic><a:graphicData '
            f'uri="http://schemas.microsoft.com/office/drawing/2014/chartex"><cx:chart {CX_NS} r:id="{rid}"/>'
            '</a:graphicData></a:graphic></w:drawing></mc:Choice><mc:Fallback><w:drawing><a:graphic><a:graphicData>'
            '<pic:pic xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture"/></a:graphicData>'
            '</a:graphic></w:drawing></mc:Fallback></mc:AlternateContent></w:r></w:p>')


def test_office_2016_charts_in_a_word_document_are_read_or_said(tmp_path):
    body = p("Bridge:") + chartex_frame("rId1") + chartex_frame("rId2") + chartex_frame("rId3") + chartex_frame("rId4")
    parts = {"word/charts/chartEx1.xml": waterfall(), "word/charts/chartEx2.xml": TREEMAP,
             "word/charts/chartEx3.xml": EMPTY_CHARTEX}
    rels = {f"rId{i}": (CHARTEX_REL, f"charts/chartEx{i}.xml") for i in range(1, 5)}  # chartEx4.xml is missing
    doc = load_document(write(tmp_path, "d.docx", docx_bytes(body, parts, rels)))
    assert doc.text == ("Bridge:\nChart: Cash bridge (EUR m)\n| Cash\nStart | 100\nSales | 20\nCosts | -40\nEnd | 80\n"
                        "Chart:\n| Series 1\nNorway Oslo | 12\nNorway Bergen | 7\nFrance Lyon | 9")
    assert doc.notes == (f"left out 2 charts of {tmp_path / 'd.docx'}: no text or data tmix can read",)


def ole(rid: str, prog_id: str, kind: str = "Embed") -> str:
    """A Word paragraph holding an OLE object as Word writes it: its picture (VML) and the object."""
    return (f'<w:p><w:r><w:object><v:shape><v:imagedata r:id="img"/></v:shape><o:OLEObject Type="{kind}" '
            f'ProgID="{prog_id}" ShapeID="s1" r:id="{rid}"/></w:object></w:r></w:p>')


def test_embedded_files_are_read_where_they_sit_or_named_in_a_status_line(tmp_path):
    inner = docx_bytes(p("Inner budget: 4.2 million.") + ole("rIn", "Excel.Sheet.12"),
                       {"word/embeddings/inner.xlsx": b"PK"}, {"rIn": ("package", "embeddings/inner.xlsx")})
    page = b"<html><body><nav>Menu</nav><p>Imported terms: net 30 days.</p></body></html>"
    body = (p("See the sheet.") + ole("rId1", "Excel.Sheet.12") + ole("rId2", "Equation.DSMT4")
            + ole("rId3", "Word.Document.12") + ole("rId4", "Excel.Sheet.12", "Link")
            + '<w:p><w:r><w:object><w:objectEmbed w:progId="AcroExch.Document.DC" r:id="rId7"/></w:object></w:r></w:p>'
            + '<w:altChunk r:id="rId5"/><w:altChunk r:id="rId6"/>' + p("The end."))
    parts = {"word/embeddings/Microsoft_Excel_Worksheet.xlsx": b"PK\x03\x04 not read",
             "word/embeddings/oleObject1.bin": b"\xd0\xcf\x11\xe0", "word/embeddings/o2.bin": b"x",
             "word/embeddings/Microsoft_Word_Document.docx": inner,
             "word/afchunk.htm": page, "word/afchunk.rtf": b"{\\rtf1 Hidden terms}"}
    rels = {"rId1": ("package", "embeddings/Microsoft_Excel_Worksheet.xlsx"),
            "rId2": ("oleObject", "embeddings/oleObject1.bin"),
            "rId3": ("package", "embeddings/Microsoft_Word_Document.docx"),
            "rId5": ("aFChunk", "afchunk.htm"), "rId6": ("aFChunk", "afchunk.rtf"),
            "rId7": ("oleObject", "embeddings/o2.bin")}
    doc = load_document(write(tmp_path, "d.docx", docx_bytes(body, parts, rels)))
    assert doc.text == ("See the sheet.\nEmbedded Word document:\nInner budget: 4.2 million.\n"
                        "Imported terms: net 30 days.\nThe end.")
    assert doc.notes == (f"left out 6 embedded objects of {tmp_path / 'd.docx'} that tmix cannot read: 3 Excel sheets, "
                         "1 equation, 1 PDF, 1 imported RTF file",)


def test_a_document_of_embedded_objects_alone_says_so(tmp_path, capsys):
    path = write(tmp_path, "sheet.docx", docx_bytes(ole("rId1", "Excel.Sheet.12"), {"word/embeddings/a.xlsx": b"PK"},
                                                    {"rId1": ("package", "embeddings/a.xlsx")}))
    code, out, err = run(capsys, "text", path)
    assert (code, out) == (2, "")
    assert err == (f"tmix: error: {path} has no text tmix can read (left out 1 embedded object of {path} that tmix "
                   "cannot read: 1 Excel sheet)\n")


def test_embedded_documents_read_at_most_so_many(tmp_path):
    inner = docx_bytes(p("Inner."))
    body = "".join(ole(f"rId{i}", "Word.Document.12") for i in range(MOST_READ + 2))
    parts = {"word/embeddings/w.docx": inner}
    rels = {f"rId{i}": ("package", "embeddings/w.docx") for i in range(MOST_READ + 2)}
    doc = load_document(write(tmp_path, "d.docx", docx_bytes(body, parts, rels)))
    assert doc.text.count("Inner.") == MOST_READ
    assert doc.notes == (f"left out 2 embedded objects of {tmp_path / 'd.docx'} that tmix cannot read: "
                         "2 Word documents",)


def test_a_deck_says_which_slides_hold_what_it_left_out(tmp_path, capsys):
    def frame(inner: str) -> str:
        return f"<p:graphicFrame><a:graphic><a:graphicData>{inner}</a:graphicData></a:graphic></p:graphicFrame>"

    sheet = ('<mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
             '<mc:Choice Requires="v"><p:oleObj name="Worksheet" r:id="rOle" progId="Excel.Sheet.12"><p:embed/>'
             '</p:oleObj></mc:Choice><mc:Fallback><p:oleObj name="Worksheet" r:id="rOle" progId="Excel.Sheet.12">'
             "<p:embed/><p:pic/></p:oleObj></mc:Fallback></mc:AlternateContent>")
    word = '<p:oleObj r:id="rDoc" progId="Word.Document.12"><p:embed/></p:oleObj>'
    linked = '<p:oleObj r:id="rLink" progId="Visio.Drawing.15"><p:link updateAutomatic="1"/></p:oleObj>'
    rels = {"rCx": (CHARTEX_REL, "../charts/chartEx1.xml"), "rGone": ("chart", "../charts/chart9.xml"),
            "rOle": ("package", "../embeddings/sheet.xlsx"), "rDoc": ("package", "../embeddings/note.docx")}
    parts = {"ppt/charts/chartEx1.xml": waterfall(""), "ppt/embeddings/sheet.xlsx": b"PK",
             "ppt/embeddings/note.docx": docx_bytes(p("Note from legal."))}
    chart = f'<cx:chart {CX_NS} r:id="rCx"/>'
    gone = ('<c:chart xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart" r:id="rGone"/>'
            '<dgm:relIds xmlns:dgm="http://schemas.openxmlformats.org/drawingml/2006/diagram" r:dm="rNone"/>')
    text = deck(tmp_path, ("", {}), (frame(chart) + frame(gone) + frame(sheet), rels),
                (frame(word) + frame(sheet) + frame(linked), rels), parts=parts)
    assert text == ("Slide 1\nSlide 2\nChart:\n| Cash\nStart | 100\nSales | 20\nCosts | -40\nEnd | 80\nSlide 3\n"
                    "Embedded Word document:\nNote from legal.")
    path = str(tmp_path / "deck.pptx")
    code, out, err = run(capsys, "text", path)
    assert (code, out) == (0, text + "\n")
    assert err == (f"tmix: left out 1 chart of {path} (slide 2): no text or data tmix can read\n"
                   f"tmix: left out 1 SmartArt diagram of {path} (slide 2): no data part to read\n"
                   f"tmix: left out 3 embedded objects of {path} (slides 2, 3) that tmix cannot read: 2 Excel sheets, "
                   "1 Visio drawing\n")


FORMULA = ('<math xmlns="http://www.w3.org/1998/Math/MathML"><semantics><mrow><mi>Q</mi><mo>=</mo><mfrac><mi>F</mi>'
           '<mrow><mi>p</mi><mo>-</mo><mi>v</mi></mrow></mfrac></mrow><annotation encoding="StarMath 5.0">Q = F over '
           '{p - v}</annotation></semantics></math>')
SUM = ('<math xmlns="http://www.w3.org/1998/Math/MathML"><mrow><munderover><mo>\u2211</mo><mrow><mi>i</mi><mo>=</mo>'
       '<mn>1</mn></mrow><mi>n</mi></munderover><msub><mi>a</mi><mi>i</mi></msub><mo>+</mo><msqrt><mn>2</mn></msqrt>'
       '<mo>+</mo><msup><mi>x</mi><mrow><mi>n</mi><mo>+</mo><mn>1</mn></mrow></msup></mrow></math>')
ODF_CHART = (f'<office:document-content {ODF} xmlns:chart="urn:oasis:names:tc:opendocument:xmlns:chart:1.0">'
             "<office:body><office:chart><chart:chart><chart:title><text:p>Revenue by year</text:p></chart:title>"
             "<chart:plot-area><chart:axis><chart:title><text:p>EUR m</text:p></chart:title></chart:axis>"
             "</chart:plot-area><table:table><table:table-header-rows><table:table-row><table:table-cell><text:p/>"
             "</table:table-cell><table:table-cell><text:p>Revenue</text:p></table:table-cell></table:table-row>"
             "</table:table-header-rows><table:table-rows><table:table-row><table:table-cell><text:p>2022</text:p>"
             "</table:table-cell><table:table-cell><text:p>41.2</text:p></table:table-cell></table:table-row>"
             "</table:table-rows></table:table></chart:chart></office:chart></office:body></office:document-content>")
DRAWING = f"<office:document-content {ODF}><office:body><office:drawing/></office:body></office:document-content>"


def test_opendocument_formulas_and_charts_are_read_other_objects_said(tmp_path):
    def frame(href: str, tag: str = "draw:object") -> str:
        return (f'<draw:frame text:anchor-type="as-char"><{tag} xlink:href="{href}"/>'
                f'<draw:image xlink:href="./ObjectReplacements/{href[2:]}"/></draw:frame>')

    body = (f"<text:p>Break-even: {frame('./Object 1')} units.</text:p><text:p>{frame('./Object 2')}</text:p>"
            f"<text:p>Sales: {frame('./Object 3')}</text:p><text:p>{frame('./Object 4')}"
            f"{frame('./Object 5', 'draw:object-ole')}{frame('./Object 6')}</text:p>")
    content = (f'<office:document-content {ODT_NS} xmlns:xlink="http://www.w3.org/1999/xlink"><office:body>'
               f"<office:text>{body}</office:text></office:body></office:document-content>")
    files = {"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": content,
             "Object 1/content.xml": FORMULA, "Object 2/content.xml": SUM, "Object 3/content.xml": ODF_CHART,
             "Object 4/content.xml": DRAWING, "Object 5": b"\xd0\xcf\x11\xe0"}
    doc = load_document(write(tmp_path, "d.odt", zip_bytes(files)))
    assert doc.text == ("Break-even: Q=F/(p-v) units.\n\u2211_(i=1)^n a_i+sqrt(2)+x^(n+1)\nSales:\n"
                        "Chart: Revenue by year\n| Revenue\n2022 | 41.2")
    assert doc.notes == (f"left out 3 embedded objects of {tmp_path / 'd.odt'} that tmix cannot read: 1 drawing, "
                         "1 OLE object, 1 object",)


def test_an_embedded_file_that_is_damaged_is_left_out_not_the_document(tmp_path):
    body = p("Before.") + ole("rId1", "Word.Document.12") + p("After.")
    doc = load_document(write(tmp_path, "d.docx", docx_bytes(body, {"word/embeddings/bad.docx": b"PK\x03\x04junk"},
                                                             {"rId1": ("package", "embeddings/bad.docx")})))
    assert doc.text == "Before.\nAfter."
    assert doc.notes == (f"left out 1 embedded object of {tmp_path / 'd.docx'} that tmix cannot read: "
                         "1 Word document",)
