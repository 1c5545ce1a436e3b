"""The label of a list item's number in a list's numbering style: 3 as "3", "c", "C", "iii" or "III"."""

from __future__ import annotations

_ROMAN = ((1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"), (50, "l"), (40, "xl"),
          (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i"))
STYLES = ("1", "01", "a", "A", "i", "I", "")  # decimal, decimal with a leading zero, letters, roman, no number


def number_label(n: int, style: str) -> str:
    """`n` written in `style` (one of STYLES, as OpenDocument's num-format names them; others count as "1"):
    letters go a..z, aa..zz, aaa..; roman numerals and letters fall back to decimal below 1."""
    if style == "":
        return ""
    if style in ("a", "A") and n >= 1:
        letter = chr(ord("a") + (n - 1) % 26) * ((n - 1) // 26 + 1)
        return letter.upper() if style == "A" else letter
    if style in ("i", "I") and 1 <= n < 4000:
        roman = ""
        for value, digits in _ROMAN:
            count, n = divmod(n, value)
            roman += digits * count
        return roman.upper() if style == "I" else roman
    return f"{n:02d}" if style == "01" else str(n)
