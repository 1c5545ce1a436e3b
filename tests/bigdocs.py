"""Long documents in each format read block by block (.docx, .odt, .pptx, .epub, HTML), written a piece at a time:
a ZIP member of tens of MB costs the test little memory."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

KINDS = ("docx", "odt", "pptx", "epub", "html")
PER_PART = 50  # paragraphs per slide or chapter
W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
ODF = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
       'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"')
PML = ('xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" '
       'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
       'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"')
RELS = 'xmlns="http://schemas.openxmlformats.org/package/2006/relationships"'


def paragraphs(n: int) -> Iterator[str]:
    """n numbered paragraphs of about 100 characters."""
    for i in range(n):
        yield f"Paragraph {i}: the board met on a Tuesday, agreed the annual budget and asked for a report on risk."


def write(path: Path, paras: Iterable[str]) -> Path:
    """`paras` as a document of the kind its suffix names."""
    kind = path.suffix.lstrip(".")
    if kind == "html":
        with path.open("w") as f:
            f.writelines(_wrapped("<!doctype html><html><body>", (f"<p>{p}</p>\n" for p in paras), "</body></html>"))
        return path
    parts = _parts(kind, paras)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, pieces in parts.items():
            with zf.open(name, "w", force_zip64=True) as member:
                for piece in pieces:
                    member.write(piece.encode())
    return path


def _wrapped(head: str, body: Iterable[str], tail: str) -> Iterator[str]:
    yield head
    yield from body
    yield tail


def _parts(kind: str, paras: Iterable[str]) -> dict[str, Iterable[str]]:
    if kind == "docx":
        return {"word/document.xml": _wrapped(f"<w:document {W}><w:body>",
                                              (f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paras),
                                              "</w:body></w:document>")}
    if kind == "odt":
        return {"mimetype": ["application/vnd.oasis.opendocument.text"],
                "content.xml": _wrapped(f"<office:document-content {ODF}><office:body><office:text>",
                                        (f"<text:p>{p}</text:p>" for p in paras),
                                        "</office:text></office:body></office:document-content>")}
    groups = _groups(list(paras))
    if kind == "pptx":
        ids = "".join(f'<p:sldId id="{256 + i}" r:id="rId{i}"/>' for i in range(len(groups)))
        rels = "".join(f'<Relationship Id="rId{i}" Type="http://x/slide" Target="slides/slide{i}.xml"/>'
                       for i in range(len(groups)))
        parts: dict[str, Iterable[str]] = {
            "ppt/presentation.xml": [f"<p:presentation {PML}><p:sldIdLst>{ids}</p:sldIdLst></p:presentation>"],
            "ppt/_rels/presentation.xml.rels": [f"<Relationships {RELS}>{rels}</Relationships>"]}
        for i, group in enumerate(groups):
            body = "".join(f"<a:p><a:r><a:t>{p}</a:t></a:r></a:p>" for p in group)
            parts[f"ppt/slides/slide{i}.xml"] = [f"<p:sld {PML}><p:cSld><p:spTree><p:sp><p:txBody>{body}"
                                                 "</p:txBody></p:sp></p:spTree></p:cSld></p:sld>"]
        return parts
    items = "".join(f'<item id="c{i}" href="ch{i}.xhtml"/>' for i in range(len(groups)))
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(groups)))
    parts = {"mimetype": ["application/epub+zip"],
             "META-INF/container.xml": ['<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                                        '<rootfiles><rootfile full-path="OEBPS/content.opf"/></rootfiles></container>'],
             "OEBPS/content.opf": ['<package xmlns="http://www.idpf.org/2007/opf">'
                                   f"<manifest>{items}</manifest><spine>{spine}</spine></package>"]}
    for i, group in enumerate(groups):
        parts[f"OEBPS/ch{i}.xhtml"] = ["<html><body>", *(f"<p>{p}</p>" for p in group), "</body></html>"]
    return parts


def _groups(paras: Sequence[str]) -> list[Sequence[str]]:
    """The paragraphs PER_PART at a time: the slides of a deck, the chapters of a book."""
    return [paras[i:i + PER_PART] for i in range(0, len(paras), PER_PART)]
