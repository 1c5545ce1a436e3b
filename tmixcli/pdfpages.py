"""The pages of a PDF's text: the --pages spec, each page's clean-up, the page markers they are joined with and the
pages a --truncate cut kept."""

from __future__ import annotations

import re

from tmixcli.errors import TmixError
from tmixcli.pdfhyphens import rejoin, words_in
from tmixcli.tidy import LIGATURES, tidy

_SOFT_HYPHEN_BREAK = re.compile(r"\u00ad[ \t]*\n?[ \t]*")
_SPACE_RUN = re.compile(r"[ \t\u00a0]+")
_PAGE_SPEC = re.compile(r"(\d+)(?:\s*-\s*(\d*))?|-\s*(\d+)")  # N, N-M, N- (to the end), -M (from page 1)
_MARK = "--- page "  # starts the line join_pages puts before a page: "--- page 7 ---"
_MARKS = re.compile(rf"^{_MARK}(\d+) ---$", re.MULTILINE)


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



def prepare(text: str) -> str:
    """A PDF page's raw text with its ligatures expanded, space runs single and soft hyphens gone."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(LIGATURES)
    return _SOFT_HYPHEN_BREAK.sub("", _SPACE_RUN.sub(" ", text))


def clean_pages(texts: list[str]) -> list[str]:
    """Clean a PDF's page texts (see prepare), words hyphenated at line ends rejoined as the whole document spells
    them (pdfhyphens)."""
    prepared = [prepare(text) for text in texts]
    words = words_in(prepared)
    return [tidy(rejoin(text, words)) for text in prepared]


def clean_page_text(text: str) -> str:
    """Clean one PDF page's text on its own: ligatures, words hyphenated at line ends, space runs, newlines."""
    return clean_pages([text])[0]



def join_pages(indexes: list[int], texts: list[str]) -> str:
    """Join page texts with a short "--- page N ---" marker (real 1-based numbers) before each page but page 1
    (so a selection such as 2-3 marks its first page too)."""
    parts = []
    for index, text in zip(indexes, texts):
        if index > 0:
            parts.append(f"{_MARK}{index + 1} ---")
        parts.append(text)
    return "\n\n".join(part for part in parts if part)


def kept_pages(text: str, kept: str) -> tuple[int, int, bool]:
    """The first and last page of a PDF's joined text (join_pages) that its beginning `kept` holds, and whether it
    holds the last one only in part (a marker with none of its page's text after it holds no page)."""
    pages = [(m.start(), m.end(), int(m[1])) for m in _MARKS.finditer(kept)]  # each page's marker, number
    if not kept.startswith(_MARK):
        pages.insert(0, (0, 0, 1))  # page 1 has no marker
    while len(pages) > 1 and not kept[pages[-1][1]:].strip():
        kept = kept[:pages.pop()[0]]
    rest = text[len(kept):].lstrip()
    return pages[0][2], pages[-1][2], not text.startswith(kept) or bool(rest) and not rest.startswith(_MARK)


def cut_place(text: str, kept: str, pages: int | None, partial: bool) -> str:
    """Where --truncate cut a PDF's joined `text` (of `pages` pages, `partial` when read only in part) to its beginning
    `kept`: "pages 1-20 of 40, page 20 in part"; "" for another document (`pages` None)."""
    if pages is None:
        return ""
    first, last, in_part = kept_pages(text, kept)
    whole = f"the {pages} pages read" if partial or first != 1 else str(pages)
    where = f"page {first}" if first == last else f"pages {first}-{last}"
    return f"{where} of {whole}" + ("" if not in_part else " in part" if first == last else f", page {last} in part")
