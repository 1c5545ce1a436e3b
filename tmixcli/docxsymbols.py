"""Word's symbol characters (w:sym: a character of a symbol font, as Insert > Symbol writes it) as the Unicode
characters they show: Symbol's Greek letters and math signs, Wingdings' check boxes."""

from __future__ import annotations

from xml.etree import ElementTree

from tmixcli.ooxml import W

_GREEK = "ΑΒΧΔΕΦΓΗΙϑΚΛΜΝΟΠΘΡΣΤΥςΩΞΨΖ"  # Symbol's letters A-Z, then a-z below
_SYMBOL = {
    **{0x41 + i: c for i, c in enumerate(_GREEK)},
    **{0x61 + i: c for i, c in enumerate("αβχδεφγηιϕκλμνοπθρστυϖωξψζ")},
    0x22: "∀", 0x24: "∃", 0x27: "∋", 0x2A: "∗", 0x2D: "−", 0x40: "≅", 0x5C: "∴", 0x5E: "⊥", 0x60: "", 0x7E: "∼",
    0xA0: "€",
    0xA1: "ϒ", 0xA2: "′", 0xA3: "≤", 0xA4: "⁄", 0xA5: "∞", 0xA6: "ƒ", 0xA7: "♣", 0xA8: "♦", 0xA9: "♥", 0xAA: "♠",
    0xAB: "↔", 0xAC: "←", 0xAD: "↑", 0xAE: "→", 0xAF: "↓", 0xB0: "°", 0xB1: "±", 0xB2: "″", 0xB3: "≥", 0xB4: "×",
    0xB5: "∝", 0xB6: "∂", 0xB7: "•", 0xB8: "÷", 0xB9: "≠", 0xBA: "≡", 0xBB: "≈", 0xBC: "…", 0xBF: "↵", 0xC0: "ℵ",
    0xC1: "ℑ", 0xC2: "ℜ", 0xC3: "℘", 0xC4: "⊗", 0xC5: "⊕", 0xC6: "∅", 0xC7: "∩", 0xC8: "∪", 0xC9: "⊃", 0xCA: "⊇",
    0xCB: "⊄", 0xCC: "⊂", 0xCD: "⊆", 0xCE: "∈", 0xCF: "∉", 0xD0: "∠", 0xD1: "∇", 0xD2: "®", 0xD3: "©", 0xD4: "™",
    0xD5: "∏", 0xD6: "√", 0xD7: "⋅", 0xD8: "¬", 0xD9: "∧", 0xDA: "∨", 0xDB: "⇔", 0xDC: "⇐", 0xDD: "⇑", 0xDE: "⇒",
    0xDF: "⇓", 0xE0: "◊", 0xE1: "〈", 0xE2: "®", 0xE3: "©", 0xE4: "™", 0xE5: "∑", 0xF1: "〉", 0xF2: "∫",
}
_WINGDINGS = {0xA8: "◻", 0xFB: "✗", 0xFC: "✓", 0xFD: "☒", 0xFE: "☑"}
_FONTS = {"symbol": _SYMBOL, "wingdings": _WINGDINGS}


def symbol_text(sym: ElementTree.Element) -> str:
    """The character a w:sym shows: of the Symbol or Wingdings font by its code (written from F000 or from 0), any
    other font's code outside the private use area as that Unicode character; "" where it is not known."""
    try:
        code = int(sym.get(f"{W}char", ""), 16)
    except ValueError:
        return ""
    table = _FONTS.get(sym.get(f"{W}font", "").strip().lower())
    if table is not None:
        byte = code - 0xF000 if 0xF000 <= code <= 0xF0FF else code
        return table.get(byte, chr(byte) if table is _SYMBOL and 0x20 <= byte < 0x7F else "")
    return chr(code) if 0x20 <= code < 0xE000 or 0xF900 <= code <= 0x10FFFF else ""
