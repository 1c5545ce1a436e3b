"""Word's hidden text (w:vanish), which Word neither shows nor prints: set on a run, or through the paragraph and
character styles of word/styles.xml (a style gets it from the styles it is based on)."""

from __future__ import annotations

from xml.etree import ElementTree

from tmixcli.ooxml import W

_OFF = ("0", "false", "off")
_DEPTH = 10  # most basedOn steps followed


class Hidden:
    """Which runs of one document are hidden. As the file format says of w:vanish (a toggle property), a style that
    hides text hides it only once: a hiding character style in a hiding paragraph style shows it again, and a
    run's own w:vanish (on or off) decides over its styles."""

    def __init__(self, styles: ElementTree.Element | None) -> None:
        self._own: dict[tuple[str, str], tuple[bool | None, str]] = {}  # (type, id) -> (its w:vanish, basedOn)
        self._default = {"paragraph": "", "character": ""}  # the style a paragraph or run without one has
        self._base = False  # w:docDefaults hides all text
        if styles is None:
            return
        self._base = bool(_vanish(styles.find(f"{W}docDefaults/{W}rPrDefault/{W}rPr")))
        for style in styles.iter(f"{W}style"):
            kind, key = style.get(f"{W}type", "paragraph"), style.get(f"{W}styleId", "")
            based = style.find(f"{W}basedOn")
            self._own[(kind, key)] = (_vanish(style.find(f"{W}rPr")), "" if based is None else based.get(f"{W}val", ""))
            if style.get(f"{W}default") in ("1", "true", "on") and kind in self._default:
                self._default[kind] = key

    def paragraph(self, p: ElementTree.Element) -> bool:
        """Whether the styles of paragraph `p` hide its runs (before their own styles and settings)."""
        return self._base != self._styled("paragraph", p.find(f"{W}pPr/{W}pStyle"))

    def run(self, run: ElementTree.Element, paragraph: bool) -> bool:
        """Whether run `run` is hidden, in a paragraph whose styles hide runs (`paragraph`) or not."""
        props = run.find(f"{W}rPr")
        own = None if props is None else _vanish(props)
        if own is not None:
            return own
        return paragraph != self._styled("character", None if props is None else props.find(f"{W}rStyle"))

    def _styled(self, kind: str, ref: ElementTree.Element | None) -> bool:
        """Whether the style `ref` names (else the default one of `kind`) hides text: the nearest w:vanish, on or
        off, in it or the styles it is based on."""
        key = self._default[kind] if ref is None else ref.get(f"{W}val", "")
        for _ in range(_DEPTH):
            if (kind, key) not in self._own:
                return False
            vanish, key = self._own[(kind, key)]
            if vanish is not None:
                return vanish
        return False


def _vanish(props: ElementTree.Element | None) -> bool | None:
    """The w:vanish of run properties `props`: True, False (w:val="0") or None where they do not set it."""
    found = None if props is None else props.find(f"{W}vanish")
    return None if found is None else found.get(f"{W}val", "true") not in _OFF
