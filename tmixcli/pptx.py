"""Text of PowerPoint decks (.pptx) slide by slide, with the standard library only."""

from __future__ import annotations

import zipfile
from xml.etree import ElementTree

from tmixcli.charts import graphic_lines
from tmixcli.embeds import Embeds
from tmixcli.errors import TmixError
from tmixcli.ooxml import A, P, R, relationships, walk
from tmixcli.tablerow import cell_text, row_line
from tmixcli.ziputil import Reach, join_blocks, member, parse_xml

_RUNNING = ("ftr", "dt")  # footer and date placeholders: the same text on every slide, kept once


def pptx_text(zf: zipfile.ZipFile, label: str, reach: Reach | None = None, embeds: Embeds | None = None) -> str:
    """Text of a PowerPoint deck in slide order, each slide under a `Slide n` line: its text boxes' paragraphs,
    tables as `a | b` rows, charts, SmartArt diagrams and the embedded files `embeds` reads, then its speaker
    notes. Hidden slides are left out, slide numbers too; a footer or date, and the text boxes of a slide's layout
    and master, are kept on the first slide that shows them; charts and embedded files that cannot be read are
    counted in `embeds`. Read slide by slide until `reach` says the text is surely past what the model could use."""
    reach, embeds = reach or Reach(), embeds or Embeds()
    pres = parse_xml(member(zf, "ppt/presentation.xml", label), label)
    targets = {rid: target for rid, target, _ in relationships(zf, "ppt/presentation.xml", label)}
    blocks: list[str] = []
    running: set[str] = set()
    behind: dict[str, list[str]] = {}  # a layout's or master's own text, by part
    number = 0
    for sld in pres.iter(f"{P}sldId"):
        path = targets.get(sld.get(f"{R}id", ""))
        if path is None:
            continue
        slide = parse_xml(member(zf, path, label), label)
        number += 1
        if slide.get("show") == "0":
            continue
        rels = relationships(zf, path, label)
        blocks.append(f"Slide {number}")
        embeds.left.where = f"slide {number}"
        drawn = [line for line in _behind(zf, slide, rels, label, behind) if line not in running]
        running.update(drawn)  # shown on every slide of its layout: kept once, on the first
        blocks += drawn
        blocks += _slide_blocks(slide, running, {rid: target for rid, target, _ in rels}, zf, label, embeds)
        notes = [target for _, target, kind in rels if kind.endswith("/notesSlide")]
        if notes:
            text = " ".join(b for b in _notes_blocks(parse_xml(member(zf, notes[0], label), label)) if b)
            blocks.append(f"Speaker notes: {text}" if text else "")
        if reach.past(blocks):
            break
    embeds.left.where = ""
    return join_blocks(blocks)


def _slide_blocks(root: ElementTree.Element, running: set[str], targets: dict[str, str], zf: zipfile.ZipFile,
                  label: str, embeds: Embeds) -> list[str]:
    """Paragraph lines, table rows, chart and diagram lines and embedded files' lines of one slide; footers and
    dates already in `running` (which gets this slide's) and slide numbers are left out."""
    blocks = []
    for shape in walk(root):
        if shape.tag == f"{P}sp":
            kind = _placeholder(shape)
            lines = _shape_lines(shape)
            if kind == "sldNum" or kind in _RUNNING and "\n".join(lines) in running:
                continue
            if kind in _RUNNING:
                running.add("\n".join(lines))
            blocks += lines
        elif shape.tag == f"{A}tbl":
            for row in shape.findall(f"{A}tr"):
                blocks.append(row_line([cell_text([_paragraph(p) for p in cell.iter(f"{A}p")])
                                        for cell in row.findall(f"{A}tc")]))
        elif shape.tag == f"{A}graphicData":
            blocks += graphic_lines(shape, targets, zf, label, embeds.left)
        elif shape.tag == f"{P}oleObj":
            part = None if shape.find(f"{P}link") is not None else targets.get(shape.get(f"{R}id", ""))
            blocks += embeds.object(zf, part, shape.get("progId", ""), label)
    return [b for b in blocks if b.strip(" |")]


def _behind(zf: zipfile.ZipFile, slide: ElementTree.Element, rels: list[tuple[str, str, str]], label: str,
            parts: dict[str, list[str]]) -> list[str]:
    """The text a slide shows from its master and layout (drawn behind it): their shapes that are no placeholder,
    such as a "Confidential" box or a tagline; none where the slide hides background graphics (showMasterSp="0"),
    the master's none where its layout does. `parts` keeps each part's lines once read."""
    layout = next((target for _, target, kind in rels if kind.endswith("/slideLayout")), None)
    if layout is None or slide.get("showMasterSp") in ("0", "false"):
        return []
    if layout not in parts:
        root = _decor_part(zf, layout, label)
        masters = [target for _, target, kind in relationships(zf, layout, label)
                   if kind.endswith("/slideMaster") and target != layout] if root is not None else []
        shown = masters[:1] if root is not None and root.get("showMasterSp") not in ("0", "false") else []
        own = _drawn_text(root) if root is not None else []
        parts[layout] = [*(line for master in shown for line in _master_text(zf, master, label, parts)), *own]
    return parts[layout]


def _master_text(zf: zipfile.ZipFile, part: str, label: str, parts: dict[str, list[str]]) -> list[str]:
    """A master's own text (read once)."""
    if part not in parts:
        root = _decor_part(zf, part, label)
        parts[part] = _drawn_text(root) if root is not None else []
    return parts[part]


def _decor_part(zf: zipfile.ZipFile, part: str, label: str) -> ElementTree.Element | None:
    """A layout or master part read for its text boxes; None where it is missing, damaged or no such part (a
    damaged one costs those lines only, not the deck's slides)."""
    try:
        root = parse_xml(member(zf, part, label), label) if part in zf.namelist() else None
    except TmixError:
        return None
    return root if root is not None and root.tag in (f"{P}sldLayout", f"{P}sldMaster") else None


def _drawn_text(root: ElementTree.Element) -> list[str]:
    """The lines of a layout's or master's text boxes that are no placeholder (a placeholder's text there is only a
    prompt such as "Click to edit Master title style", shown on no slide), without fields: a slide number's
    `‹#›` and a date are the template's, not the slide's."""
    return [line for shape in walk(root) if shape.tag == f"{P}sp" and _placeholder(shape) is None
            for line in _shape_lines(shape, fields=False) if line.strip()]


def _notes_blocks(root: ElementTree.Element) -> list[str]:
    """The body text of a notes page (no slide image, slide number or other placeholder)."""
    return [line for shape in walk(root) if shape.tag == f"{P}sp" and _placeholder(shape) == "body"
            for line in _shape_lines(shape)]


def _placeholder(shape: ElementTree.Element) -> str | None:
    """The placeholder type of a shape ("body" when it names none; None: no placeholder)."""
    ph = shape.find(f".//{P}ph")
    return None if ph is None else ph.get("type", "body")


def _shape_lines(shape: ElementTree.Element, fields: bool = True) -> list[str]:
    """The paragraphs of a shape's text body (without the text of fields such as a slide number unless `fields`)."""
    body = shape.find(f"{P}txBody")
    return [] if body is None else [_paragraph(p, fields) for p in body.findall(f"{A}p")]


def _paragraph(p: ElementTree.Element, fields: bool = True) -> str:
    """One DrawingML paragraph: its runs (a:t) and line breaks, and its fields' text if `fields`."""
    parts = []
    skip = set() if fields else {id(t) for field in p.iter(f"{A}fld") for t in field.iter(f"{A}t")}
    for node in p.iter():
        if node.tag == f"{A}t" and id(node) not in skip:
            parts.append(node.text or "")
        elif node.tag == f"{A}br":
            parts.append("\n")
    return "".join(parts).strip()
