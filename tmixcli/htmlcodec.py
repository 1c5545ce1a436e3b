"""The encoding of an HTML page's bytes, decided as a browser decides it: a byte-order mark, UTF-8, the charset its
<meta> (or an XHTML page's XML declaration) declares read by the WHATWG Encoding Standard's label table, else
Windows-1252."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from tmixcli.charsets import bom_codec, decoded, has_controls, utf16_codec, western
from tmixcli.errors import TmixError
from tmixcli.inputs import HEAD, Chunks, held_chunks

_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""(?:\xef\xbb\xbf)?\s*<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""")  # XHTML's
_MAIN = re.compile(r"<main\b", re.IGNORECASE)
_MAIN_TAG = len("<main")  # characters of a <main> tag before the word boundary its pattern ends with
_MULTIBYTE = {"gb18030", "big5hkscs", "cp932", "euc_jp", "iso2022_jp_ext", "cp949"}
_ENCODINGS = (  # (Python codecs that read it, the first tried first; its WHATWG labels): the Encoding Standard's
    # table, each encoding read by Python's codec of it or of a superset, as browsers read it (gb2312 as GBK,
    # iso-8859-1 and ascii as windows-1252, shift_jis as Windows-932, euc-kr as Windows-949, tis-620 as cp874)
    (("utf-8",), "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8 "
                 # a <meta> that names UTF-16 was read as ASCII, so browsers take it as UTF-8
                 "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le unicodefffe utf-16be"),
    (("cp866",), "866 cp866 csibm866 ibm866"),
    (("iso8859_2",), "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 latin2"),
    (("iso8859_3",), "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 latin3"),
    (("iso8859_4",), "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 latin4"),
    (("iso8859_5",), "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 "
                     "iso_8859-5:1988"),
    (("iso8859_6",), "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 iso-8859-6-e "
                     "iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987"),
    (("iso8859_7",), "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 iso88597 "
                     "iso_8859-7 iso_8859-7:1987 sun_eu_greek"),
    (("iso8859_8",), "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 iso88598 "
                     "iso_8859-8 iso_8859-8:1988 visual csiso88598i iso-8859-8-i logical"),
    (("iso8859_10",), "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6"),
    (("iso8859_13",), "iso-8859-13 iso8859-13 iso885913"),
    (("iso8859_14",), "iso-8859-14 iso8859-14 iso885914"),
    (("iso8859_15",), "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9"),
    (("iso8859_16",), "iso-8859-16"),
    (("koi8_r",), "cskoi8r koi koi8 koi8-r koi8_r"),
    (("koi8_u",), "koi8-ru koi8-u"),
    (("mac_roman",), "csmacintosh mac macintosh x-mac-roman"),
    (("cp874",), "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874"),
    (("cp1250",), "cp1250 windows-1250 x-cp1250"),
    (("cp1251",), "cp1251 windows-1251 x-cp1251"),
    (("cp1252",), "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 iso88591 "
                  "iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252"),
    (("cp1253",), "cp1253 windows-1253 x-cp1253"),
    (("cp1254",), "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 iso_8859-9:1989 l5 "
                  "latin5 windows-1254 x-cp1254"),
    (("cp1255",), "cp1255 windows-1255 x-cp1255"),
    (("cp1256",), "cp1256 windows-1256 x-cp1256"),
    (("cp1257",), "cp1257 windows-1257 x-cp1257"),
    (("cp1258",), "cp1258 windows-1258 x-cp1258"),
    (("mac_cyrillic",), "x-mac-cyrillic x-mac-ukrainian"),
    (("gb18030",), "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk gb18030"),
    (("big5hkscs",), "big5 big5-hkscs cn-big5 csbig5 x-x-big5"),
    (("euc_jp", "euc_jis_2004"), "cseucpkdfmtjapanese euc-jp x-euc-jp"),  # the second: NEC's row 13 (①, ...)
    (("iso2022_jp_ext",), "csiso2022jp iso-2022-jp"),
    (("cp932",), "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis"),
    (("cp949",), "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 ksc_5601 "
                 "windows-949"),
)
LABELS = {label: codecs for codecs, labels in _ENCODINGS for label in labels.split()}


def decode_html(raw: bytes, label: str) -> str:
    """Decode HTML bytes held in memory with the codec html_codec picks."""
    return raw.decode(html_codec(held_chunks(raw), label)[0])


def html_codec(chunks: Chunks, label: str) -> tuple[str, int]:
    """The codec of an HTML page's bytes, which `chunks` reads from the start, and where its last <main> tag starts in
    its text (-1: none). Each candidate is tried on all the bytes as they are read (_candidates)."""
    head = b""
    for piece in chunks():
        head += piece[:HEAD - len(head)]
        if len(head) == HEAD:
            break
    match = _CHARSET.search(head) or _XML_ENCODING.match(head)
    declared = match.group(1).decode("ascii") if match else None
    for codec, test in _candidates(head, declared):
        mains = _Mains()
        try:
            if test(mains.scan(decoded(chunks(), codec))):
                return codec, mains.last
        except (LookupError, UnicodeError):  # bytes the codec cannot decode
            pass
    codecs = LABELS.get((declared or "").lower())
    if codecs is not None:
        raise TmixError(f"{label} declares charset {declared} (read as {codecs[0].upper()}, as browsers read it), "
                        "but its bytes do not decode as that; convert it to UTF-8 from the encoding it is in, e.g. "
                        "iconv -f ENCODING -t UTF-8")
    raise TmixError(f"{label} is HTML in an unknown encoding (not UTF-8 and no usable <meta charset>)")


def _candidates(head: bytes, declared: str | None) -> Iterator[tuple[str, Callable[[Iterable[str]], bool]]]:
    """The codecs an HTML page may be in, in the order tried, each with the test its whole text must pass: UTF-16/32
    by a byte-order mark, UTF-16 without one (no control characters), UTF-8 (BOM allowed), the codecs of the charset
    its <meta> declares (LABELS; a label browsers do not know is ignored, as they ignore it), else Windows-1252 (what
    browsers assume for a Western page that declares none), never for a page that declares a multibyte charset."""
    bom, utf16 = bom_codec(head), utf16_codec(head)
    if bom:
        yield bom, _whole
    if utf16:
        yield utf16, lambda texts: not any(map(has_controls, texts))
    yield "utf-8-sig", _whole
    codecs = LABELS.get((declared or "").lower(), ())
    for codec in codecs:
        yield codec, _whole
    if not _MULTIBYTE.intersection(codecs):
        yield "cp1252", western


def _whole(texts: Iterable[str]) -> bool:
    """Any text passes, once all of it is read."""
    deque(texts, maxlen=0)
    return True


class _Mains:
    """Where the last <main> tag starts in a text read piece by piece, a tag cut between two pieces included."""

    def __init__(self) -> None:
        self.last, self._at, self._tail = -1, 0, ""  # _tail: the last characters read, from offset _at on

    def scan(self, texts: Iterable[str]) -> Iterator[str]:
        """`texts`, unchanged, looked through on the way."""
        for text in texts:
            self._look(self._tail + text, final=False)
            yield text
        self._look(self._tail, final=True)

    def _look(self, text: str, final: bool) -> None:
        for match in _MAIN.finditer(text):
            if final or match.end() < len(text):  # what follows the tag is read: \b is decided
                self.last = self._at + match.start()
        keep = 0 if final else min(len(text), _MAIN_TAG)
        self._at, self._tail = self._at + len(text) - keep, text[len(text) - keep:]


def last_main(texts: Iterable[str]) -> int:
    """Where the last <main> tag starts in the text of `texts` (-1: none)."""
    mains = _Mains()
    deque(mains.scan(texts), maxlen=0)
    return mains.last
