"""OpenDocument text that LibreOffice neither shows nor prints: text whose character or paragraph style (or a style
it inherits from) sets text:display="none", hidden-text and hidden-paragraph fields found hidden, hidden sections."""

from __future__ import annotations

from xml.etree import ElementTree

from tmixcli.odtlists import TEXT

_STYLE = "{urn:oasis:names:tc:opendocument:xmlns:style:1.0}"
_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_STYLED = (f"{TEXT}span", f"{TEXT}a")  # inline elements whose text:style-name names a character style
_DEPTH = 10  # most style:parent-style-name steps followed


class Hidden:
    """Which text of one document (or of its page headers and footers) its styles hide. As LibreOffice reads
    text:display, "none" hides text and "true" shows it again; the nearest style that sets it decides: a span's
    style or the styles it inherits from, then the enclosing span's, then the paragraph's ("condition", which
    LibreOffice does not read, sets nothing)."""

    def __init__(self, automatic: ElementTree.Element | None, styles: ElementTree.Element | None) -> None:
        common = None if styles is None else styles.find(f"{_OFFICE}styles")
        self._common = _own(common)  # (family, name) -> (its text:display, its parent style)
        self._automatic = _own(automatic)  # content.xml's, or styles.xml's for headers and footers
        self._base = False  # the default paragraph style hides all text
        for default in [] if common is None else common.iter(f"{_STYLE}default-style"):
            if default.get(f"{_STYLE}family") == "paragraph":
                self._base = bool(_display(default))

    def paragraph(self, p: ElementTree.Element) -> bool:
        """Whether the styles of paragraph or heading `p` hide its text (before the styles of its spans)."""
        return self._styled("paragraph", p.get(f"{TEXT}style-name"), self._base)

    def text(self, element: ElementTree.Element, hidden: bool) -> bool:
        """Whether the text of inline element `element` is hidden, inside text that is hidden (`hidden`) or not."""
        if element.tag not in _STYLED:
            return hidden
        return self._styled("text", element.get(f"{TEXT}style-name"), hidden)

    def _styled(self, family: str, name: str | None, inherited: bool) -> bool:
        """Whether style `name` of `family` hides text: the nearest text:display, "none" or "true", in it or the
        styles it inherits from; `inherited` where none sets it."""
        own = self._automatic.get((family, name or "")) or self._common.get((family, name or ""))
        for _ in range(_DEPTH):
            if own is None:
                return inherited
            display, parent = own
            if display is not None:
                return display
            own = self._common.get((family, parent))
        return inherited


def hidden_field(element: ElementTree.Element) -> bool:
    """Whether `element` is a text:hidden-text field whose condition was last found true (text:is-hidden): its
    text is not shown. (tmix does not compute conditions; LibreOffice writes what they gave.)"""
    return element.tag == f"{TEXT}hidden-text" and element.get(f"{TEXT}is-hidden") == "true"


def hidden_paragraph(p: ElementTree.Element) -> bool:
    """Whether paragraph or heading `p` holds a text:hidden-paragraph field whose condition was last found true:
    the whole paragraph, its text boxes and notes included, is not shown."""
    for child in p:
        if child.tag == f"{TEXT}hidden-paragraph" and child.get(f"{TEXT}is-hidden") == "true":
            return True
        if child.tag in _STYLED and hidden_paragraph(child):
            return True
    return False


def hidden_section(section: ElementTree.Element) -> bool:
    """Whether text:section `section` is hidden, as LibreOffice reads text:display: "none", or "condition" with a
    condition last found true (text:is-hidden) or with none (then it is always hidden)."""
    display = section.get(f"{TEXT}display")
    if display == "condition":
        return not section.get(f"{TEXT}condition") or section.get(f"{TEXT}is-hidden") == "true"
    return display == "none"


def _own(holder: ElementTree.Element | None) -> dict[tuple[str, str], tuple[bool | None, str]]:
    """(family, name) -> (its text:display, its parent style's name) of the paragraph and text styles in
    `holder` (office:styles or office:automatic-styles)."""
    found: dict[tuple[str, str], tuple[bool | None, str]] = {}
    for style in [] if holder is None else holder.iter(f"{_STYLE}style"):
        family = style.get(f"{_STYLE}family", "")
        if family in ("paragraph", "text"):
            found[(family, style.get(f"{_STYLE}name", ""))] = (_display(style),
                                                               style.get(f"{_STYLE}parent-style-name", ""))
    return found


def _display(style: ElementTree.Element) -> bool | None:
    """Whether the text properties of `style` hide text: True for text:display="none", False for "true", else None
    (not set: LibreOffice reads no other value)."""
    props = style.find(f"{_STYLE}text-properties")
    value = None if props is None else props.get(f"{TEXT}display")
    return True if value == "none" else False if value == "true" else None
