"""`tmix ask`'s question guard: a file, folder, stdin or missing document never becomes the question."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.formats import DOC_SUFFIXES
from tmixcli.filekind import names_own_file


def check_question(question: str, kv: bool) -> None:
    """Refuse a question that names stdin, a file, a folder or a missing document: a forgotten question (or, with
    --kv, which takes no document, a document given as well) never becomes one."""
    if question == "-":
        what = "is stdin"
    elif _names_a_file(question) or _names_an_input(question):
        what = "is a file name"
    elif _names_a_folder(question):
        what = "is a folder"
    elif _missing_document(question):
        if not kv:
            raise TmixError(f"no such document: {question} (the question goes last, after the documents)")
        what = "reads as a document's name"
    else:
        return
    if not kv:
        raise TmixError(f"the question {question!r} {what}; put the question last, after the documents")
    raise TmixError(f"the question {question!r} {what}: --kv takes no document (a KV file holds exactly the text it "
                    f"was made from); give only the question: tmix ask --kv PATH QUESTION")


def _names_a_file(text: str) -> bool:
    """True when `text` is the path of an existing file (a long question is never one, nor an error)."""
    try:
        return bool(Path(text).suffix) and Path(text).is_file()
    except (OSError, ValueError):
        return False


def _names_an_input(text: str) -> bool:
    """True when `text` (one word) names one of this process's files (/dev/stdin, /dev/fd/N) or an existing FIFO,
    device or socket: an input, never a question."""
    if any(c.isspace() for c in text):
        return False
    try:
        if names_own_file(text):
            return True
        mode = os.stat(text).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _names_a_folder(text: str) -> bool:
    """True when `text` is an existing folder written as a path (one word): a document folder, not a question."""
    try:
        return not any(c.isspace() for c in text) and Path(text).is_dir()
    except (OSError, ValueError):
        return False


def _missing_document(text: str) -> bool:
    """True when `text` reads as a document's file name (one word with a document suffix) that does not exist."""
    if any(c.isspace() for c in text) or Path(text).suffix.lower() not in DOC_SUFFIXES:
        return False
    return not _names_a_file(text)
