"""Text encodings tmix recognises besides UTF-8: a byte-order mark's UTF-16/32, UTF-16 without one, and Western
Windows-1252; text decoded as its bytes come."""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator

from tmixcli.misread import Tally

# Each byte-order mark, its codec and the bytes of its code unit; UTF-32 first: its LE mark starts as UTF-16's does.
BOM_CODECS = ((codecs.BOM_UTF32_LE, "utf-32-le", 4), (codecs.BOM_UTF32_BE, "utf-32-be", 4),
              (codecs.BOM_UTF16_LE, "utf-16-le", 2), (codecs.BOM_UTF16_BE, "utf-16-be", 2))
BOMS = tuple(bom for bom, _, _ in BOM_CODECS)
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ufffe\uffff]")  # not in text (tab, newlines and form feed are)
_C0 = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")  # C0 controls but tab, newlines and form feed
_TEXT_BYTES = bytes([9, 10, 12, 13, *range(32, 127), *range(128, 256)])  # bytes of (Latin) text: not NUL or control
UTF16_SAMPLE = 4096  # bytes whose NUL pattern tells UTF-16 without a byte-order mark
_NOT_TEXT = {"Cc", "Cn", "Co", "Cs"}  # control, unassigned, private-use and surrogate code points
_FEWEST_LETTERS = 8  # letters a UTF-16 sample in another script needs: a few bytes of binary data may pass for text
_BARE_LETTERS = 16  # letters UTF-16 without a NUL byte needs: text in another encoding is read as one script by chance
_UNSPACED = {"CJK", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"}  # scripts written without spaces between words
_LEGACY = ("utf-8", "cp932", "euc_jp", "gb18030", "cp950", "cp949")  # multibyte encodings read as UTF-16 in one script
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
        text = _as_text(sample, codec) if 0 in high else None
        if text is None:
            continue
        scripts = Counter(_script(c) for c in text if c.isalpha())
        letters, latin = scripts.total(), scripts.pop("LATIN", 0)
        if letters >= _FEWEST_LETTERS and latin + max(scripts.values(), default=0) >= 0.9 * letters:
            return codec
    return None


def bare_utf16_codec(raw: bytes) -> str | None:
    """"utf-16-le" or "utf-16-be" for UTF-16 text without a byte-order mark or any ASCII, so no NUL byte tells it: a
    line of Chinese, Japanese or Thai, scripts written without spaces. Its first UTF16_SAMPLE bytes are not UTF-16 by
    their NUL bytes (utf16_codec), no text in UTF-8, a multibyte CJK encoding (_LEGACY, read as UTF-16 in one script
    too) or Western Windows-1252, and read as text in one byte order only (_as_text, _mostly_one_script), in one
    script written without spaces (_one_script); else None."""
    sample = raw[:min(len(raw), UTF16_SAMPLE) // 2 * 2]
    if utf16_codec(sample) or any(_reads(sample, legacy) for legacy in _LEGACY) or _western_sample(sample):
        return None
    found = [(codec, text) for codec in ("utf-16-le", "utf-16-be")
             if (text := _as_text(sample, codec)) is not None and _mostly_one_script(text)]
    return found[0][0] if len(found) == 1 and _one_script(found[0][1]) in _UNSPACED else None


def _mostly_one_script(text: str) -> bool:
    """Whether 4 in 5 of the letters and marks of `text` are of one script (any script; no letters at all count as
    one): how a byte order that decodes is told to be a reading (Armenian UTF-16 LE reads as CJK in BE too)."""
    scripts = Counter(_script(c) for c in text if c.isalpha() or unicodedata.category(c)[0] == "M")
    return max(scripts.values(), default=0) >= 0.8 * scripts.total()


def _as_text(sample: bytes, codec: str) -> str | None:
    """`sample` decoded with `codec` (a pair cut at its end waits, unread) when it is assigned, non-control characters
    (tab, newlines and form feed aside); else None."""
    try:
        text = codecs.getincrementaldecoder(codec)().decode(sample)
    except UnicodeDecodeError:
        return None
    return None if any(unicodedata.category(c) in _NOT_TEXT and c not in "\t\n\r\f" for c in text) else text


def _reads(sample: bytes, codec: str) -> bool:
    """Whether `sample` decodes with `codec` (a character cut at its end aside) to text without control characters."""
    try:
        return not has_controls(codecs.getincrementaldecoder(codec)().decode(sample))
    except UnicodeDecodeError:
        return False


def _western_sample(sample: bytes) -> bool:
    """Whether `sample` reads as Western Windows-1252 text."""
    try:
        return western([sample.decode("cp1252")])
    except UnicodeDecodeError:
        return False


def _one_script(text: str) -> str | None:
    """The script of `text` when it holds letters, marks, punctuation, digits and spaces only, 16 or more letters and
    marks, 19 in 20 of them of that script; else None."""
    kinds = [unicodedata.category(c) for c in text]
    if any(kind[0] not in "LMPNZ" or kind in ("Nl", "No") for kind in kinds):
        return None
    scripts = Counter(_script(c) for c, kind in zip(text, kinds) if kind[0] in "LM")
    script, most = max(scripts.items(), key=lambda item: item[1], default=("", 0))
    return script if most >= _BARE_LETTERS and most >= 0.95 * scripts.total() else None


def _script(letter: str) -> str:
    """A letter's script by the first word of its Unicode name, Chinese and Japanese scripts as one ("CJK")."""
    word = unicodedata.name(letter, "").partition(" ")[0]
    return "CJK" if word in _HAN else word


def utf16_text(raw: bytes, bare: bool = False) -> tuple[str, str] | None:
    """UTF-16 text without a byte-order mark (utf16_codec, or with `bare` bare_utf16_codec) and its codec, when all of
    it decodes to text (no control characters); None otherwise."""
    codec = bare_utf16_codec(raw) if bare else utf16_codec(raw)
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
    """"utf-32" or "utf-16" (which read the mark and drop it) for bytes that start with its byte-order mark; None
    without one."""
    return next((codec[:6] for bom, codec, _ in BOM_CODECS if raw.startswith(bom)), None)


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
    """Whether Windows-1252 text, in pieces, reads as Western European: no control characters, and misread.Tally's
    western (mostly ASCII, not Central European text misread)."""
    tally = Tally()
    for text in texts:
        if _C0.search(text):
            return False
        tally.add(text)
    return tally.western()


def central_codec(raw: bytes) -> str | None:
    """"cp1250" or "iso8859_2" for bytes that read as Windows-1252 (its undefined bytes too) as Central European text
    misread (misread.Tally.central); None otherwise."""
    tally = Tally()
    tally.add(raw.decode("cp1252", errors="surrogateescape"))
    return tally.central()


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
    unless valid multi-byte UTF-8 characters are at least a quarter as many as the stray bytes and the stray bytes at
    most one in five visible characters (Shift-JIS, GBK, EUC-JP or TIS-620 text is mostly stray bytes, with a
    valid-looking pair by chance here and there)."""
    text = raw.decode("utf-8", errors="surrogateescape")  # each undecodable byte b -> U+DC00 + b
    stray = sum(0xDC80 <= ord(c) <= 0xDCFF for c in text)
    if not 0 < stray <= 4 * (sum(ord(c) > 127 for c in text) - stray):
        return None
    if 5 * stray > len(text) - sum(map(text.count, " \t\n\r\f")):
        return None
    return "".join(_cp1252(ord(c) - 0xDC00) if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def _cp1252(byte: int) -> str:
    """One byte as Windows-1252 (its five undefined bytes as Latin-1)."""
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(byte)
