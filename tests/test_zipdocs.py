""".docx, HTML and EPUB documents: real files built here and in sample_docs/, every failure a one-line TmixError."""

from __future__ import annotations

import io
import json
import random
import re
import runpy
import zipfile
from pathlib import Path

import pytest

from tmixcli import ziputil
from tmixcli.documents import load_document
from tmixcli.errors import TmixError

SAMPLES = Path(__file__).resolve().parent.parent / "sample_docs"
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def zip_bytes(parts: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return buf.getvalue()


def docx(body: str) -> bytes:
    """A Word package whose document.xml body is `body` (WordprocessingML, w: prefix)."""
    return zip_bytes({"[Content_Types].xml": "<Types/>",
                      "word/document.xml": f'<w:document xmlns:w="{W_NS}"><w:body>{body}</w:body></w:document>'})


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


def expect_error(path: str, *fragments: str, **kwargs) -> None:
    with pytest.raises(TmixError) as info:
        load_document(path, **kwargs)
    message = str(info.value)
    assert info.value.code == 2 and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_sample_report_formats_share_the_text():
    """report.docx, .odt and .html (made by make_samples.py) read back as the same text, each fact once."""
    docx_text = load_document(str(SAMPLES / "report.docx")).text
    html_text = load_document(str(SAMPLES / "report.html")).text
    assert docx_text == html_text == load_document(str(SAMPLES / "report.odt")).text
    pdf_text = re.sub(r"--- page \d+ ---", " ", load_document(str(SAMPLES / "report.pdf")).text)
    assert pdf_text.split() == docx_text.split()
    assert docx_text.startswith("Halvorsen Marine Systems AS - Annual Report 2023\nThis annual report")
    assert "console.log" not in html_text and "font-family" not in html_text
    facts = [f for f in json.loads((SAMPLES / "facts.json").read_text()) if f["doc"] == "report.pdf"]
    for fact in facts:
        assert docx_text.count(fact["answer"]) == 1, fact


def test_sample_docx_and_html_match_generator():
    generator = runpy.run_path(str(SAMPLES / "make_samples.py"))
    source = (SAMPLES / "report.md").read_text(encoding="utf-8")
    assert generator["build_docx"](source) == (SAMPLES / "report.docx").read_bytes()
    assert generator["build_odt"](source) == (SAMPLES / "report.odt").read_bytes()
    assert generator["build_html"](source) == (SAMPLES / "report.html").read_text(encoding="utf-8")


def test_docx_runs_tabs_breaks_tables_and_tracked_changes(tmp_path):
    body = ('<w:p><w:r><w:t>Net </w:t></w:r><w:r><w:t xml:space="preserve">revenue</w:t></w:r>'
            '<w:r><w:tab/><w:t>48.7</w:t><w:br/><w:t>million</w:t></w:r></w:p>'
            '<w:p><w:r><w:delText>old words</w:delText></w:r>'
            '<w:ins><w:r><w:t xml:space="preserve">new words </w:t></w:r></w:ins>'
            '<w:r><w:instrText>PAGE</w:instrText></w:r>'
            '<w:r><w:t>non</w:t><w:noBreakHyphen/><w:t>stop</w:t></w:r></w:p>'
            '<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Year</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Sales</w:t></w:r>'
            '</w:p></w:tc></w:tr><w:tr><w:tc><w:p><w:r><w:t>2023</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r>'
            '<w:t>12</w:t></w:r></w:p><w:p><w:r><w:t>units</w:t></w:r></w:p></w:tc></w:tr></w:tbl>'
            '<w:tbl><w:tr><w:tc><w:p><w:r><w:t>outer</w:t></w:r></w:p><w:tbl><w:tr><w:tc><w:p><w:r>'
            '<w:t>inner</w:t></w:r></w:p></w:tc></w:tr></w:tbl></w:tc></w:tr></w:tbl>'
            '<w:sdt><w:sdtContent><w:p><w:r><w:t>Inside a content control.</w:t></w:r></w:p></w:sdtContent></w:sdt>'
            '<w:p/><w:sectPr/>')
    doc = load_document(write(tmp_path, "r.docx", docx(body)))
    assert doc.text == ("Net revenue\t48.7\nmillion\nnew words non-stop\nYear | Sales\n2023 | 12 units\nouter inner\n"
                        "Inside a content control.")
    assert doc.pages is None


def test_html_visible_text_only(tmp_path):
    page = ("<!doctype html><html><head><title>T</title><style>p{}</style><script>var x = '<p>no</p>';</script>"
            "</head><body><h1>Annual&nbsp;report</h1><p>Revenue   was\n 48.7 &euro;m &amp; rising.</p>"
            "<ul><li>first</li><li>second <b>bold</b></li></ul><table><tr><th>Year</th><th>Sales</th></tr>"
            "<tr><td>2023</td><td>12</td></tr></table><pre>a  b\n  c</pre><p>line<br>break</p>"
            "<noscript>enable js</noscript><div>tail</div></body></html>")
    doc = load_document(write(tmp_path, "page.html", page))
    assert doc.text == ("Annual report\nRevenue was 48.7 \u20acm & rising.\n- first\n- second bold\n"
                        "Year | Sales\n2023 | 12\na  b\n  c\nline\nbreak\ntail")


def test_html_by_sniffing_and_declared_charset(tmp_path):
    latin = "<html><head><meta charset=\"iso-8859-1\"></head><body><p>caf\u00e9</p></body></html>"
    assert load_document(write(tmp_path, "page.bin", latin.encode("latin-1"))).text == "caf\u00e9"
    stdin = io.BytesIO(b"\xef\xbb\xbf  <!DOCTYPE HTML><p>from stdin</p>")
    assert load_document("-", stdin=stdin).text == "from stdin"
    assert load_document(write(tmp_path, "notes.md", "# Title\n\n<b>kept</b>")).text == "# Title\n\n<b>kept</b>"


def test_epub_chapters_in_spine_order(tmp_path):
    opf = ('<package xmlns="http://www.idpf.org/2007/opf"><manifest>'
           '<item id="c2" href="text/ch%202.xhtml" media-type="application/xhtml+xml"/>'
           '<item id="c1" href="text/ch1.xhtml" media-type="application/xhtml+xml"/></manifest>'
           '<spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>')
    container = ('<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                 '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
                 '</rootfiles></container>')
    book = zip_bytes({"mimetype": "application/epub+zip", "META-INF/container.xml": container,
                      "OEBPS/content.opf": opf,
                      "OEBPS/text/ch1.xhtml": "<html><body><h1>One</h1><p>First chapter.</p></body></html>",
                      "OEBPS/text/ch 2.xhtml": "<html><body><h1>Two</h1><p>Second chapter.</p></body></html>"})
    assert load_document(write(tmp_path, "book.epub", book)).text == "One\nFirst chapter.\nTwo\nSecond chapter."


@pytest.mark.parametrize("name, data, fragment", [
    ("sheet.xlsx", zip_bytes({"xl/workbook.xml": "<workbook/>"}), "Excel workbook"),
    ("deck.pptx", zip_bytes({"ppt/presentation.xml": "<p:presentation/>"}), "invalid XML"),
    ("empty.pptx", zip_bytes({"ppt/presentation.xml": "<presentation/>"}), "is empty"),
    ("files.zip", zip_bytes({"a.txt": "hello"}), "a ZIP archive; tmix reads PDF, .docx"),
    ("cut.docx", docx("<w:p><w:r><w:t>text</w:t></w:r></w:p>")[:60], "damaged ZIP"),
    ("bad.docx", zip_bytes({"word/document.xml": "<w:document><unclosed>"}), "invalid XML"),
    ("empty.docx", docx("<w:p/><w:sectPr/>"), "is empty"),
    ("nochapters.epub", zip_bytes({"META-INF/container.xml": "<container/>"}), "names no package file"),
    ("missing.epub", zip_bytes({"META-INF/container.xml": '<c><rootfile full-path="x.opf"/></c>'}), "has no x.opf"),
    ("empty.html", "<html><head><title>only a title</title></head><body> </body></html>", "is empty"),
    ("cp.html", b"<html><p>\x81\x8d\x8f</p></html>", "unknown encoding"),
    ("sheet.ods", zip_bytes({"mimetype": "application/vnd.oasis.opendocument.spreadsheet", "content.xml": "<x/>"}),
     "OpenDocument spreadsheet"),
    ("x.docx", zip_bytes({"[Content_Types].xml": "<Types/>"}),
     "x.docx is a damaged Word document (.docx): it has no word/document.xml"),
    ("x.pptx", zip_bytes({"[Content_Types].xml": "<Types/>", "ppt/slides/slide1.xml": "<sld/>"}),
     "x.pptx is a damaged PowerPoint deck (.pptx): it has no ppt/presentation.xml"),
    ("x.odt", zip_bytes({"mimetype": "application/vnd.oasis.opendocument.text"}),
     "x.odt is a damaged OpenDocument text (.odt): it has no content.xml"),
    ("x.epub", zip_bytes({"mimetype": "application/epub+zip"}),
     "x.epub is a damaged EPUB book (.epub): it has no META-INF/container.xml"),
    ("x.zip", zip_bytes({"[Content_Types].xml": '<Types><Override ContentType="application/vnd.openxmlformats-'
                                               'officedocument.wordprocessingml.document.main+xml"/></Types>'}),
     "x.zip is a damaged Word document (.docx): it has no word/document.xml"),
    ("sheet.docx", zip_bytes({"xl/workbook.xml": "<workbook/>"}), "sheet.docx is an Excel workbook (.xlsx)"),
])
def test_bad_markup_documents(tmp_path, name, data, fragment):
    expect_error(write(tmp_path, name, data), name, fragment)


def test_oversized_member_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ziputil, "MAX_MEMBER", 100)
    path = write(tmp_path, "big.docx", docx("<w:p><w:r><w:t>" + "x" * 200 + "</w:t></w:r></w:p>"))
    expect_error(path, "big.docx", "too large")


def test_pages_option_is_for_pdfs_only(tmp_path):
    path = write(tmp_path, "r.docx", docx("<w:p><w:r><w:t>text</w:t></w:r></w:p>"))
    expect_error(path, "r.docx", "--pages only applies to PDF", pages="1")


def test_html_web_page_keeps_main_content(tmp_path):
    page = ("<html><head><title>Acme news</title><body><header><a href='/'>Acme</a><nav><ul><li>Home</li>"
            "<li>About</li></ul></nav></header><main><article><h1>Results</h1><p>Revenue rose to 12 million."
            "<div hidden><div>nested</div> secret</div><span aria-hidden=\"true\">icon</span><p>Margins held."
            "<aside>Related: more</aside></article></main><div role=navigation>Next page</div>"
            "<footer>Copyright Acme</footer></body></html>")
    doc = load_document(write(tmp_path, "news.html", page))
    assert doc.text == "Results\nRevenue rose to 12 million.\nMargins held.\nRelated: more"
    no_main = page.replace("<main>", "").replace("</main>", "")  # no <main>: the whole body, menus still dropped
    assert load_document(write(tmp_path, "plain.html", no_main)).text == (
        "Acme\nResults\nRevenue rose to 12 million.\nMargins held.\nRelated: more\nCopyright Acme")


@pytest.mark.parametrize("style", ["display:none", "DISPLAY : None", "color: red; display: none !important",
                                   "visibility:hidden", "visibility: Hidden;", "visibility: collapse ! important;"])
def test_html_inline_hidden_styles_dropped(tmp_path, style):
    page = (f'<body><p>Shown one.</p><div style="{style}">secret <b>bold secret</b></div><span style="{style}">x'
            f'</span><p style="{style}">hidden paragraph<div>Shown two.</div><div><p style="{style}">last</div>'
            '<p>Shown three.</p><p style="display: block; visibility: visible">Shown four.</p></body>')
    assert load_document(write(tmp_path, "s.html", page)).text == "Shown one.\nShown two.\nShown three.\nShown four."


def test_docx_footnotes_and_endnotes(tmp_path):
    def notes(kind: str, items: dict[str, str]) -> str:
        sep = f'<w:{kind} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{kind}>'
        return (f'<w:{kind}s xmlns:w="{W_NS}">{sep}' + "".join(
            f'<w:{kind} w:id="{i}"><w:p><w:r><w:{kind}Ref/></w:r><w:r><w:t xml:space="preserve"> {text}</w:t></w:r>'
            f'</w:p></w:{kind}>' for i, text in items.items()) + f"</w:{kind}s>")

    body = ('<w:p><w:r><w:t>Revenue rose</w:t></w:r><w:r><w:footnoteReference w:id="7"/></w:r>'
            '<w:r><w:t xml:space="preserve"> as planned.</w:t></w:r></w:p>'
            '<w:p><w:r><w:t>Costs fell</w:t></w:r><w:r><w:endnoteReference w:id="2"/></w:r>'
            '<w:r><w:t>; see above</w:t></w:r><w:r><w:footnoteReference w:id="7"/></w:r></w:p>')
    package = zip_bytes({"[Content_Types].xml": "<Types/>",
                         "word/document.xml": f'<w:document xmlns:w="{W_NS}"><w:body>{body}</w:body></w:document>',
                         "word/footnotes.xml": notes("footnote", {"7": "Audited figures."}),
                         "word/endnotes.xml": notes("endnote", {"2": "Mainly freight."})})
    assert load_document(write(tmp_path, "notes.docx", package)).text == (
        "Revenue rose[1] as planned.\nCosts fell[2]; see above[1]\nNotes:\n[1] Audited figures.\n[2] Mainly freight.")


ODF = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
       'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
       'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"')


def test_odt_paragraphs_lists_tables_notes_and_changes(tmp_path):
    body = ('<text:tracked-changes><text:changed-region><text:deletion><text:p>gone</text:p></text:deletion>'
            '</text:changed-region></text:tracked-changes>'
            '<text:h>Results</text:h><text:p>Revenue<text:s text:c="3"/>rose<text:tab/>12%<text:line-break/>'
            'in <text:span>2023</text:span><text:note><text:note-citation>1</text:note-citation><text:note-body>'
            '<text:p>Audited.</text:p></text:note-body></text:note>.</text:p>'
            '<text:list><text:list-item><text:p>first</text:p><text:p>more</text:p></text:list-item>'
            '<text:list-item><text:p>second <text:a>link</text:a></text:p></text:list-item></text:list>'
            '<table:table><table:table-row><table:table-cell><text:p>Year</text:p></table:table-cell>'
            '<table:table-cell><text:p>Sales</text:p></table:table-cell></table:table-row><table:table-row>'
            '<table:table-cell><text:p>2023</text:p></table:table-cell><table:table-cell><text:p>12</text:p>'
            '</table:table-cell></table:table-row></table:table>'
            '<text:section><text:p>In a section.</text:p></text:section>')
    content = f'<office:document-content {ODF}><office:body><office:text>{body}</office:text></office:body>' \
              '</office:document-content>'
    doc = load_document(write(tmp_path, "r.odt", zip_bytes({"mimetype": "application/vnd.oasis.opendocument.text",
                                                            "content.xml": content})))
    assert doc.text == ("Results\nRevenue   rose\t12%\nin 2023[1].\n- first\nmore\n- second link\nYear | Sales\n"
                        "2023 | 12\nIn a section.\nNotes:\n[1] Audited.")


PML = ('xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
       'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" '
       'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"')
RELS = "http://schemas.openxmlformats.org/package/2006/relationships"


def _rels(*targets: tuple[str, str, str]) -> str:
    return f'<Relationships xmlns="{RELS}">' + "".join(
        f'<Relationship Id="{i}" Type="http://x/{kind}" Target="{t}"/>' for i, t, kind in targets) + "</Relationships>"


def _shape(*paras: str, ph: str | None = None) -> str:
    nv = f'<p:nvSpPr><p:nvPr><p:ph type="{ph}"/></p:nvPr></p:nvSpPr>' if ph else ""
    return f"<p:sp>{nv}<p:txBody>" + "".join(f"<a:p>{x}</a:p>" for x in paras) + "</p:txBody></p:sp>"


def test_pptx_slides_in_order_with_tables_and_notes(tmp_path):
    def slide(body: str, show: str = "") -> str:
        return f'<p:sld {PML}{show}><p:cSld><p:spTree>{body}</p:spTree></p:cSld></p:sld>'

    table = ('<p:graphicFrame><a:graphic><a:graphicData><a:tbl><a:tr><a:tc><a:txBody><a:p><a:r><a:t>Q3</a:t></a:r>'
             '</a:p></a:txBody></a:tc><a:tc><a:txBody><a:p><a:r><a:t>12 MW</a:t></a:r></a:p></a:txBody></a:tc>'
             '</a:tr></a:tbl></a:graphicData></a:graphic></p:graphicFrame>')
    deck = zip_bytes({
        "ppt/presentation.xml": f'<p:presentation {PML}><p:sldIdLst><p:sldId id="256" r:id="rId9"/>'
                                '<p:sldId id="257" r:id="rId2"/><p:sldId id="258" r:id="rId3"/></p:sldIdLst>'
                                "</p:presentation>",
        "ppt/_rels/presentation.xml.rels": _rels(("rId2", "slides/slide1.xml", "slide"),
                                                 ("rId3", "slides/slide3.xml", "slide"),
                                                 ("rId9", "slides/slide2.xml", "slide")),
        "ppt/slides/slide2.xml": slide(_shape("<a:r><a:t>Targets</a:t></a:r>") + table),
        "ppt/slides/slide1.xml": slide(_shape("<a:r><a:t>Wind </a:t></a:r><a:r><a:t>farm</a:t></a:r>",
                                              "<a:r><a:t>line</a:t></a:r><a:br/><a:r><a:t>two</a:t></a:r>")),
        "ppt/slides/_rels/slide1.xml.rels": _rels(("rId1", "../notesSlides/notesSlide1.xml", "notesSlide")),
        "ppt/notesSlides/notesSlide1.xml": slide(_shape("<a:r><a:t>1</a:t></a:r>", ph="sldNum")
                                                 + _shape("<a:r><a:t>Say the budget twice.</a:t></a:r>", ph="body")),
        "ppt/slides/slide3.xml": slide(_shape("<a:r><a:t>hidden</a:t></a:r>"), ' show="0"'),
    })
    assert load_document(write(tmp_path, "deck.pptx", deck)).text == (
        "Slide 1\nTargets\nQ3 | 12 MW\nSlide 2\nWind farm\nline\ntwo\nSpeaker notes: Say the budget twice.")


def odt(body: str) -> bytes:
    """An OpenDocument text package whose office:text holds `body` (text: and table: prefixes)."""
    content = f'<office:document-content {ODF}><office:body><office:text>{body}</office:text></office:body>' \
              '</office:document-content>'
    return zip_bytes({"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": content})


@pytest.mark.parametrize("name, data, fragment", [
    ("deep.docx", docx("<w:sdt>" * 5000 + "<w:p><w:r><w:t>x</w:t></w:r></w:p>" + "</w:sdt>" * 5000), "too deeply"),
    ("deep.odt", odt("<text:section>" * 5000 + "<text:p>x</text:p>" + "</text:section>" * 5000), "too deeply"),
    ("span.odt", odt("<text:p>" + "<text:span>" * 5000 + "x" + "</text:span>" * 5000 + "</text:p>"), "too deeply"),
    ("s_bad.odt", odt('<text:p>A<text:s text:c="abc"/>B</text:p>'), "space count that is not a number ('abc')"),
])
def test_malformed_documents_are_one_line_errors(tmp_path, name, data, fragment):
    expect_error(write(tmp_path, name, data), name, "damaged", fragment)


def test_odt_space_count_is_capped(tmp_path):
    doc = load_document(write(tmp_path, "s.odt", odt('<text:p>A<text:s text:c="99999999999"/>B<text:s/>C</text:p>')))
    assert doc.text == "A" + " " * 1000 + "B C"


def test_html_bad_charset_and_marked_sections(tmp_path):
    page = b'<html><head><meta charset="undefined"></head><body><p>Caf\xe9</p></body></html>'
    assert load_document(write(tmp_path, "undef.html", page)).text == "Caf\u00e9"  # read as Windows-1252
    expect_error(write(tmp_path, "undef2.html", page.replace(b"\xe9", b"\x81")), "undef2.html", "unknown encoding")
    odd = "<p>a<![foo[x]]>b</p><p>c<![ bar>d</p>"
    assert load_document(write(tmp_path, "odd.html", odd)).text == "ab\ncd"


@pytest.mark.parametrize("name, codec", [("page.html", "utf-16"), ("page.htm", "utf-16-be"), ("notes.txt", "utf-16"),
                                         ("notes.md", "utf-32")])
def test_utf16_and_utf32_with_a_bom(tmp_path, name, codec):
    source = "<p>Caf\u00e9 \u65e5\u672c</p>" if ".htm" in name else "Caf\u00e9 \u65e5\u672c\n"
    data = source.encode(codec) if codec != "utf-16-be" else b"\xfe\xff" + source.encode(codec)
    assert load_document(write(tmp_path, name, data)).text == "Caf\u00e9 \u65e5\u672c"


@pytest.mark.parametrize("name, codec, note", [("notes.txt", "utf-16-le", "UTF-16 LE"), ("notes.txt", "utf-16-be",
                                                "UTF-16 BE"), ("page.html", "utf-16-le", None)])
def test_utf16_without_a_bom_read_with_a_note(tmp_path, name, codec, note):
    source = "<p>Caf\u00e9 hi there</p>" if ".htm" in name else "hi there\nCaf\u00e9 \u65e5\u672c\n"
    doc = load_document(write(tmp_path, name, source.encode(codec)))
    assert doc.text == ("Caf\u00e9 hi there" if note is None else "hi there\nCaf\u00e9 \u65e5\u672c")
    assert doc.notes == ((f"{tmp_path / name} has no byte-order mark; read it as {note}",) if note else ())


SCRIPTS = {"zh": "会议纪要：董事会于周二开会，批准了年度预算。\n公司收入增长了百分之十二。\n",
           "ja": "取締役会は火曜日に開かれ、年間予算を承認しました。\nリスクに関する報告書を求めました。\n",
           "ru": "Совет директоров собрался во вторник и утвердил годовой бюджет.\nВторой абзац.\n",
           "el": "Το διοικητικό συμβούλιο συνεδρίασε την Τρίτη.\nΔεύτερη παράγραφος.\n",
           "ar": "اجتمع مجلس الإدارة يوم الثلاثاء ووافق على الميزانية السنوية.\n"}


@pytest.mark.parametrize("data, fragment", [
    (("some words " * 20).encode("utf-16-le") + b"\x00\xd8", "damaged UTF-16 LE text without a byte-order mark "
     "(convert it to UTF-8, e.g. iconv -f UTF-16LE -t UTF-8)"),
    (("some words " * 20).encode("utf-16-be") + b"\x00\x01", "damaged UTF-16 BE text"),
    (SCRIPTS["ru"].encode("utf-16-le") * 20 + b"\x00\xd8", "damaged UTF-16 LE text without a byte-order mark"),
    (b"\x01\x00\x02\x00" * 100, "binary data (it contains NUL bytes)"),  # small 16-bit numbers, not text
    (bytes(range(256)) * 4, "binary data (it contains NUL bytes)"),
])
def test_utf16_look_alikes_refused(tmp_path, data, fragment):
    expect_error(write(tmp_path, "x.txt", data), "x.txt", fragment)


@pytest.mark.parametrize("codec, note", [("utf-16-le", "UTF-16 LE"), ("utf-16-be", "UTF-16 BE")])
@pytest.mark.parametrize("lang", SCRIPTS)
def test_utf16_without_a_bom_in_other_scripts(tmp_path, lang, codec, note):
    path = write(tmp_path, f"{lang}.txt", SCRIPTS[lang].encode(codec))
    doc = load_document(path)
    assert doc.text == SCRIPTS[lang].strip()
    assert doc.notes == (f"{path} has no byte-order mark; read it as {note}",)
    page = "<html><body><p>" + "</p><p>".join(SCRIPTS[lang].split("\n")) + "</p></body></html>"
    assert load_document(write(tmp_path, f"{lang}.html", page.encode(codec))).text == SCRIPTS[lang].strip()


def test_utf16_look_alikes_in_8_bit_text_and_binary_data_keep_their_reading(tmp_path):
    """UTF-8 CJK, Latin-1 and parts of binary files are never taken for UTF-16 in another script."""
    cjk = (SCRIPTS["zh"] + SCRIPTS["ja"]) * 30
    assert load_document(write(tmp_path, "cjk.txt", cjk)).notes == ()
    latin1 = load_document(write(tmp_path, "latin1.txt", "Café crème, naïve à la carte.\n".encode("latin-1") * 50))
    assert latin1.notes[0].endswith("is not UTF-8; read it as Windows-1252 (Western European)")
    noise = random.Random(7).randbytes(4096)
    for name, data in [("noise", noise), ("pdf", (SAMPLES / "report.pdf").read_bytes()[1500:5596]),
                       ("zip", (SAMPLES / "report.docx").read_bytes()[200:4296])]:
        expect_error(write(tmp_path, f"{name}.txt", data), "binary data (it contains NUL bytes)")


def test_utf16_without_a_bom_sampled_through_a_surrogate_pair(tmp_path):
    """The first 4 KB end inside a character of two 16-bit units: the sample still reads as text."""
    text = ("Привет, мир.\n" * 400)[:2047] + "\U0001f389 конец.\n"
    assert load_document(write(tmp_path, "ru.txt", text.encode("utf-16-be"))).text == text.strip()


def epub(chapter: bytes, rootfile: str = "OEBPS/content.opf", href: str = "ch%201.xhtml") -> bytes:
    """An EPUB with one chapter, OEBPS/ch 1.xhtml, named by `href` from the package file at `rootfile`."""
    container = ('<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                 f'<rootfile full-path="{rootfile}"/></rootfiles></container>')
    opf = ('<package xmlns="http://www.idpf.org/2007/opf"><manifest>'
           f'<item id="c1" href="{href}"/></manifest><spine><itemref idref="c1"/></spine></package>')
    return zip_bytes({"mimetype": "application/epub+zip", "META-INF/container.xml": container,
                      "OEBPS/content.opf": opf, "OEBPS/ch 1.xhtml": chapter})


def test_western_html_and_epub_without_charset(tmp_path):
    page = b"<p>Caf\xe9 \x93owner\x94</p>"
    assert load_document(write(tmp_path, "p.html", page)).text == "Caf\u00e9 \u201cowner\u201d"
    chapter = b"<html><body><p>Jos\xe9 owns it.</p></body></html>"
    assert load_document(write(tmp_path, "b.epub", epub(chapter))).text == "Jos\u00e9 owns it."


def test_parts_named_from_the_archive_root(tmp_path):
    chapter = b"<html><body><p>Absolute.</p></body></html>"
    book = epub(chapter, rootfile="/OEBPS/content.opf", href="/OEBPS/ch%201.xhtml")
    assert load_document(write(tmp_path, "abs.epub", book)).text == "Absolute."
    deck = zip_bytes({
        "ppt/presentation.xml": f'<p:presentation {PML}><p:sldIdLst><p:sldId id="256" r:id="rId1"/></p:sldIdLst>'
                                "</p:presentation>",
        "ppt/_rels/presentation.xml.rels": _rels(("rId1", "/ppt/slides/slide1.xml", "slide")),
        "ppt/slides/slide1.xml": f'<p:sld {PML}><p:cSld><p:spTree>{_shape("<a:r><a:t>Rooted</a:t></a:r>")}'
                                 "</p:spTree></p:cSld></p:sld>",
    })
    assert load_document(write(tmp_path, "abs.pptx", deck)).text == "Slide 1\nRooted"


def test_html_head_left_open_without_body(tmp_path):
    page = "<html><head><title>T</title><meta charset=utf-8><p>The ship is Aurora.</p><div>Crew: 12</div>"
    assert load_document(write(tmp_path, "nobody.html", page)).text == "The ship is Aurora.\nCrew: 12"
