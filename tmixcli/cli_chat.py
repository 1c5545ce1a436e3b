"""`tmix chat`: question after question about documents or a KV file, read line by line from stdin."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from tmixcli import cli_open, cpushare, startup, stdout
from tmixcli.cli_status import empty_note, ending, show, tokens_said, ttft_said
from tmixcli.cli_options import (AttnOpt, ChunkOpt, CompileOpt, DeviceMapOpt, DeviceOpt, DtypeOpt, LastNOpt,
                                 MaxNewOpt, ModelOpt, NInitOpt, NLocalOpt, NoCacheOpt, PagesOpt, PasswordOpt, QuietOpt,
                                 RepeatOpt, SeedOpt, StartOpt, SystemOpt, TempOpt, ThreadsOpt, TopPOpt, TruncOpt,
                                 env_options, settings)
from tmixcli.errors import TmixError
from tmixcli.formats import LISTED
from tmixcli.filekind import names_stdin

if TYPE_CHECKING:
    from tmixcli.context import Context
    from tmixcli.conversation import Conversation
    from tmixcli.docindex import SourceWatch


@startup.command
def chat(
    command: typer.Context,
    files: Optional[list[str]] = typer.Argument(None, metavar="FILE...", help=f"Document(s) ({LISTED}; a folder); "
                                                "or use --kv."),
    kv: Optional[Path] = typer.Option(None, "--kv", metavar="PATH", help="Chat against this KV cache file."),
    keep_history: bool = typer.Option(False, "--keep-history", help="Carry the conversation on between questions."),
    model: Optional[str] = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt, threads: Optional[str] = ThreadsOpt,
    attention: Optional[str] = AttnOpt, n_init: Optional[int] = NInitOpt, n_local: Optional[int] = NLocalOpt,
    last_n: Optional[int] = LastNOpt,
    start_layer: Optional[int] = StartOpt, chunk_size: Optional[int] = ChunkOpt, compile: str = CompileOpt,
    system: Optional[str] = SystemOpt, pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    truncate: bool = TruncOpt, no_cache: bool = NoCacheOpt, max_new_tokens: int = MaxNewOpt,
    temperature: float = TempOpt, top_p: float = TopPOpt, seed: Optional[int] = SeedOpt,
    stop_repeats: bool = RepeatOpt, quiet: bool = QuietOpt,
) -> None:
    """Ask question after question about documents (one per line; Ctrl-C stops an answer; empty line or Ctrl-D ends)."""
    if (not files) == (kv is None):
        raise TmixError("usage: tmix chat FILE..., or tmix chat --kv PATH")
    if any(names_stdin(f) for f in files or []):
        raise TmixError("chat reads its questions from stdin, so the document cannot come from stdin")
    if sys.stdin is None:  # fd 0 closed (`<&-`)
        raise TmixError("chat reads its questions from stdin, which is closed")
    s = settings(method=attention, n_init=n_init, n_local=n_local, last_n=last_n, start_layer=start_layer,
                 system=system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                 stop_repeats=stop_repeats, use_cache=not no_cache, truncate=truncate, chunk_size=chunk_size,
                 progress=not quiet)
    from tmixcli.docindex import SourceWatch

    cli_open.check_cache_cap(s, kv)
    watch = SourceWatch(files or [])  # before the documents are read: an edit made meanwhile is seen at once
    env = env_options(command)
    ctx = cli_open.open_context(files, kv, s, pages, password, quiet, model, device, dtype, device_map, threads,
                                compile, env=env)
    cli_open.describe(ctx, quiet)
    from tmixcli.conversation import Conversation

    interactive = _interactive()
    talk = Conversation(ctx, s, keep_history, lambda msg: cli_open.status(quiet, msg))
    reopen = functools.partial(cli_open.open_context, files, kv, s, pages, password, quiet, model, device, dtype,
                               device_map, threads, compile, lm=ctx.lm, env=env)
    refused = False
    while True:
        cpushare.release()  # waiting for a question is no work: other tmix runs get the cores meanwhile
        line = _next_question(interactive)
        if not line.strip():
            for note in cli_open.save_quietly(talk.ctx):
                cli_open.status(quiet, note)
            if refused and not stdout.is_terminal(sys.stdin):  # a script learns that some questions got no answer
                raise typer.Exit(2)
            break
        waited = _follow_changes(watch, talk, reopen, quiet)
        try:
            ans = talk.ask(line, show)
        except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat (the model stays loaded)
            cli_open.status_after_interrupt(quiet, "answer interrupted" + (", left out of the conversation"
                                                                           if keep_history else ""))
            continue
        except TmixError as err:  # e.g. a question that does not fit: say so and wait for the next one
            print(f"tmix: error: {err}", file=sys.stderr, flush=True)
            refused = True
            continue
        except stdout.OutputClosed:
            cli_open.save_quietly(talk.ctx)
            raise
        print(flush=True)  # the answer's line ends before any status line
        for note in cli_open.save_quietly(talk.ctx):
            cli_open.status(quiet, note)
        cli_open.status(quiet, f"{ttft_said(ans, waited)}, {tokens_said(ans)}" + ending(ans))
        if empty := empty_note(ans):
            cli_open.status(quiet, empty)


def _follow_changes(watch: SourceWatch, talk: Conversation, reopen: Callable[[], Context],
                    quiet: bool) -> Context | None:
    """Before a chat question: read the documents again when they changed on disk, or say that one can no longer be
    read; either way the chat goes on (from the version already read when the new one cannot be had; a re-read that
    failed or was interrupted is tried again before the next question). Returns the new version's context, whose
    prefill (or KV load) the question waited for; None when there is none."""
    changed = watch.poll()
    lost = [f"{name} can no longer be read ({why})" for name, why in changed if why is not None]
    if lost:
        cli_open.warn(f"{'; '.join(lost)}; answering from the version already read")
        return None
    if not changed:
        return None
    names = ", ".join(name for name, _ in changed)
    cli_open.status(quiet, f"{names} changed; reading {'it' if len(changed) == 1 else 'them'} again")
    for note in cli_open.save_quietly(talk.ctx):  # the old version's KV file: the new prefill takes its unchanged rows
        cli_open.status(quiet, note)
    old = "answering from the version already read (the next question tries again)"
    try:
        ctx = reopen()
    except TmixError as err:
        cli_open.warn(f"cannot read {names} again ({err}); {old}")
        return None
    except KeyboardInterrupt:  # said also under --quiet, as warn() does
        cli_open.status_after_interrupt(False, f"reading {names} again was interrupted; {old}")
        return None
    watch.accept()  # only now: the version read is the new one
    cli_open.describe(ctx, quiet)
    if talk.turns:
        cli_open.status(quiet, "the conversation starts over on the new version")
    talk.restart(ctx)
    return ctx


def _interactive() -> bool:
    """Whether chat talks to a terminal: then questions are read with line editing and history (readline)."""
    if not (stdout.is_terminal(sys.stdin) and stdout.is_terminal(sys.stdout)):
        return False
    try:
        import readline  # noqa: F401 - input() picks it up
    except ImportError:
        pass
    return True


def _next_question(interactive: bool) -> str:
    """The next question line; "" ends the chat (an empty line, Ctrl-D, or Ctrl-C at the prompt)."""
    if not interactive:
        if stdout.is_terminal(sys.stdin):
            print("> ", end="", file=sys.stderr, flush=True)
        return sys.stdin.readline()
    try:
        return input("> ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return ""
