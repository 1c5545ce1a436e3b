"""The pages of a PDF's text: the --pages spec, each page's clean-up, running headers and footers kept once, and
the page markers they are joined with."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence

from tmixcli.errors import TmixError
from tmixcli.tidy import LIGATURES, tidy

_HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])[-\u2010][ \t]*\n[ \t]*(?=[a-z\u00df-\u00ff])")
_SOFT_HYPHEN_BREAK = re.compile(r"\u00ad[ \t]*\n?[ \t]*")
_SPACE_RUN = re.compile(r"[ \t\u00a0]+")
_DIGIT_RUN = re.compile(r"\d+")
_PAGE_SPEC = re.compile(r"(\d+)(?:\s*-\s*(\d*))?|-\s*(\d+)")  # N, N-M, N- (to the end), -M (from page 1)
_COUNTER = re.compile(r"(?:(?P<word>(?<![\w.])(?:page|pg\.?|p\.|pag\.|pagina|página|seite|s\.|side|sida)\s*))?"
                      r"@(?:\s*(?:of|/|von|de|di|sur|av|af)\s*\d+)?")  # a page number, @ in a running line
_SEPARATORS = ("|", "-", "\u2013", "\u2014", "\u00b7", "\u2022", "/", ",", "~")  # between a title and its page number
_COUNTER_WORDS = 12  # longest running line with a page number, in words
RUNNING_ROOM = 4 * 121  # characters running lines (see drop_running_lines) may take from a page: 4 edge rows


def parse_pages(spec: str, n_pages: int) -> list[int]:
    """Parse a 1-based inclusive page spec ("3-10", "1,4,7-9", "5-", "-2") into sorted 0-based indexes."""
    parts = [part.strip() for part in spec.split(",")]
    if not spec.strip() or any(not part for part in parts):
        raise TmixError(f"bad page spec {spec!r}: use e.g. 3-10 or 1,4,7-9")
    selected: set[int] = set()
    for part in parts:
        first, last = _page_range(part, spec, n_pages)
        selected.update(range(first - 1, last))
    return sorted(selected)


def _page_range(part: str, spec: str, n_pages: int) -> tuple[int, int]:
    """One comma-separated item of a page spec as a 1-based inclusive (first, last) within 1..n_pages."""
    match = _PAGE_SPEC.fullmatch(part)
    if match is None:
        raise TmixError(f"bad page spec {spec!r}: {part!r} is not a page number or range like 3-10")
    if match.group(3) is not None:
        first, last = 1, _page_number(match.group(3), spec, n_pages)
    else:
        first = _page_number(match.group(1), spec, n_pages)
        last = first if match.group(2) is None else _page_number(match.group(2) or str(n_pages), spec, n_pages)
    if first < 1:
        raise TmixError(f"bad page spec {spec!r}: pages start at 1")
    if max(first, last) > n_pages:
        raise TmixError(f"page {max(first, last)} in {spec!r} is out of range: "
                        f"the document has {n_pages} page(s)")
    if last < first:
        raise TmixError(f"bad page spec {spec!r}: {part!r} is not a valid range (write low-high)")
    return first, last


def _page_number(digits: str, spec: str, n_pages: int) -> int:
    """A page number as written; one of more than nine digits is out of range (int() refuses thousands)."""
    if len(digits.lstrip("0")) > 9:
        raise TmixError(f"page {digits[:12]}... in the page spec is out of range: the document has {n_pages} page(s)")
    return int(digits)



def select_pages(spec: str | None, n_pages: int, label: str) -> list[int]:
    """All pages, or those chosen by a --pages spec (errors name the file)."""
    if spec is None:
        return list(range(n_pages))
    try:
        return parse_pages(spec, n_pages)
    except TmixError as exc:
        raise TmixError(f"{label}: {exc}") from None



def clean_page_text(text: str) -> str:
    """Clean one PDF page's text: ligatures, words hyphenated at line ends, space runs, newlines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(LIGATURES)
    text = _SPACE_RUN.sub(" ", text)
    text = _SOFT_HYPHEN_BREAK.sub("", text)
    text = _HYPHEN_BREAK.sub("", text)
    return tidy(text)



def drop_running_lines(texts: list[str], numbers: Sequence[int] | None = None, edge: int = 2) -> list[str]:
    """Keep a PDF's running headers and footers (see _running_keys) once; `numbers` are the pages' 0-based indexes
    in the file (default 0, 1, 2, ...), against which page numbering in such lines is checked."""
    numbers = range(len(texts)) if numbers is None else numbers
    pages = [text.split("\n") for text in texts]
    edges = [_edge_rows(lines, edge) for lines in pages]
    running = _running_keys(pages, edges, numbers)
    if not running:
        return texts
    seen: set[tuple[str, str | int]] = set()
    out = []
    for lines, rows, number in zip(pages, edges, numbers):
        kept = []
        for i, line in enumerate(lines):
            k = _running_key(line, number, running) if i in rows else None
            if k is not None:
                if k in seen:
                    continue
                seen.add(k)
            kept.append(line)
        out.append(tidy("\n".join(kept)))
    return out


def _edge_rows(lines: list[str], edge: int) -> set[int]:
    """Indexes of the first and last `edge` non-blank lines of a page (up to 120 characters long)."""
    rows = [i for i, line in enumerate(lines) if line.strip()]
    return {i for i in rows[:edge] + rows[-edge:] if len(lines[i]) <= 120}


def _running_keys(pages: list[list[str]], edges: list[set[int]],
                  numbers: Sequence[int]) -> set[tuple[str, str | int]]:
    """Keys of the lines at the edge of at least half the pages (3 or more): ("=", line) for exact repeats, and
    (line with its page number as @, page number minus page index) for page furniture such as "Page 3 of 9"."""
    found: dict[tuple[str, str | int], set[int]] = defaultdict(set)
    for lines, rows, number in zip(pages, edges, numbers):
        for i in rows:
            line = _normal(lines[i])
            found["=", line].add(number)
            for key in _counter_keys(line, number):
                found[key].add(number)
    need = max(3, len(pages) / 2)
    return {key for key, on in found.items()
            if len(on) >= need and (key[0] == "=" or _is_furniture(key[0]))}


def _counter_keys(line: str, number: int) -> Iterator[tuple[str, int]]:
    """(line with one digit run as @, that run minus the page index) for each digit run of a short line."""
    if len(line.split()) > _COUNTER_WORDS:
        return
    for run in _DIGIT_RUN.finditer(line):
        yield f"{line[:run.start()]}@{line[run.end():]}", int(run.group()) - number


def _is_furniture(marked: str) -> bool:
    """True for a page number as page furniture ("3", "- 3 -", "Page 3", "p. 3", "3 of 9"), also beside a title
    after a separator ("Annual Report | 3 of 9") or before "Page"; False for a heading such as "Day 3"."""
    match = _COUNTER.search(marked)
    if match is None:
        return False
    before, after = marked[:match.start()].rstrip(), marked[match.end():].lstrip()
    if match.group("word"):
        return True
    return ((not _has_word(before) or before.endswith(_SEPARATORS))
            and (not _has_word(after) or after.startswith(_SEPARATORS)))


def _has_word(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _running_key(line: str, number: int, running: set[tuple[str, str | int]]) -> tuple[str, str | int] | None:
    """The key of the running line `line` on page index `number`, or None when it is content."""
    line = _normal(line)
    if ("=", line) in running:
        return "=", line
    return next((key for key in _counter_keys(line, number) if key in running), None)


def _normal(line: str) -> str:
    """A line with whitespace runs as single spaces, lower-cased: how running lines are compared."""
    return " ".join(line.split()).lower()



def join_pages(indexes: list[int], texts: list[str]) -> str:
    """Join page texts with a short "--- page N ---" marker (real 1-based numbers) before each page but page 1
    (so a selection such as 2-3 marks its first page too)."""
    parts = []
    for index, text in zip(indexes, texts):
        if index > 0:
            parts.append(f"--- page {index + 1} ---")
        parts.append(text)
    return "\n\n".join(part for part in parts if part)

