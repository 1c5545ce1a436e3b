"""Word list markers: each list paragraph's "1. ", "a) " or "- ", from word/numbering.xml and the paragraph styles of
word/styles.xml, counted in reading order as Word counts them."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from xml.etree import ElementTree

from tmixcli.listnumbers import number_label
from tmixcli.ooxml import W
from tmixcli.tablerow import BULLET
from tmixcli.ziputil import member, parse_xml, whole_number

_FORMATS = {"decimal": "1", "decimalZero": "01", "lowerLetter": "a", "upperLetter": "A", "lowerRoman": "i",
            "upperRoman": "I", "none": ""}  # Word's numFmt as listnumbers styles; others count as decimal
_PLACE = re.compile(r"%([1-9])")
_STYLE_DEPTH = 10  # most basedOn steps followed to find a style's numbering


@dataclass(frozen=True)
class _Level:
    style: str  # a listnumbers style, or "bullet"
    text: str  # the marker's pattern: "%1.", "%1.%2)", a bullet character
    start: int
    legal: bool  # numbers of the levels above in decimal (w:isLgl)


class Numbering:
    """The list numbering of one Word document (its parsed word/styles.xml, if any, and its numbering part);
    `marker` is asked of each paragraph in reading order."""

    def __init__(self, styles: ElementTree.Element | None, zf: zipfile.ZipFile, label: str) -> None:
        self._levels: dict[str, dict[int, _Level]] = {}  # abstractNumId -> level -> how it is numbered
        self._nums: dict[str, tuple[str, dict[int, int]]] = {}  # numId -> (abstractNumId, restarts by level)
        self._styles: dict[str, tuple[ElementTree.Element | None, str]] = {}  # styleId -> (its numPr, basedOn)
        self._counts: dict[str, dict[int, int]] = {}  # abstractNumId -> level -> the last number given
        self._started: set[str] = set()  # the numIds used so far
        if "word/numbering.xml" in zf.namelist():
            self._read_numbering(parse_xml(member(zf, "word/numbering.xml", label), label))
        for style in [] if styles is None else styles.iter(f"{W}style"):
            based = style.find(f"{W}basedOn")
            self._styles[style.get(f"{W}styleId", "")] = (style.find(f"{W}pPr/{W}numPr"),
                                                           "" if based is None else based.get(f"{W}val", ""))
        self._listed = self._styles_with_lists()

    def _read_numbering(self, root: ElementTree.Element) -> None:
        for abstract in root.iter(f"{W}abstractNum"):
            self._levels[abstract.get(f"{W}abstractNumId", "")] = {
                whole_number(lvl.get(f"{W}ilvl"), 0): _level(lvl) for lvl in abstract.findall(f"{W}lvl")}
        for num in root.iter(f"{W}num"):
            restarts = {}
            for override in num.findall(f"{W}lvlOverride"):
                start = override.find(f"{W}startOverride")
                if start is not None:
                    restarts[whole_number(override.get(f"{W}ilvl"), 0)] = whole_number(start.get(f"{W}val"), 1)
            self._nums[num.get(f"{W}numId", "")] = (_value(num.find(f"{W}abstractNumId")), restarts)

    def marker(self, p: ElementTree.Element) -> str:
        """The marker of paragraph `p` ("" when it is no list item), counting it as the next item of its list."""
        num_id, level = self._numbered(p)
        if num_id is None or num_id == "0":
            return ""
        abstract, restarts = self._nums.get(num_id, ("", {}))
        levels = self._levels.get(abstract)
        if not levels or level not in levels:
            return BULLET
        counts = self._counts.setdefault(abstract, {})
        if num_id not in self._started:
            self._started.add(num_id)
            for at, start in restarts.items():
                counts[at] = start - 1
        counts[level] = counts.get(level, levels[level].start - 1) + 1
        for deeper in [at for at in counts if at > level]:
            del counts[deeper]
        this = levels[level]
        if this.style == "bullet":
            return BULLET
        text = _PLACE.sub(lambda m: self._label(levels, counts, int(m.group(1)) - 1, this.legal), this.text).strip()
        return f"{text} " if text else ""

    def _label(self, levels: dict[int, _Level], counts: dict[int, int], at: int, legal: bool) -> str:
        """The number of level `at` as the marker shows it."""
        shown = levels.get(at)
        if shown is None:
            return ""
        count = counts.get(at, shown.start)
        return number_label(count, "1" if legal and shown.style in ("a", "A", "i", "I") else shown.style)

    def _numbered(self, p: ElementTree.Element) -> tuple[str | None, int]:
        """(numId, level) of a paragraph, from its own w:numPr or its style's (numId None: not numbered)."""
        props = p.find(f"{W}pPr")
        own = None if props is None else props.find(f"{W}numPr")
        style = None if props is None else props.find(f"{W}pStyle")
        style_id = "" if style is None else style.get(f"{W}val", "")
        if own is None and style_id not in self._listed:
            return None, 0
        num_id, level = (None, None) if own is None else (_value(own.find(f"{W}numId")) or None,
                                                            _value(own.find(f"{W}ilvl")) or None)
        for _ in range(_STYLE_DEPTH):
            if num_id is not None and level is not None or style_id not in self._styles:
                break
            numpr, style_id = self._styles[style_id]
            if numpr is not None:
                num_id = num_id or _value(numpr.find(f"{W}numId")) or None
                level = level or _value(numpr.find(f"{W}ilvl")) or None
        return num_id, whole_number(level, 0)

    def _styles_with_lists(self) -> set[str]:
        """The paragraph styles that number their paragraphs, themselves or through the styles they are based on."""
        listed = set()
        for style_id in self._styles:
            at = style_id
            for _ in range(_STYLE_DEPTH):
                if at not in self._styles:
                    break
                numpr, at = self._styles[at]
                if numpr is not None:
                    listed.add(style_id)
                    break
        return listed

def _level(lvl: ElementTree.Element) -> _Level:
    """How one w:lvl numbers its items."""
    fmt = _value(lvl.find(f"{W}numFmt"), "decimal")
    return _Level(style="bullet" if fmt == "bullet" else _FORMATS.get(fmt, "1"),
                  text=_value(lvl.find(f"{W}lvlText"), "%1."), start=whole_number(_value(lvl.find(f"{W}start")), 1),
                  legal=lvl.find(f"{W}isLgl") is not None)


def _value(element: ElementTree.Element | None, default: str = "") -> str:
    """An element's w:val ("" or `default` when the element or its value is missing)."""
    return default if element is None else element.get(f"{W}val", default)

