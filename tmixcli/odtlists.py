"""OpenDocument list markers: each list item's "1. ", "a) " or "- ", from its list's style (text:list-style), counted
as a word processor counts them (nested lists, start values, lists that continue an earlier one)."""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree

from tmixcli.listnumbers import STYLES, number_label
from tmixcli.tablerow import BULLET
from tmixcli.ziputil import whole_number

TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_STYLE = "{urn:oasis:names:tc:opendocument:xmlns:style:1.0}"


@dataclass(frozen=True)
class _Level:
    style: str  # a listnumbers style
    prefix: str
    suffix: str
    start: int
    shown: int  # how many levels' numbers the marker shows ("1.2" shows 2)


class ListStyles:
    """The numbered levels of the list styles in the given style elements (office:automatic-styles, office:styles);
    a bulleted or unknown level has none."""

    def __init__(self, *holders: ElementTree.Element | None) -> None:
        self._levels: dict[tuple[str, int], _Level] = {}
        for holder in filter(lambda h: h is not None, holders):
            for style in holder.iter(f"{TEXT}list-style"):
                name = style.get(f"{_STYLE}name", "")
                for level in style.iter(f"{TEXT}list-level-style-number"):
                    fmt = level.get(f"{_STYLE}num-format", "1")
                    self._levels[(name, whole_number(level.get(f"{TEXT}level"), 1))] = _Level(
                        style=fmt if fmt in STYLES else "1", prefix=level.get(f"{_STYLE}num-prefix", ""),
                        suffix=level.get(f"{_STYLE}num-suffix", ""),
                        start=whole_number(level.get(f"{TEXT}start-value"), 1),
                        shown=whole_number(level.get(f"{TEXT}display-levels"), 1))

    def level(self, style: str, depth: int) -> _Level | None:
        """How level `depth` (1: the outermost list) of list style `style` is numbered; None: bulleted."""
        return self._levels.get((style, depth))


class ListCount:
    """The numbers of the list items read so far, for the markers of the next ones."""

    def __init__(self, styles: ListStyles) -> None:
        self.styles = styles
        self._path: list[int] = []  # the current item's number in each open list, outermost first
        self._ended: dict[tuple[str, int], int] = {}  # (style, depth) -> the last number of the last such list

    def opened(self, lst: ElementTree.Element, style: str, depth: int) -> int | None:
        """The number before the first item of list `lst` in list style `style` at `depth`: the last number of the
        list it continues (text:continue-numbering or text:continue-list), else None (it starts at its start value)."""
        if lst.get(f"{TEXT}continue-numbering") == "true" or lst.get(f"{TEXT}continue-list"):
            return self._ended.get((style, depth))
        return None

    def marker(self, item: ElementTree.Element, style: str, depth: int, before: int | None) -> tuple[str, int]:
        """(marker, number) of list item `item`, the one after number `before` (None: the list's first), in list
        style `style` at `depth`."""
        level = self.styles.level(style, depth)
        start = item.get(f"{TEXT}start-value")
        number = (whole_number(start, 1) if start is not None else before + 1 if before is not None
                  else level.start if level is not None else 1)
        del self._path[depth - 1:]
        self._path += [0] * (depth - 1 - len(self._path)) + [number]
        self._ended[(style, depth)] = number
        if level is None:
            return BULLET, number
        first = max(depth - max(level.shown, 1), 0)
        numbers = []
        for at in range(first, depth):
            shown = self.styles.level(style, at + 1)
            numbers.append(number_label(self._path[at], shown.style if shown is not None else "1"))
        text = level.prefix + ".".join(filter(None, numbers)) + level.suffix
        return (f"{text.strip()} " if text.strip() else ""), number
