"""`tmix text`: print the documents' text as tmix reads it for the prompt, to tell a reader's fault from the model's."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from tmixcli import early
from tmixcli.cli_open import status
from tmixcli.cli_options import PagesOpt, PasswordOpt, QuietOpt

_PIECE = 1 << 16  # characters written at a time (see text)


@early.command
def text(
    files: list[str] = typer.Argument(..., metavar="FILE...",
                                      help="Document(s) (.pdf, .docx, .odt, .pptx, .epub, .html, text; a folder; "
                                      "- for stdin)."),
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt, quiet: bool = QuietOpt,
) -> None:
    """Print the text tmix reads from documents, as the model gets it (several under their headings); no model."""
    from tmixcli.documents import load_documents

    doc = load_documents(files, pages=pages, password=password)
    for note in doc.notes:
        status(quiet, note)
    out = doc.text if doc.text.endswith("\n") else doc.text + "\n"
    for start in range(0, len(out), _PIECE):  # one huge write cut short by a reader that left
        # raises nothing (exit 0, text lost); a next piece does: exit 141
        sys.stdout.write(out[start:start + _PIECE])
    sys.stdout.flush()
