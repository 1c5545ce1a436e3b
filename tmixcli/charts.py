"""Text of the charts and SmartArt diagrams in Word and PowerPoint files, which live in parts of their own: a chart's
title and its cached data as `a | b` rows (classic charts and Office 2016 ones: waterfall, treemap, histogram, ...), a
diagram's node texts in the diagram's order."""

from __future__ import annotations

import zipfile
from collections import defaultdict
from xml.etree import ElementTree

from tmixcli.leftout import LeftOut
from tmixcli.ooxml import A, C, CX, DGM, R
from tmixcli.tablerow import row_line
from tmixcli.ziputil import member, parse_xml

_HIDDEN_POINTS = {"pres", "parTrans", "sibTrans"}  # diagram points that only lay out or connect the nodes
_VALUES = ("val", "size", "y")  # the cx:numDim types that hold an Office 2016 chart's values


def graphic_lines(data: ElementTree.Element, targets: dict[str, str], zf: zipfile.ZipFile, label: str,
                  left: LeftOut | None = None) -> list[str]:
    """The lines of the charts and diagrams that `data` (an a:graphicData, or an element holding them) refers to;
    `targets` maps the relationship ids of the part holding it to part paths. A chart or diagram whose part is
    missing or holds nothing to read gives no line and is counted in `left`."""
    lines: list[str] = []
    left = left or LeftOut()
    for tag, read in ((f"{C}chart", chart_lines), (f"{CX}chart", chartex_lines)):
        for chart in data.iter(tag):
            part = targets.get(chart.get(f"{R}id", ""))
            found = read(parse_xml(member(zf, part, label), label)) if part in zf.namelist() else None
            if found is None:
                left.add("chart")
            lines += found or []
    for ids in data.iter(f"{DGM}relIds"):
        part = targets.get(ids.get(f"{R}dm", ""))
        if part in zf.namelist():
            lines += diagram_lines(parse_xml(member(zf, part, label), label))
        else:
            left.add("diagram")
    return lines


def chart_lines(space: ElementTree.Element) -> list[str]:
    """A chart part (c:chartSpace) as "Chart: title" and its data as rows: a heading row of series names, then one
    row per category with each series' value, as its cached values give them."""
    title = space.find(f"{C}chart/{C}title")
    name = _title(title) if title is not None else ""
    lines = [f"Chart: {name}" if name else "Chart:"]
    series = list(space.iter(f"{C}ser"))
    if not series:
        return lines
    names, values, categories = [], [], {}
    for number, ser in enumerate(series, 1):
        names.append(" ".join(_cached(ser.find(f"{C}tx")).values()) or f"Series {number}")
        values.append(_cached(_first(ser, "val", "yVal")))
        categories = categories or _cached(_first(ser, "cat", "xVal"))
    rows = sorted(categories or {i for points in values for i in points})
    lines.append(row_line(["", *names]))
    lines += [row_line([categories.get(i, str(i + 1)), *(points.get(i, "") for points in values)]) for i in rows]
    return lines


def chartex_lines(space: ElementTree.Element) -> list[str] | None:
    """An Office 2016 chart part (cx:chartSpace) as chart_lines gives a classic one: "Chart: title", then a heading
    row of series names and a row per category (a treemap's levels joined, the top one first); None when it holds
    neither a title nor data."""
    title = space.find(f"{CX}chart/{CX}title")
    name = "" if title is None else _text(title) or " ".join(title.findtext(f".//{CX}v", "").split())
    data = {block.get("id", ""): block for block in space.iter(f"{CX}data")}
    names, values, categories = [], [], {}
    for number, ser in enumerate(space.iter(f"{CX}series"), 1):
        ref = ser.find(f"{CX}dataId")
        block = None if ref is None else data.get(ref.get("val", ""))
        if block is None or ser.get("layoutId") == "paretoLine":  # a Pareto chart's line is computed, not data
            continue
        names.append(" ".join(ser.findtext(f"{CX}tx/{CX}txData/{CX}v", "").split()) or f"Series {number}")
        dims = [dim for dim in block.findall(f"{CX}numDim") if dim.get("type") in _VALUES]
        values.append(_levels(dims[0]) if dims else {})
        categories = categories or _levels(block.find(f"{CX}strDim[@type='cat']"))
    if not name and not any(values) and not categories:
        return None
    lines = [f"Chart: {name}" if name else "Chart:"]
    rows = sorted(categories or {i for points in values for i in points})
    if rows:
        lines.append(row_line(["", *names]))
        lines += [row_line([categories.get(i, str(i + 1)), *(points.get(i, "") for points in values)]) for i in rows]
    return lines


def _levels(dim: ElementTree.Element | None) -> dict[int, str]:
    """The points of an Office 2016 chart's data dimension by index, its levels (the innermost first in the file)
    joined by spaces with the outermost first."""
    points: dict[int, list[str]] = defaultdict(list)
    for level in [] if dim is None else dim.findall(f"{CX}lvl"):
        for pt in level.findall(f"{CX}pt"):
            try:
                points[int(pt.get("idx", ""))].append(" ".join((pt.text or "").split()))
            except ValueError:
                continue
    return {i: " ".join(filter(None, reversed(texts))) for i, texts in points.items()}


def _title(title: ElementTree.Element) -> str:
    """A chart title's text: its rich text paragraphs, or the cell text it is linked to."""
    return _text(title) or " ".join(_cached(title).values())


def _text(element: ElementTree.Element) -> str:
    """The DrawingML paragraphs (a:p) under `element` on one line."""
    paragraphs = (" ".join("".join(t.text or "" for t in p.iter(f"{A}t")).split()) for p in element.iter(f"{A}p"))
    return " ".join(filter(None, paragraphs))


def _first(ser: ElementTree.Element, *names: str) -> ElementTree.Element | None:
    """The first of a series' child elements named `names` (c:cat or c:xVal, c:val or c:yVal) that it has."""
    for name in names:
        found = ser.find(f"{C}{name}")
        if found is not None:
            return found
    return None


def _cached(element: ElementTree.Element | None) -> dict[int, str]:
    """The cached points under `element` by index (a multi-level category's levels joined by spaces); a plain c:v
    (a series name written out) is point 0."""
    points: dict[int, list[str]] = defaultdict(list)
    if element is None:
        return {}
    for pt in element.iter(f"{C}pt"):
        try:
            index = int(pt.get("idx", ""))
        except ValueError:
            continue
        points[index].append(pt.findtext(f"{C}v", "").strip())
    if not points and element.findtext(f"{C}v"):
        points[0].append(element.findtext(f"{C}v", "").strip())
    return {i: " ".join(reversed(texts)) for i, texts in points.items()}


def diagram_lines(model: ElementTree.Element) -> list[str]:
    """A SmartArt data part (dgm:dataModel) as one line per node with text, parents before their children and
    siblings in their order."""
    texts, kinds = {}, {}
    for pt in model.iter(f"{DGM}pt"):
        key = pt.get("modelId", "")
        kinds[key] = pt.get("type", "node")
        body = pt.find(f"{DGM}t")
        if body is not None:
            texts[key] = _text(body)
    children: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for cxn in model.iter(f"{DGM}cxn"):
        if cxn.get("type", "parOf") == "parOf":
            children[cxn.get("srcId", "")].append((_order(cxn.get("srcOrd")), cxn.get("destId", "")))
    order: dict[str, None] = {}  # the nodes in reading order
    pending = [key for key, kind in kinds.items() if kind == "doc"][::-1]
    while pending:
        key = pending.pop()
        if key not in order:
            order[key] = None
            pending += [dest for _, dest in sorted(children[key], reverse=True)]
    order.update((key, None) for key in kinds)
    return [texts[key] for key in order if texts.get(key) and kinds[key] not in _HIDDEN_POINTS]


def _order(value: str | None) -> int:
    """A connection's place among its siblings (srcOrd); 0 when it is missing or not a number."""
    try:
        return int(value or 0)
    except ValueError:
        return 0
