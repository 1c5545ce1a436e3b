"""`tmix text`: print the documents' text as tmix reads it for the prompt, to tell a reader's fault from the model's."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

import typer

from tmixcli import startup
from tmixcli.cli_open import read_budget, status
from tmixcli.cli_options import ModelOpt, PagesOpt, PasswordOpt, QuietOpt, env_options, on_command_line, settings
from tmixcli.config import Settings
from tmixcli.errors import TmixError
from tmixcli.formats import FILES_HELP

if TYPE_CHECKING:
    from tmixcli.documents import Document

_PIECE = 1 << 16  # characters written at a time (see text)
TextTruncOpt = typer.Option(False, "--truncate", help="Print only what `prefill --truncate` keeps of documents that "
                            "do not fit the model's context (its tokenizer is read from its files).")
QuestionOpt = typer.Option(None, "--question", metavar="TEXT", help="With --truncate: print what `ask --truncate` "
                           "keeps for this question (a long one leaves the document less room).")
TextSystemOpt = typer.Option(None, "--system", metavar="TEXT", help="With --truncate: the system prompt `ask` is "
                             "given.")
TextMaxNewOpt = typer.Option(256, "--max-new-tokens", metavar="N", help="With --truncate: the answer room `ask` is "
                             "given (over 256 leaves the document less room).")


@startup.command
def text(
    command: typer.Context,
    files: list[str] = typer.Argument(..., metavar="FILE...",
                                      help=f"{FILES_HELP}."),
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt, truncate: bool = TextTruncOpt,
    model: Optional[str] = ModelOpt, quiet: bool = QuietOpt, question: Optional[str] = QuestionOpt,
    system: Optional[str] = TextSystemOpt, max_new_tokens: int = TextMaxNewOpt,
) -> None:
    """Print the text tmix reads from documents, as the model gets it (several under their headings); no model."""
    from tmixcli.documents import load_documents

    s = _settings(truncate, question, system, max_new_tokens, on_command_line(command, "max_new_tokens"))
    if truncate:
        from tmixcli.modelcheck import check_model

        check_model(model, env="model" in env_options(command))
    doc = load_documents(files, pages=pages, password=password, budget=read_budget(model, s) if truncate else None)
    out, notes = _cut(doc, model, s) if truncate else (doc.text, [])
    for note in (*doc.notes, *notes):
        status(quiet, note)
    out = out if out.endswith("\n") else out + "\n"
    for start in range(0, len(out), _PIECE):  # one huge write cut short by a reader that left
        # raises nothing (exit 0, text lost); a next piece does: exit 141
        sys.stdout.write(out[start:start + _PIECE])
    sys.stdout.flush()


def _settings(truncate: bool, question: Optional[str], system: Optional[str], max_new_tokens: int,
              max_given: bool) -> Settings:
    """The Settings that size --truncate's cut as `ask` would; the options that only size it are refused without it
    (`max_given`: --max-new-tokens was on the command line)."""
    for flag, value in (("--question", question), ("--system", system)):
        if value is not None and not truncate:
            raise TmixError(f"{flag} only changes what --truncate keeps: give it with --truncate")
    if max_given and not truncate:
        raise TmixError("--max-new-tokens only changes what --truncate keeps: give it with --truncate")
    return settings(method=None, truncate=truncate, question=question, system=system, max_new_tokens=max_new_tokens)


def _cut(doc: Document, model: Optional[str], s: Settings) -> tuple[str, list[str]]:
    """The text `prefill --truncate` keeps of `doc`, and its notes, with the model's tokenizer read from its files
    (filetok): only where a run that loaded the model has found them to give the loaded tokenizer's tokens."""
    from tmixcli import filetok
    from tmixcli.fit import fitted_text

    lm = filetok.files_model(model)
    try:
        if lm is not None:
            return fitted_text(lm, doc, s)
    except filetok.Unrendered:
        pass
    raise TmixError("--truncate needs the model's tokenizer files checked by a run that loaded the model (none has, "
                    "or its chat template needs the load); run tmix prefill --truncate with it once")
