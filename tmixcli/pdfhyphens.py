"""Words a PDF hyphenated at a line end, joined again ("exam-/ple" is "example"); a hyphen that belongs to the word
("self-/driving", "follow-/up") is kept, judged by the document's own spelling of the word elsewhere."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_BREAK = re.compile(r"(?<![\w\u2010-])((?:\w+[-\u2010])*\w*[^\W\d_])[-\u2010][ \t]*\n[ \t]*(\w+(?:[-\u2010]\w+)*)")
_WORD = re.compile(r"\w+(?:[-\u2010]\w+)*")
_PREFIXES = frozenset({"self"})  # English hyphenates these as prefixes ("self-driving"), style guides agree
_LEFT_MIN, _RIGHT_MIN = 2, 3  # the fewest letters hyphenation leaves before and after a break (TeX's defaults)


@dataclass
class Words:
    """The document's words, lower-cased: those written whole and those written with a hyphen."""

    whole: set[str] = field(default_factory=set)
    hyphenated: set[str] = field(default_factory=set)


def words_in(texts: Iterable[str]) -> Words:
    """The words of `texts`, a hyphen at a line end not counting as part of a word."""
    words = Words()
    for text in texts:
        for match in _WORD.finditer(text):
            word = match.group().lower().replace("\u2010", "-")
            (words.hyphenated if "-" in word else words.whole).add(word)
    return words


def rejoin(text: str, words: Words) -> str:
    """Join each word hyphenated at a line end before a lower-case letter (of any script), without its hyphen
    unless it belongs to the word; other breaks ("Halvorsen-/Marine", "2023-/2024") stay as they are."""
    def join(match: re.Match[str]) -> str:
        left, right = match.group(1), match.group(2)
        if not right[0].islower():
            return match.group()
        return f"{left}-{right}" if _real_hyphen(left, right, words) else left + right

    return _BREAK.sub(join, text)


def _real_hyphen(left: str, right: str, words: Words) -> bool:
    """Whether the hyphen between `left` and `right` is the word's own: it is part of a longer compound, the
    document writes the word so elsewhere (and not closed up), no hyphenation would leave so few letters on
    either side ("e-mail", "follow-up"), or the first part is a prefix English hyphenates."""
    if "-" in left or "\u2010" in left or "-" in right or "\u2010" in right:
        return True
    if f"{left}-{right}".lower() in words.hyphenated:
        return True
    if (left + right).lower() in words.whole:
        return False
    return len(left) < _LEFT_MIN or len(right) < _RIGHT_MIN or left.lower() in _PREFIXES
