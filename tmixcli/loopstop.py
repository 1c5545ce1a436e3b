"""Loop stop: small models repeat themselves, so an answer that ends in one passage said three times in a row is cut
after its first copy (answer.py asks after each decoded piece of white space)."""

from __future__ import annotations

import re

_WORD = re.compile(r"\S+")
_DIGITS = re.compile(r"\d+")
_LIST_NUMBER = re.compile(r"(?:^|\n|[.!?:]\s)[ \t]*\d+\.\Z")  # "10." opening a line or following a sentence


def repeated_tail(text: str, min_words: int = 24, max_period: int = 64, window: int = 2048) -> int:
    """Where to cut when `text` ends in one passage said three times in a row (line breaks and spacing aside; an
    unfinished last word not counted; counting numbers aside, as in a numbered list that loops: see _counts_on):
    after the first copy's last full sentence, else 0. Small models loop.
    Only the last `window` characters are read, so a check per decoded token stays cheap in long answers."""
    lo = max(0, len(text) - window)
    spans = [m.span() for m in _WORD.finditer(text, lo)]
    shapes = _DIGITS.sub("0", text[lo:]).split()  # the same words, "9." and "10." alike
    if spans and spans[-1][1] == len(text):
        spans.pop()  # the last word may still grow
        shapes.pop()
    if spans and len(text) > window:
        spans.pop(0)  # may be the end of a word cut by the window
        shapes.pop(0)
    words = [text[i:j] for i, j in spans]
    n = len(words)
    for p in range(-(-min_words // 3), min(max_period, n // 3) + 1):
        if shapes[n - p:] == shapes[n - 2 * p:n - p] == shapes[n - 3 * p:n - 2 * p] and _counts_on(words, n, p):
            start, end = spans[n - 3 * p][0], spans[n - 2 * p - 1][1]
            return _sentence_end(text, start, end)
    return 0


def _counts_on(words: list[str], n: int, p: int) -> bool:
    """Whether the last three `p`-word copies, equal but for their digits, differ only as counters do: in at most
    one word per 8, each number of such a word stepping evenly (9., 10., 11.). A table's values do not."""
    first, second, third = words[n - 3 * p:n - 2 * p], words[n - 2 * p:n - p], words[n - p:]
    changed = [k for k in range(p) if not first[k] == second[k] == third[k]]
    if len(changed) > p // 8:
        return False
    for k in changed:
        a, b, c = ([int(d) for d in _DIGITS.findall(w)] for w in (first[k], second[k], third[k]))
        if any(y - x != z - y for x, y, z in zip(a, b, c)):
            return False
    return True


def _sentence_end(text: str, start: int, end: int) -> int:
    """Just after the last ".", "!" or "?" in text[start:end] not ending a list number (a line's "10."), else `end`."""
    while (stop := max(text.rfind(mark, start, end) for mark in ".!?")) >= 0:
        if not _LIST_NUMBER.search(text, max(0, stop - 32), stop + 1):
            return stop + 1
        end = stop
    return end
