"""A text file's bytes as text: UTF-8, UTF-16/32 (with or without a byte-order mark) or Western Windows-1252, as
charsets tells them apart; binary data given as a text refused by what it looks like."""

from __future__ import annotations

from tmixcli.charsets import (bare_utf16_codec, bom_text, central_codec, mixed_text, utf16_codec, utf16_text,
                              western_text)
from tmixcli.errors import TmixError
from tmixcli.formats import FORMATS
from tmixcli.misread import ICONV
from tmixcli.pdftext import named_pdf
from tmixcli.tidy import nonempty, tidy

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office file (.doc/.xls/.ppt)"),
    (b"\x7fELF", "an executable program"),
    (b"\xff\xfe", "damaged UTF-16 text (convert it to UTF-8)"),  # reached only when it does not decode
    (b"\xfe\xff", "damaged UTF-16 text (convert it to UTF-8)"),
)


def text_file(raw: bytes, label: str) -> tuple[str, str | None]:
    """A text file's tidied text (_decoded), refused when empty, and a note when it was not UTF-8 or marked."""
    text, note = _decoded(raw, label)
    return nonempty(tidy(text), label), note


def _decoded(raw: bytes, label: str) -> tuple[str, str | None]:
    """Decode UTF-8 text (BOM allowed), UTF-16/32 text with a BOM, UTF-16 without one (with or without ASCII), else
    Western Windows-1252 text, rejecting binary data. Returns the text, and a note when it was not UTF-8 or marked."""
    text = bom_text(raw)
    if text is not None:
        return text, None
    utf16 = utf16_text(raw) or utf16_text(raw, bare=True)
    if utf16 is not None:
        return utf16[0], _unmarked(label, utf16[1])
    refuse_binary(raw, label)
    if named_pdf(label):
        raise TmixError(f"{label} is not a valid PDF (no %PDF- header); it may be corrupt")
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        offset = exc.start
    text = mixed_text(raw)
    if text is not None:
        return text, (f"{label} is UTF-8 with some other bytes (the first at offset {offset}); read those as "
                      "Windows-1252")
    text = western_text(raw)
    if text is None:
        raise TmixError(_not_utf8(raw, label, offset))
    return text, f"{label} is not UTF-8; read it as Windows-1252 (Western European)"


def _unmarked(label: str, codec: str) -> str:
    """The note on UTF-16 text read without a byte-order mark."""
    return f"{label} has no byte-order mark; read it as {_codec_name(codec)}"


def _not_utf8(raw: bytes, label: str, offset: int) -> str:
    """The error for a text in an encoding tmix does not read, naming Central European text as such."""
    codec = central_codec(raw)
    if codec is None:
        return (f"{label} is not a document tmix reads ({FORMATS}): a byte at offset {offset} is not UTF-8; convert it "
                "to UTF-8, e.g. iconv -f ENCODING -t UTF-8")
    return (f"{label} is not a document tmix reads ({FORMATS}): a byte at offset {offset} is not UTF-8 and its text "
            f"looks Central European (Windows-1250 or ISO-8859-2); convert it to UTF-8, e.g. iconv -f {ICONV[codec]} "
            "-t UTF-8")


def refuse_binary(raw: bytes, label: str) -> None:
    """A one-line error for binary data (an image, an archive, NUL bytes) given as a text."""
    description = _binary_kind(raw)
    if description is not None:
        raise TmixError(f"{label} is not a document tmix reads ({FORMATS}): it looks like {description}")


def _binary_kind(raw: bytes) -> str | None:
    """Describe binary data by its magic bytes; None if it may be text."""
    for magic, description in _MAGIC:
        if raw.startswith(magic):
            return description
    codec = utf16_codec(raw)
    if codec is not None:
        name = _codec_name(codec)
        return (f"damaged {name} text without a byte-order mark (convert it to UTF-8, e.g. "
                f"iconv -f {name.replace(' ', '')} -t UTF-8)")
    if b"\x00" in raw and bare_utf16_codec(raw) is None:  # UTF-16 without ASCII has NUL bytes in U+4E00 and the like
        return "binary data (it contains NUL bytes)"
    return None


def _codec_name(codec: str) -> str:
    """A codec as users know it: "utf-16-le" -> "UTF-16 LE"."""
    return codec.upper().replace("-LE", " LE").replace("-BE", " BE")

