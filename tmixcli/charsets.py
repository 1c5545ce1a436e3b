"""Text encodings tmix recognises besides UTF-8: a byte-order mark's UTF-16/32, UTF-16 without one, and Western
Windows-1252; text decoded as its bytes come."""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 first: its LE mark starts alike
BOMS = tuple(bom for bom, _ in _BOMS)
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ufffe\uffff]")  # not in text (tab, newlines and form feed are)
_C0 = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")  # C0 controls but tab, newlines and form feed
_TEXT_BYTES = bytes([9, 10, 12, 13, *range(32, 127), *range(128, 256)])  # bytes of (Latin) text: not NUL or control
UTF16_SAMPLE = 4096  # bytes whose NUL pattern tells UTF-16 without a byte-order mark
_NOT_TEXT = {"Cc", "Cn", "Co", "Cs"}  # control, unassigned, private-use and surrogate code points
_FEWEST_LETTERS = 8  # letters a UTF-16 sample in another script needs: a few bytes of binary data may pass for text
# Windows-1252 symbols that are letters in ISO-8859-2 or Windows-1250 (Polish "Budżet" reads "Bud¿et"): inside a word
_MISREAD = re.compile("(?<=[^\\W\\d_])[\u00a1\u00a3\u00a5\u00a6\u00a9\u00ab\u00ac\u00ae\u00af\u00b1\u00b3\u00b6\u00b9"
                      "\u00bb\u00bc\u00be\u00bf](?=[^\\W\\d_])")
_HAN = {"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "IDEOGRAPHIC", "FULLWIDTH", "HALFWIDTH", "BOPOMOFO"}


def utf16_codec(raw: bytes) -> str | None:
    """"utf-16-le" or "utf-16-be" for bytes whose first UTF16_SAMPLE look like UTF-16 text without a byte-order mark
    (_latin_utf16, else _script_utf16); else None."""
    sample = raw[:min(len(raw), UTF16_SAMPLE) // 2 * 2]  # whole 16-bit units
    if len(sample) < 4:
        return None
    return _latin_utf16(sample) or _script_utf16(sample)


def _latin_utf16(sample: bytes) -> str | None:
    """Mostly-Latin UTF-16: most odd (LE) or even (BE) bytes are NUL, and almost none of the others are NUL or another
    control byte (as in binary data of small numbers)."""
    half = len(sample) // 2
    evens, odds = sample[0::2], sample[1::2]
    for codec, nuls, low in (("utf-16-le", odds, evens), ("utf-16-be", evens, odds)):
        if nuls.count(0) >= 0.7 * half and len(low.translate(None, _TEXT_BYTES)) <= 0.05 * half:
            return codec
    return None


def _script_utf16(sample: bytes) -> str | None:
    """UTF-16 in any script: the sample decodes in one byte order to assigned, non-control characters, some of them
    ASCII (a NUL byte, never in 8-bit text), and holds 8 letters or more, 9 in 10 Latin or of one other script."""
    for codec, high in (("utf-16-le", sample[1::2]), ("utf-16-be", sample[0::2])):
        if 0 not in high:
            continue
        try:
            text = codecs.getincrementaldecoder(codec)().decode(sample)  # a pair cut at the end waits, unread
        except UnicodeDecodeError:
            continue
        if any(unicodedata.category(c) in _NOT_TEXT and c not in "\t\n\r\f" for c in text):
            continue
        scripts = Counter(_script(c) for c in text if c.isalpha())
        letters, latin = scripts.total(), scripts.pop("LATIN", 0)
        if letters >= _FEWEST_LETTERS and latin + max(scripts.values(), default=0) >= 0.9 * letters:
            return codec
    return None


def _script(letter: str) -> str:
    """A letter's script by the first word of its Unicode name, Chinese and Japanese scripts as one ("CJK")."""
    word = unicodedata.name(letter, "").partition(" ")[0]
    return "CJK" if word in _HAN else word


def utf16_text(raw: bytes) -> tuple[str, str] | None:
    """UTF-16 text without a byte-order mark (utf16_codec) and its codec, when all of it decodes to text (no control
    characters); None otherwise."""
    codec = utf16_codec(raw)
    if codec is None or len(raw) % 2:
        return None
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        return None
    return None if has_controls(text) else (text, codec)


def has_controls(text: str) -> bool:
    """Whether decoded text holds a control character that text does not (tab, newlines and form feed it does)."""
    return _CONTROLS.search(text) is not None


def bom_codec(raw: bytes) -> str | None:
    """"utf-32" or "utf-16" for bytes that start with its byte-order mark; None without one."""
    return next((codec for bom, codec in _BOMS if raw.startswith(bom)), None)


def bom_text(raw: bytes) -> str | None:
    """Text that starts with a UTF-16 or UTF-32 byte-order mark, decoded; None without one or when it does not
    decode (the mark was chance)."""
    codec = bom_codec(raw)
    if codec is None:
        return None
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return None


def western_text(raw: bytes) -> str | None:
    """Windows-1252 text (a superset of Latin-1's printable range) when the bytes read as such: every byte
    defined, and `western` text."""
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError:
        return None
    return text if western([text]) else None


def western(texts: Iterable[str]) -> bool:
    """Whether Windows-1252 text, in pieces, reads as Western European: no control characters, at most one in five
    visible characters outside ASCII (Shift-JIS or GBK text decodes to mostly accented letters and is refused), and
    words broken by a symbol that is a Central European letter (ISO-8859-2 or Windows-1250 text) rare: not two of
    them, one in 200 visible characters or more (Polish has ~30 in 1000)."""
    visible = foreign = misread = 0
    for text in texts:
        if _C0.search(text):
            return False
        shown = [c for c in text if not c.isspace()]
        visible, foreign = visible + len(shown), foreign + sum(ord(c) > 127 for c in shown)
        misread += len(_MISREAD.findall(text))
    return 5 * foreign <= visible and (misread < 2 or 200 * misread < visible)


def decoded(pieces: Iterable[bytes], codec: str) -> Iterator[str]:
    """The text of bytes that come in `pieces`, decoded strictly with `codec` as they come; a codec that bytes.decode
    does not take (unknown, or not a text encoding such as hex) raises LookupError, as there."""
    try:
        b"\n".decode(codec)  # bytes.decode's own LookupError for these (empty bytes would skip the check)
    except UnicodeDecodeError:
        pass
    decoder = codecs.getincrementaldecoder(codec)()
    for piece in pieces:
        yield decoder.decode(piece)
    yield decoder.decode(b"", final=True)


def mixed_text(raw: bytes) -> str | None:
    """UTF-8 text with a few stray Windows-1252 bytes (an edit in another editor), each decoded on its own; None
    unless valid multi-byte UTF-8 characters are at least a quarter as many as the stray bytes (Shift-JIS, GBK or
    cp1251 text is almost all stray bytes, with a valid-looking pair by chance here and there)."""
    text = raw.decode("utf-8", errors="surrogateescape")  # each undecodable byte b -> U+DC00 + b
    stray = sum(0xDC80 <= ord(c) <= 0xDCFF for c in text)
    if not 0 < stray <= 4 * (sum(ord(c) > 127 for c in text) - stray):
        return None
    return "".join(_cp1252(ord(c) - 0xDC00) if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def _cp1252(byte: int) -> str:
    """One byte as Windows-1252 (its five undefined bytes as Latin-1)."""
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(byte)
