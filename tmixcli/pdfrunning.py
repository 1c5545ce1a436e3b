"""A PDF's running headers and footers: lines at the same place in the top or bottom margin of many pages that look
like page furniture (a title, a page number), told apart from content that repeats there ("Status: Active" on a
one-record page, a year heading each page)."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence

from tmixcli.pdflines import PageLines, Piece

BAND = 0.2  # a running line sits within this fraction of the page's height from its top or bottom edge,
PLACE = 0.02  # within this fraction of it from where the same line sits on the other pages,
EDGE = 2  # among the outermost rows of its edge: the second only where the first is all running lines
_LEVEL = 0.005  # lines this close in height (fraction of the page's) are one row
LONGEST = 120  # characters a running line has at most
RUNNING_ROOM = 2 * EDGE * (LONGEST + 1)  # characters running lines may take from a page's text
_COUNTER_WORDS = 12  # words a running line with a page number has at most
_MARK = "\x00"  # where a line's page number was, in its key
_COUNTER = re.compile(r"(?:(?P<word>(?<![\w.])(?:page|pg\.?|p\.|pag\.|pagina|página|seite|s\.|side|sida)\s*))?"
                      + _MARK + r"(?:\s*(?:of|/|von|de|di|sur|av|af)\s*\d+(?:\s*pages)?)?")
_SEPARATORS = ("|", "-", "\u2013", "\u2014", "\u00b7", "\u2022", "/", ",", "~")  # between a title and its number
_DECOR = frozenset(" -\u2010\u2011\u2012\u2013\u2014\u2015\u00b7\u2022|/\\[](){}<>\u00ab\u00bb~*_")  # around it
_FIELD = re.compile(r"[^\W\d_][^:\s]*(?: [^:\s]+){0,2}:\s+\S")  # "Status: Active", a form's label and value
_WIDE = re.compile(r"^\s*\d+\s{3,}\S|\S\s{3,}\d+\s*$")  # a page number three spaces or more from its title
_YEARS = range(1800, 2101)  # bare numbers in this range count as page numbers only beside a page word

Key = tuple[str, str, str, int]  # (kind: "=" exact, "#" page number, "~" page number beside any title; edge;
#                                  the line, its page number marked; the page number less the page index)


def running_lines(pages: Sequence[PageLines], numbers: Sequence[int]) -> list[dict[int, Key]]:
    """For each page, its running lines (index into its lines) with the key under which they are kept once;
    `numbers` are the pages' 0-based indexes in the file, which page numbers are checked against."""
    shapes = [_shape(page) for page in pages]
    edges = [_edges(page) for page in pages]
    running: list[dict[int, Key]] = [{} for _ in pages]
    for rank in range(EDGE):
        found: dict[Key, list[tuple[int, int, Key]]] = defaultdict(list)
        for p, page in enumerate(pages):
            for side, rows in edges[p].items():
                if len(rows) > rank and all(i in running[p] for row in rows[:rank] for i in row):
                    for i in rows[rank]:
                        for key, once in _keys(page, i, numbers[p], side, shapes[p]):
                            found[key].append((p, i, once))
        for key in sorted(found, key=lambda k: k[0] != "="):  # exact repeats first
            where = _same_place([w for w in found[key] if w[1] not in running[w[0]]], pages)
            if _enough([numbers[p] for p, _, _ in where], numbers) and _furniture(key, where, pages, shapes, numbers):
                for p, i, once in where:
                    running[p][i] = once
    return running


def keep_once(pages: Sequence[PageLines], running: Sequence[dict[int, Key]]) -> list[list[str]]:
    """Each page's lines with every running line but the first under its key left out."""
    seen: set[Key] = set()
    out = []
    for page, found in zip(pages, running):
        kept = []
        for i, line in enumerate(page.lines):
            if i in found:
                if found[i] in seen:
                    continue
                seen.add(found[i])
            kept.append(line.text)
        out.append(kept)
    return out


def furniture_only(page: PageLines, found: dict[int, Key]) -> bool:
    """Whether a page has no text but running lines."""
    return all(i in found or not line.text.strip() for i, line in enumerate(page.lines))


def _shape(page: PageLines) -> tuple[float, float | None]:
    """A page's body font size (that of most of its characters) and its usual line pitch (fraction of the page's
    height; None when it has too few lines)."""
    sizes: dict[float, int] = defaultdict(int)
    for line in page.lines:
        for piece in line.pieces:
            sizes[round(piece.size, 1)] += len(piece.text.strip())
    body = max(sizes, key=sizes.__getitem__) if sizes else 0.0
    tops = sorted({round(line.top, 4) for line in page.lines if line.top is not None and line.text.strip()})
    steps = [b - a for a, b in zip(tops, tops[1:]) if b - a > 0.002]
    return body, statistics.median(steps) if len(steps) >= 2 else None


def _edges(page: PageLines) -> dict[str, list[list[int]]]:
    """The indexes of a placed page's lines at its top and bottom edge, as rows of lines at one height, outermost
    first: EDGE rows at most, each within BAND of its edge, its lines not longer than LONGEST."""
    if not page.placed:
        return {}
    rows: list[list[tuple[float, int]]] = []
    for where, i in sorted((line.top, i) for i, line in enumerate(page.lines)
                           if line.top is not None and line.text.strip()):
        if rows and where - rows[-1][0][0] <= _LEVEL:
            rows[-1].append((where, i))
        else:
            rows.append([(where, i)])
    out: dict[str, list[list[int]]] = {}
    for side, ends in (("top", rows[:EDGE]), ("bottom", rows[::-1][:EDGE])):
        out[side] = []
        for row in ends:
            where = row[0][0]
            if (where > BAND if side == "top" else where < 1 - BAND) or any(
                    len(page.lines[i].text) > LONGEST for _, i in row):
                break
            out[side].append([i for _, i in row])
    return out


def _keys(page: PageLines, i: int, number: int, side: str,
          shape: tuple[float, float | None]) -> Iterator[tuple[Key, Key]]:
    """(key to count line i under, key to keep it once under) for each way it may be a running line."""
    text = normal(page.lines[i].text)
    yield ("=", side, text, 0), ("=", side, text, 0)
    if len(text.split()) > _COUNTER_WORDS:
        return
    for run in re.finditer(r"\d+", text):
        marked = f"{text[:run.start()]}{_MARK}{text[run.end():]}"
        key = ("#", side, marked, int(run.group()) - number)
        loose = None if _counter_form(marked) else _loose(marked)
        if loose is None:
            yield key, key
        elif _set_apart(page, i, side, loose, shape):
            yield ("~", side, loose, key[3]), key


def _loose(marked: str) -> str | None:
    """Where a page number stands at the start ("@ title") or end ("title @") of a line, when only white space
    parts it from its title; None for other lines."""
    before, _, after = marked.partition(_MARK)
    if not after and _has_word(before) and not before.rstrip().endswith(_SEPARATORS):
        return "title @"
    if not before and _has_word(after) and not after.lstrip().startswith(_SEPARATORS):
        return "@ title"
    return None


def _set_apart(page: PageLines, i: int, side: str, loose: str, shape: tuple[float, float | None]) -> bool:
    """Whether a page number beside its title ("Smith et al. 5") is set apart as a running head's is: by a wide
    space, or (for a title of two words or more) by a smaller font or a gap to the body below or above."""
    line = page.lines[i]
    drawn = [piece for piece in line.pieces if piece.text.strip()]
    if _WIDE.search(line.text) or (len(drawn) >= 2 and _wide_gap(drawn if loose == "@ title" else drawn[::-1])):
        return True
    if len(line.text.split()) < 3:
        return False
    body, pitch = shape
    if line.size < 0.95 * body:
        return True
    return _gap(page, i, side) >= (1.4 * pitch if pitch else 0.04)


def _wide_gap(pieces: list[Piece]) -> bool:
    """Whether the first of `pieces` (in the order they run from the number) is a bare number standing at least
    two ems from the next (its width guessed at half an em per character)."""
    first, second = pieces[0], pieces[1]
    if not first.text.strip().isdigit():
        return False
    ends = sorted((first, second), key=lambda p: p.x)
    return ends[1].x - ends[0].x - 0.5 * ends[0].size * len(ends[0].text.strip()) >= 2 * first.size


def _gap(page: PageLines, i: int, side: str) -> float:
    """The distance (fraction of the page's height) from line i to the nearest line toward the body."""
    top = page.lines[i].top or 0.0
    others = [line.top - top if side == "top" else top - line.top for j, line in enumerate(page.lines)
              if j != i and line.top is not None and line.text.strip()]
    ahead = [d for d in others if d > 0.002]
    return min(ahead) if ahead else 1.0


def _same_place(where: list[tuple[int, int, Key]], pages: Sequence[PageLines]) -> list[tuple[int, int, Key]]:
    """The occurrences of a key within PLACE of where most of them sit."""
    if not where:
        return where
    middle = statistics.median(pages[p].lines[i].top or 0.0 for p, i, _ in where)
    return [(p, i, once) for p, i, once in where if abs((pages[p].lines[i].top or 0.0) - middle) <= PLACE]


def _enough(on: list[int], numbers: Sequence[int]) -> bool:
    """Whether a line is on enough pages: at least half of them (and 3), or of the odd or even pages when it is
    only on those (the left and right running heads of a book or journal)."""
    if len(set(on)) >= max(3, len(numbers) / 2):
        return True
    parities = {n % 2 for n in on}
    if len(parities) != 1:
        return False
    same = [n for n in numbers if n % 2 in parities]
    return len(set(on)) >= max(3, len(same) / 2)


def _furniture(key: Key, where: list[tuple[int, int, Key]], pages: Sequence[PageLines],
               shapes: Sequence[tuple[float, float | None]], numbers: Sequence[int]) -> bool:
    """Whether a line that repeats at a page edge looks like page furniture: an exact repeat that is not a
    "Label: value" field, or a page number no larger than the body text and, without a page word, not a year."""
    kind, _, text, offset = key
    if kind == "=":
        return _FIELD.match(text) is None
    word = False
    if kind == "#":
        form = _counter_form(text)
        if form is None:
            return False
        word = form == "page"
    if any(pages[p].lines[i].size > 1.15 * shapes[p][0] for p, i, _ in where):
        return False
    return word or not all(offset + numbers[p] in _YEARS for p, _, _ in where)


def _counter_form(marked: str) -> str | None:
    """"page" for a page number with a page word ("Page 3", "Seite 3 von 6"), "plain" for one alone or after or
    before a title and a separator ("- 3 -", "[3]", "3 of 9", "Annual Report | 3"); None for a heading ("Day 3",
    "§ 3", "3.")."""
    match = _COUNTER.search(marked)
    if match is None:
        return None
    if match.group("word"):
        return "page"
    before, after = marked[:match.start()].rstrip(), marked[match.end():].lstrip()
    if (_decor(before) or before.endswith(_SEPARATORS)) and (_decor(after) or after.startswith(_SEPARATORS)):
        return "plain"
    return None


def _decor(text: str) -> bool:
    """Whether `text` is only the dashes, brackets and bars set around a page number."""
    return all(c in _DECOR for c in text)


def _has_word(text: str) -> bool:
    """Whether `text` has a letter or digit."""
    return any(c.isalnum() for c in text)


def normal(line: str) -> str:
    """A line with whitespace runs as single spaces, lower-cased: how running lines are compared."""
    return " ".join(line.split()).lower()
