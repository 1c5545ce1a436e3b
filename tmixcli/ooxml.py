"""Office Open XML basics the Word and PowerPoint readers share: namespaces, a part's relationships, and one branch
of each mc:AlternateContent (Word and PowerPoint save a shape twice, for new and for old readers)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from posixpath import dirname, join, normpath
from xml.etree import ElementTree

from tmixcli.ziputil import member, parse_xml

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
C = "{http://schemas.openxmlformats.org/drawingml/2006/chart}"
CX = "{http://schemas.microsoft.com/office/drawing/2014/chartex}"  # Office 2016 charts (waterfall, treemap, ...)
DGM = "{http://schemas.openxmlformats.org/drawingml/2006/diagram}"
M = "{http://schemas.openxmlformats.org/officeDocument/2006/math}"
MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
VML_O = "{urn:schemas-microsoft-com:office:office}"  # VML's Office extensions: o:OLEObject
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def relationships(zf: zipfile.ZipFile, part: str, label: str) -> list[tuple[str, str, str]]:
    """(id, target path, type) of a part's internal relationships (none when it has no .rels file); a target
    written from the package root ("/ppt/slides/slide1.xml") is taken as the archive path it names."""
    rels = join(dirname(part), "_rels", part.rsplit("/", 1)[-1] + ".rels")
    if rels not in zf.namelist():
        return []
    root = parse_xml(member(zf, rels, label), label)
    return [(r.get("Id", ""), normpath(join(dirname(part), r.get("Target", ""))).lstrip("/"), r.get("Type", ""))
            for r in root.iter(f"{_REL}Relationship") if r.get("TargetMode") != "External"]


def branch(alternate: ElementTree.Element) -> ElementTree.Element | None:
    """The one branch of an mc:AlternateContent to read: its first mc:Choice, else its mc:Fallback."""
    choice = alternate.find(f"{MC}Choice")
    return choice if choice is not None else alternate.find(f"{MC}Fallback")


def walk(element: ElementTree.Element) -> Iterator[ElementTree.Element]:
    """`element` and its descendants in document order, as Element.iter gives them, but only one branch of each
    mc:AlternateContent (the text of a shape saved twice is read once) and none of a shape hidden on its slide."""
    pending = [element]
    while pending:
        node = pending.pop()
        if node.tag == f"{MC}AlternateContent":
            node = branch(node)
            if node is None:
                continue
        names = node.find(f"*/{P}cNvPr")  # a shape's name and settings
        if names is not None and names.get("hidden") in ("1", "true"):  # PowerPoint neither shows nor prints it
            continue
        yield node
        pending.extend(reversed(node))
