"""Light clean-up of extracted text shared by every format (newlines, ligatures, invisible characters, blank runs);
empty text refused."""

from __future__ import annotations

import re

from tmixcli.errors import TmixError

LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                           "\ufb05": "st", "\ufb06": "st"})
INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))  # soft hyphen, zero-width spaces
# and joiners, word joiner, BOM: unseen inside text, yet each costs the tokenizer a token or two and splits a word
_BLANK_RUN = re.compile(r"\n{3,}")
_LINE_END = re.compile(r"[^\S\t\n]+$", re.MULTILINE)  # white space ending a line, but tabs (empty TSV fields)
_TEXT_START = re.compile(r"^[^\S\t]+")  # white space before the text, but tabs on its first line


def tidy(text: str) -> str:
    """Light clean-up shared by all formats: newlines, ligatures, invisible characters, white space ending a line
    (tabs kept: a TSV row's empty last fields), long blank runs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(LIGATURES).translate(INVISIBLE)
    text = "\n".join(line if line.strip() else "" for line in _LINE_END.sub("", text).split("\n"))
    return _TEXT_START.sub("", _BLANK_RUN.sub("\n\n", text)).rstrip("\n")


def nonempty(text: str, label: str) -> str:
    """`text`, refused when there is none."""
    if not text:
        raise TmixError(f"{label} is empty: it contains no text")
    return text
