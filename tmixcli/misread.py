"""Central European text (Windows-1250, ISO-8859-2) that decodes as Windows-1252 but reads wrong: Polish "Budżet" as
"Bud¿et", Czech "předseda" as "pøedseda", accented letters no one Western alphabet explains but a Central one does."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

# Windows-1252 symbols that are letters in ISO-8859-2 or Windows-1250, and those inside a word
_SYMBOL_SET = "\u00a1\u00a3\u00a5\u00a6\u00a9\u00ab\u00ac\u00ae\u00af\u00b1\u00b3\u00b6\u00b9\u00bb\u00bc\u00be\u00bf"
_SYMBOLS = re.compile(f"(?<=[^\\W\\d_])[{_SYMBOL_SET}](?=[^\\W\\d_])")
_ASCII = re.compile(r"[\x00-\x7f]+")
_ASCII_SPACES = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"  # ASCII characters str.isspace() takes for whitespace
_ACCENTED = re.compile(r"(?<![^\W\d_])[A-Za-z]*[^\W\d_\x00-\x7f][^\W\d_]*")  # a word with a letter past ASCII
_WESTERN = (  # the accented letters of languages written in Windows-1252, loanword letters included
    "àâæçéèêëîïôœùûüÿ",  # French
    "äöüß",  # German
    "áéíñóúü",  # Spanish, Galician, Basque
    "áâãàçéêíóôõúü",  # Portuguese
    "àèéìíîòóù",  # Italian
    "àçèéíïòóúü",  # Catalan, Occitan
    "áäèéëíïóöúüêôû",  # Dutch, Afrikaans
    "åæøéóòôäöü",  # Danish, Norwegian
    "áæðíóøúý",  # Faroese
    "åäöéü",  # Swedish
    "åäöšž",  # Finnish
    "äöõüšž",  # Estonian
    "áæéíóöúýþð",  # Icelandic
    "áéíóúàèìòù",  # Irish, Scottish Gaelic
    "çë",  # Albanian
)
_CENTRAL = (  # the accented letters of languages written in Windows-1250 and ISO-8859-2
    "áčďéěíňóřšťúůýž",  # Czech
    "áäčďéíĺľňóôŕšťúýž",  # Slovak
    "ąćęłńóśźż",  # Polish
    "áéíóöőúüű",  # Hungarian
    "čćđšž",  # Slovenian, Croatian, Bosnian
    "ăâîşţ",  # Romanian
)
ICONV = {"cp1250": "CP1250", "iso8859_2": "ISO-8859-2"}  # the codecs Central European text is in, named for iconv
_FIT = 0.95  # share of a reading's accented letters one Central European alphabet must explain
_WORDS = 3  # distinct words (not capitalised: no names) with a letter the Western alphabet lacks
_SCAN = 1 << 20  # characters of a text whose words are looked through


def _as(codec: str) -> dict[str, str]:
    """Each Windows-1252 character outside ASCII (its five undefined bytes as surrogateescape reads them) -> the
    character its byte is in `codec`, where it has one."""
    table = {}
    for byte in range(0x80, 0x100):
        key = bytes([byte]).decode("cp1252", errors="surrogateescape")
        try:
            table[key] = bytes([byte]).decode(codec)
        except UnicodeDecodeError:
            continue
    return table


_READINGS = {codec: _as(codec) for codec in ICONV}


class Tally:
    """What tells Central European text misread as Windows-1252, counted over a text read in pieces."""

    def __init__(self) -> None:
        self.chars: Counter[str] = Counter()  # characters outside ASCII
        self.shown = 0  # ASCII characters that are not whitespace
        self.symbols = 0  # _SYMBOLS inside words
        self.scanned = 0  # characters added
        self.words: defaultdict[str, set[str]] = defaultdict(set)  # accented letter -> up to _WORDS lowercase words

    def add(self, text: str) -> None:
        """Count one piece of the text; its words are looked through in the first _SCAN characters only, and only
        while one of its accented letters lacks _WORDS words."""
        rest = _ASCII.sub("", text)
        self.chars.update(rest)
        self.shown += len(text) - len(rest) - sum(map(text.count, _ASCII_SPACES))
        found = set(rest)
        if found.intersection(_SYMBOL_SET):
            self.symbols += len(_SYMBOLS.findall(text))
        scan = self.scanned < _SCAN and any(len(self.words.get(c, ())) < _WORDS for c in found if c.isalpha())
        self.scanned += len(text)
        if not scan:
            return
        for match in _ACCENTED.finditer(text):
            word = match.group()
            if word[0].islower():
                for c in set(word):
                    if c > "\x7f" and len(self.words[c]) < _WORDS:
                        self.words[c].add(word)

    def visible(self) -> int:
        """Characters that are not whitespace."""
        return self.shown + sum(n for c, n in self.chars.items() if not c.isspace())

    def western(self) -> bool:
        """Whether the text reads as Western European (_latin), with no symbols inside words (_symbols) and not as
        Central European text (central)."""
        return self._latin() and not self._symbols() and self.central() is None

    def central(self) -> str | None:
        """The codec ("cp1250" or "iso8859_2") of Central European text read as Windows-1252: mostly ASCII (_latin),
        with symbols inside words (_symbols) or accented letters no one Western alphabet explains (_letters), where
        that codec's reading has one Central European alphabet explain 19 in 20 of its accented letters; else None."""
        if not self._latin() or not (self._symbols() or self._letters()):
            return None
        codec, (fit, _) = max(((codec, _fit(self.chars, table)) for codec, table in _READINGS.items()),
                              key=lambda item: item[1])
        return codec if fit >= _FIT else None

    def _latin(self) -> bool:
        """At most one in five visible characters outside ASCII (Shift-JIS or GBK text decodes to mostly accented
        letters)."""
        return 5 * sum(n for c, n in self.chars.items() if not c.isspace()) <= self.visible()

    def _symbols(self) -> bool:
        """Two symbols inside words or more, one in 200 visible characters (Polish has ~30 in 1000)."""
        return self.symbols >= 2 and 200 * self.symbols >= self.visible()

    def _letters(self) -> bool:
        """Accented letters that the Western alphabet explaining most of them lacks: one in 20 of them or more, in 3
        words or more that are not capitalised (names)."""
        letters = _accented(self.chars)
        left = set(letters) - set(max(_WESTERN, key=lambda alphabet: _covered(letters, alphabet)))
        words = set().union(*(self.words[c] for c in self.words if c.lower() in left))
        return len(words) >= _WORDS and 20 * sum(letters[c] for c in left) >= letters.total()


def _covered(letters: Counter[str], alphabet: str) -> int:
    """How many of the letters `alphabet` holds."""
    return sum(n for c, n in letters.items() if c in alphabet)


def _accented(chars: Counter[str], table: dict[str, str] | None = None) -> Counter[str]:
    """The letters outside ASCII among `chars`, lower-cased, each read through `table` (Windows-1252 bytes in another
    codec) when given."""
    letters: Counter[str] = Counter()
    for c, n in chars.items():
        read = c if table is None else table.get(c, "")
        if read > "\x7f" and read.isalpha():
            letters[read.lower()] += n
    return letters


def _fit(chars: Counter[str], table: dict[str, str]) -> tuple[float, int]:
    """(share, count) of the accented letters of the text read through `table` that one Central European alphabet
    explains, for the alphabet that explains most."""
    letters = _accented(chars, table)
    total = letters.total()
    covered = max(_covered(letters, alphabet) for alphabet in _CENTRAL)
    return (covered / total if total else 0.0), covered
