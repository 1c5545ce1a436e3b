"""Light clean-up of extracted text shared by every format (newlines, ligatures, blank runs); empty text refused."""

from __future__ import annotations

import re

from tmixcli.errors import TmixError

LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                           "\ufb05": "st", "\ufb06": "st"})
_BLANK_RUN = re.compile(r"\n{3,}")


def tidy(text: str) -> str:
    """Light clean-up shared by all formats: newlines, ligatures, trailing spaces, long blank runs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(LIGATURES)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUN.sub("\n\n", text).strip()


def nonempty(text: str, label: str) -> str:
    """`text`, refused when there is none."""
    if not text:
        raise TmixError(f"{label} is empty: it contains no text")
    return text
