"""Text encodings tmix recognises besides UTF-8: a byte-order mark's UTF-16/32, and Western Windows-1252."""

from __future__ import annotations

import codecs

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 first: its LE mark starts alike


def bom_text(raw: bytes) -> str | None:
    """Text that starts with a UTF-16 or UTF-32 byte-order mark, decoded; None without one or when it does not
    decode (the mark was chance)."""
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError:
                return None
    return None


def western_text(raw: bytes) -> str | None:
    """Windows-1252 text (a superset of Latin-1's printable range) when the bytes read as such: every byte
    defined, no control characters, and at most one in five visible characters outside ASCII (text in a
    multi-byte encoding such as Shift-JIS or GBK decodes to mostly accented letters and is refused)."""
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError:
        return None
    visible = [c for c in text if not c.isspace()]
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return None
    return text if 5 * sum(ord(c) > 127 for c in visible) <= len(visible) else None
