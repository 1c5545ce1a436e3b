"""PowerPoint decks: charts and SmartArt read, footers and dates once, slide numbers left out, shapes saved twice
read once, table cells on one line."""

from __future__ import annotations

from test_zipdocs import PML, write, zip_bytes

from tmixcli.documents import load_document

RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
OFFICE_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
C_NS = 'xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart"'
DGM_NS = 'xmlns:dgm="http://schemas.openxmlformats.org/drawingml/2006/diagram"'
A_NS = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'


def _series(name: str, values: tuple[str, str]) -> str:
    points = "".join(f'<c:pt idx="{i}"><c:v>{v}</c:v></c:pt>' for i, v in enumerate(values))
    return (f'<c:ser><c:tx><c:strRef><c:strCache><c:pt idx="0"><c:v>{name}</c:v></c:pt></c:strCache></c:strRef>'
            '</c:tx><c:cat><c:strRef><c:strCache><c:ptCount val="2"/><c:pt idx="0"><c:v>2022</c:v></c:pt>'
            '<c:pt idx="1"><c:v>2023</c:v></c:pt></c:strCache></c:strRef></c:cat>'
            f'<c:val><c:numRef><c:numCache>{points}</c:numCache></c:numRef></c:val></c:ser>')


CHART = (f'<c:chartSpace {C_NS} {A_NS}><c:chart><c:title><c:tx><c:rich><a:p><a:r><a:t>Revenue by year</a:t></a:r>'
         '<a:r><a:t> (EUR m)</a:t></a:r></a:p></c:rich></c:tx></c:title><c:plotArea><c:barChart>'
         + _series("Revenue", ("41.2", "48.7")) + "</c:barChart><c:lineChart>" + _series("Costs", ("30.1", "33.0"))
         + "</c:lineChart></c:plotArea></c:chart></c:chartSpace>")


def _point(key: str, text: str = "", kind: str = "") -> str:
    body = f"<dgm:t><a:bodyPr/><a:p><a:r><a:t>{text}</a:t></a:r></a:p></dgm:t>" if text else ""
    return f'<dgm:pt modelId="{key}"{f" type={chr(34)}{kind}{chr(34)}" if kind else ""}>{body}</dgm:pt>'


DIAGRAM = (f'<dgm:dataModel {DGM_NS} {A_NS}><dgm:ptLst>' + _point("0", kind="doc")
           + _point("3", "Step 3: Publish report") + _point("1", "Step 1: Sign lease") + _point("9", "x", "pres")
           + _point("2", "Step 2: Hire auditors") + _point("7", "", "sibTrans") + "</dgm:ptLst><dgm:cxnLst>"
           + "".join(f'<dgm:cxn modelId="c{i}" srcId="0" destId="{i}" srcOrd="{i - 1}"/>' for i in (3, 1, 2))
           + '<dgm:cxn modelId="c9" type="presOf" srcId="1" destId="9"/></dgm:cxnLst></dgm:dataModel>')


def deck(tmp_path, *slides: tuple[str, dict[str, tuple[str, str]]], parts: dict[str, str] | None = None) -> str:
    """The text of a deck of `slides`, each (its shapes, its relationships id -> (type, target)), with more parts."""
    ids = "".join(f'<p:sldId id="{256 + i}" r:id="s{i}"/>' for i in range(len(slides)))
    files = {"ppt/presentation.xml": f"<p:presentation {PML}><p:sldIdLst>{ids}</p:sldIdLst></p:presentation>",
             "ppt/_rels/presentation.xml.rels": f'<Relationships xmlns="{RELS}">' + "".join(
                 f'<Relationship Id="s{i}" Type="{OFFICE_RELS}/slide" Target="slides/slide{i}.xml"/>'
                 for i in range(len(slides))) + "</Relationships>"}
    for i, (shapes, rels) in enumerate(slides):
        files[f"ppt/slides/slide{i}.xml"] = f"<p:sld {PML}><p:cSld><p:spTree>{shapes}</p:spTree></p:cSld></p:sld>"
        files[f"ppt/slides/_rels/slide{i}.xml.rels"] = f'<Relationships xmlns="{RELS}">' + "".join(
            f'<Relationship Id="{rid}" Type="{OFFICE_RELS}/{kind}" Target="{target}"/>'
            for rid, (kind, target) in rels.items()) + "</Relationships>"
    files.update(parts or {})
    return load_document(write(tmp_path, "deck.pptx", zip_bytes(files))).text


def shape(*paras: str, ph: str | None = None) -> str:
    nv = f'<p:nvSpPr><p:nvPr><p:ph type="{ph}"/></p:nvPr></p:nvSpPr>' if ph else ""
    return (f"<p:sp>{nv}<p:txBody>" + "".join(f"<a:p><a:r><a:t>{x}</a:t></a:r></a:p>" for x in paras)
            + "</p:txBody></p:sp>")


def test_smartart_and_chart_text_is_read_where_the_frame_sits(tmp_path):
    frames = ('<p:graphicFrame><a:graphic><a:graphicData><dgm:relIds ' + DGM_NS + ' r:dm="rId2" r:lo="rId3"/>'
              '</a:graphicData></a:graphic></p:graphicFrame><p:graphicFrame><a:graphic><a:graphicData><c:chart '
              + C_NS + ' r:id="rId6"/></a:graphicData></a:graphic></p:graphicFrame>'
              '<p:graphicFrame><a:graphic><a:graphicData><c:chart ' + C_NS + ' r:id="rId404"/></a:graphicData>'
              '</a:graphic></p:graphicFrame>')
    rels = {"rId2": ("diagramData", "../diagrams/data1.xml"), "rId6": ("chart", "../charts/chart1.xml"),
            "rId404": ("chart", "../charts/missing.xml")}
    text = deck(tmp_path, (shape("Plan 2024", ph="title"), {}),
                (shape("Next steps", ph="title") + frames + shape("After the chart."), rels),
                parts={"ppt/diagrams/data1.xml": DIAGRAM, "ppt/charts/chart1.xml": CHART})
    assert text == ("Slide 1\nPlan 2024\nSlide 2\nNext steps\nStep 1: Sign lease\nStep 2: Hire auditors\n"
                    "Step 3: Publish report\nChart: Revenue by year (EUR m)\n| Revenue | Costs\n2022 | 41.2 | 30.1\n"
                    "2023 | 48.7 | 33.0\nAfter the chart.")


def test_footer_and_date_once_slide_numbers_left_out(tmp_path):
    def slide(n: int, title: str) -> tuple[str, dict]:
        date = '<a:fld id="{1}" type="datetime1"><a:t>14/05/2024</a:t></a:fld>'
        return (shape(title, ph="title") + shape("Orion Holdings - Strictly confidential", ph="ftr")
                + f'<p:sp><p:nvSpPr><p:nvPr><p:ph type="dt"/></p:nvPr></p:nvSpPr><p:txBody><a:p>{date}</a:p>'
                  f'</p:txBody></p:sp>' + shape(str(n), ph="sldNum"), {})

    text = deck(tmp_path, slide(1, "Results"), slide(2, "Costs"),
                (shape("Outlook", ph="title") + shape("New footer", ph="ftr"), {}))
    assert text == ("Slide 1\nResults\nOrion Holdings - Strictly confidential\n14/05/2024\nSlide 2\nCosts\n"
                    "Slide 3\nOutlook\nNew footer")


def test_a_shape_saved_twice_is_read_once_and_table_cells_stay_on_their_row(tmp_path):
    twice = ('<mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
             f'<mc:Choice Requires="p14">{shape("Once")}</mc:Choice><mc:Fallback>{shape("Once")}</mc:Fallback>'
             "</mc:AlternateContent>")
    table = ('<p:graphicFrame><a:graphic><a:graphicData><a:tbl><a:tr><a:tc><a:txBody><a:p/></a:txBody></a:tc>'
             '<a:tc><a:txBody><a:p><a:r><a:t>2023</a:t></a:r></a:p></a:txBody></a:tc></a:tr><a:tr><a:tc><a:txBody>'
             '<a:p><a:r><a:t>Marie Roux</a:t></a:r><a:br/><a:r><a:t>(acting)</a:t></a:r></a:p><a:p><a:r>'
             '<a:t>Lyon</a:t></a:r></a:p></a:txBody></a:tc><a:tc><a:txBody><a:p><a:r><a:t>12</a:t></a:r></a:p>'
             '</a:txBody></a:tc></a:tr></a:tbl></a:graphicData></a:graphic></p:graphicFrame>')
    assert deck(tmp_path, (twice + table, {})) == "Slide 1\nOnce\n| 2023\nMarie Roux (acting) Lyon | 12"


def test_shapes_hidden_on_a_slide_are_left_out(tmp_path):
    def named(inner: str, hidden: str = "") -> str:
        return (f'<p:sp><p:nvSpPr><p:cNvPr id="2" name="Box"{f" hidden={chr(34)}{hidden}{chr(34)}" if hidden else ""}/>'
                f"</p:nvSpPr><p:txBody><a:p><a:r><a:t>{inner}</a:t></a:r></a:p></p:txBody></p:sp>")

    group = ('<p:grpSp><p:nvGrpSpPr><p:cNvPr id="5" name="Group" hidden="1"/></p:nvGrpSpPr>'
             + named("In a hidden group") + "</p:grpSp>")
    text = deck(tmp_path, (named("Shown") + named("Draft: hidden", "1") + named("Hidden too", "true")
                           + named("Not hidden", "0") + group, {}))
    assert text == "Slide 1\nShown\nNot hidden"


def test_layout_and_master_text_once_their_prompts_never(tmp_path):
    """A master's and a layout's own text boxes show on every slide of the layout: read once, on the first slide that
    shows them (master first); their placeholders' prompts are never read; a slide that hides background graphics
    shows neither, a layout that hides them shows its own text only."""
    def part(tag: str, shapes: str, hide: bool = False) -> str:
        return (f'<p:{tag} {PML}{" showMasterSp=" + chr(34) + "0" + chr(34) if hide else ""}><p:cSld><p:spTree>'
                f"{shapes}</p:spTree></p:cSld></p:{tag}>")

    def rels(kind: str, target: str) -> str:
        return (f'<Relationships xmlns="{RELS}"><Relationship Id="r1" Type="{OFFICE_RELS}/{kind}" '
                f'Target="{target}"/></Relationships>')

    master = shape("Click to edit Master title style", ph="title") + shape("Halvorsen Marine - confidential")
    layout = shape("Quarterly review") + shape("Body", ph="body")
    parts = {"ppt/slideMasters/slideMaster1.xml": part("sldMaster", master),
             "ppt/slideLayouts/slideLayout1.xml": part("sldLayout", layout),
             "ppt/slideLayouts/_rels/slideLayout1.xml.rels": rels("slideMaster", "../slideMasters/slideMaster1.xml"),
             "ppt/slideLayouts/slideLayout2.xml": part("sldLayout", shape("Appendix"), hide=True),
             "ppt/slideLayouts/_rels/slideLayout2.xml.rels": rels("slideMaster", "../slideMasters/slideMaster1.xml"),
             "ppt/slides/slide2.xml": part("sld", shape("Photo slide", ph="title"), hide=True)}
    one, two = ({"l": ("slideLayout", f"../slideLayouts/slideLayout{n}.xml")} for n in (1, 2))
    text = deck(tmp_path, (shape("Plan 2024", ph="title"), one), (shape("Next steps", ph="title"), one),
                ("", one), (shape("Sources", ph="title"), two), (shape("Thanks", ph="title"), one), parts=parts)
    assert text.split("\n") == ["Slide 1", "Halvorsen Marine - confidential", "Quarterly review", "Plan 2024",
                                "Slide 2", "Next steps", "Slide 3", "Photo slide", "Slide 4", "Appendix", "Sources",
                                "Slide 5", "Thanks"]


def test_a_damaged_layout_costs_its_own_text_only_and_fields_are_not_read(tmp_path):
    """A layout part that is not XML leaves the slides' text; a master's slide-number and date fields (the template's
    `‹#›` and its saved date) are left out of its text boxes, the text around them kept."""
    field = ('<p:sp><p:txBody><a:p><a:r><a:t>Page </a:t></a:r><a:fld id="{1}" type="slidenum"><a:t>‹#›</a:t>'
             '</a:fld></a:p><a:p><a:fld id="{2}" type="datetime1"><a:t>3/4/2021</a:t></a:fld></a:p></p:txBody></p:sp>')
    master = f'<p:sldMaster {PML}><p:cSld><p:spTree>{field}</p:spTree></p:cSld></p:sldMaster>'
    rels = (f'<Relationships xmlns="{RELS}"><Relationship Id="r1" Type="{OFFICE_RELS}/slideMaster" '
            'Target="../slideMasters/slideMaster1.xml"/></Relationships>')
    parts = {"ppt/slideLayouts/slideLayout1.xml": f"<p:sldLayout {PML}><p:cSld/></p:sldLayout>",
             "ppt/slideLayouts/_rels/slideLayout1.xml.rels": rels, "ppt/slideMasters/slideMaster1.xml": master,
             "ppt/slideLayouts/slideLayout2.xml": "<p:sldLayout oops"}
    one, two = ({"l": ("slideLayout", f"../slideLayouts/slideLayout{n}.xml")} for n in (1, 2))
    text = deck(tmp_path, (shape("Broken layout", ph="title"), two), (shape("Plan", ph="title"), one), parts=parts)
    assert text.split("\n") == ["Slide 1", "Broken layout", "Slide 2", "Page", "Plan"]
