"""`tmix ask` and `tmix prefill`: answer a question about documents or a KV file, or save the KV file alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from tmixcli import cli_open, cli_question, startup, stdout
from tmixcli.cli_options import (AttnOpt, ChunkOpt, CompileOpt, DeviceMapOpt, DeviceOpt, DtypeOpt, JsonOpt, LastNOpt,
                                 MaxNewOpt, ModelOpt, NInitOpt, NLocalOpt, NoCacheOpt, PagesOpt, PasswordOpt,
                                 PrefillAttnOpt, PrefillJsonOpt, QuietOpt, RepeatOpt, SeedOpt, StartOpt, SystemOpt,
                                 TempOpt, ThreadsOpt, TopPOpt, TruncOpt, env_options, settings)
from tmixcli.cli_status import empty_note, ending, show, tokens_said, ttft_said
from tmixcli.errors import TmixError
from tmixcli.formats import FILES_HELP
from tmixcli.filekind import absolute, check_output, not_a_file
from tmixcli.sizes import human_size

if TYPE_CHECKING:
    from tmixcli.context import Context


@startup.command
def ask(
    command: typer.Context,
    args: list[str] = typer.Argument(..., metavar="FILE... QUESTION",
                                     help=f"{FILES_HELP}, then the question; with --kv only the question."),
    kv: Optional[Path] = typer.Option(None, "--kv", metavar="PATH", help="Answer from this KV cache file alone."),
    model: Optional[str] = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt, threads: Optional[str] = ThreadsOpt,
    attention: Optional[str] = AttnOpt, n_init: Optional[int] = NInitOpt, n_local: Optional[int] = NLocalOpt,
    last_n: Optional[int] = LastNOpt,
    start_layer: Optional[int] = StartOpt, chunk_size: Optional[int] = ChunkOpt, compile: str = CompileOpt,
    system: Optional[str] = SystemOpt, pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    truncate: bool = TruncOpt, no_cache: bool = NoCacheOpt, max_new_tokens: int = MaxNewOpt,
    temperature: float = TempOpt, top_p: float = TopPOpt, seed: Optional[int] = SeedOpt,
    stop_repeats: bool = RepeatOpt, quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Answer a question about a document, or several read together (prefill, or reuse the cached KV)."""
    if (len(args) != 1) if kv is not None else (len(args) < 2):
        raise TmixError("usage: tmix ask FILE... QUESTION, or tmix ask --kv PATH QUESTION")
    question = args[-1]
    if not question.strip():
        raise TmixError("the question is empty")
    cli_question.check_question(question, kv is not None)
    quiet = quiet or as_json
    s = settings(method=attention, n_init=n_init, n_local=n_local, last_n=last_n, start_layer=start_layer,
                 system=system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                 stop_repeats=stop_repeats, use_cache=not no_cache, truncate=truncate, chunk_size=chunk_size,
                 progress=not quiet, question=question)
    cli_open.check_cache_cap(s, kv)
    cli_open.maybe_forward(args[:-1] + ([str(kv)] if kv is not None else []), model, device, dtype, device_map,
                           compile, quiet, (question, system, password))
    ctx = cli_open.open_context(args[:-1] if kv is None else None, kv, s, pages, password, quiet, model, device,
                                dtype, device_map, threads, compile, env=env_options(command))
    cli_open.describe(ctx, quiet)
    from tmixcli import answer

    on_text = None if as_json else show
    try:
        ans = answer.ask(ctx, question, s, on_text)
    except KeyboardInterrupt:
        _save_after_interrupt(ctx, quiet)
        raise
    except stdout.OutputClosed:  # `| head`: the answer is not wanted any more, the prefill's KV file still is
        cli_open.save_quietly(ctx)
        raise
    except TmixError:  # e.g. a question that does not fit: the prefill's KV file is still kept for the next try
        cli_open.save_quietly(ctx)
        raise
    saved = cli_open.save_quietly(ctx)
    ttft = ctx.prefill_s + ans.ttft_s
    empty = empty_note(ans)
    if as_json:
        print(json.dumps({
            "answer": ans.text.strip(), "prompt_tokens": ans.prompt_tokens, "document_tokens": cli_open.doc_tokens(ctx),
            "ttft_s": round(ttft, 4), **cli_open.timings_json(ctx),
            "decode_tokens_per_s": round(ans.decode_tokens_per_s, 2) if ans.new_tokens > 1 else None,
            "threads": threads_used(),
            "cache_hit": ctx.cache_hit,
            "kv_recomputed": ctx.recomputed is not None,
            "reused_tokens": ctx.reused_rows,
            "kv_path": absolute(ctx.kv_path) if ctx.kv_path else None,
            "notes": list(ctx.notes) + ([empty] if empty else []),
            "kv_saved": ctx.kv_path is not None, "kv_notes": [*ctx.kv_notes, *saved],
            "model": ctx.lm.model_id,
            "attention": cli_open.attention_json(ctx), "new_tokens": ans.new_tokens,
            "stop_reason": ans.stop_reason}))
        return
    print(flush=True)
    cli_open.status(quiet, f"{ttft_said(ans, ctx)}, {tokens_said(ans)}" + ending(ans))
    if empty:
        cli_open.status(quiet, empty)
    for line in saved:
        cli_open.status(quiet, line)


def threads_used() -> int | None:
    """The CPU threads the run computed with at its end, for --json (None on a GPU)."""
    from tmixcli.threads import used

    return used()


def _save_after_interrupt(ctx: Context, quiet: bool) -> None:
    """Ctrl-C during the answer to a fresh prefill: still write its KV file, so the next question starts warm."""
    if ctx.pending_save is None:
        return
    cli_open.status_after_interrupt(quiet, "answer interrupted; saving the KV file of the prefill (Ctrl-C again to "
                                           "skip)")
    try:
        for line in cli_open.save_quietly(ctx):
            cli_open.status(quiet, line)
    except KeyboardInterrupt:
        cli_open.status(quiet, "KV file not saved")


@startup.command
def prefill(
    command: typer.Context,
    files: list[str] = typer.Argument(..., metavar="FILE...",
                                      help=f"{FILES_HELP}."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="PATH",
                                          help="Write the KV file here (default: cache)."),
    model: Optional[str] = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt, threads: Optional[str] = ThreadsOpt,
    attention: Optional[str] = PrefillAttnOpt, n_init: Optional[int] = NInitOpt, n_local: Optional[int] = NLocalOpt,
    last_n: Optional[int] = LastNOpt,
    start_layer: Optional[int] = StartOpt, chunk_size: Optional[int] = ChunkOpt, compile: str = CompileOpt,
    system: Optional[str] = SystemOpt, pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    truncate: bool = TruncOpt, quiet: bool = QuietOpt, as_json: bool = PrefillJsonOpt,
) -> None:
    """Prefill a document (or several read together) and save its KV cache file; prints the path."""
    quiet = quiet or as_json
    s = settings(method=attention, n_init=n_init, n_local=n_local, last_n=last_n, start_layer=start_layer,
                 system=system, truncate=truncate, chunk_size=chunk_size, progress=not quiet,
                 max_new_tokens=1, kv_required=True)  # room for a question and one answer token
    output = check_output(output, "-o")
    if output is not None and output.exists():
        from tmixcli.kvheader import read_meta

        try:
            read_meta(output)  # opened without waiting: a FIFO or device put there after check_output is refused
        except TmixError:
            why = not_a_file(output)
            if why is None:
                raise TmixError(f"-o {output} exists and is not a tmix KV file; not overwriting it") from None
            if why != "no such file":  # gone meanwhile: nothing is overwritten
                raise TmixError(f"-o {output} exists and is {why}; give another name") from None
    cli_open.check_cache_cap(s, output)
    cli_open.maybe_forward(files, model, device, dtype, device_map, compile, quiet, (system, password))
    ctx = cli_open.open_context(files, None, s, pages, password, quiet, model, device, dtype, device_map, threads,
                                compile, env=env_options(command), kv_out=output)
    saved = ctx.save()
    if ctx.kv_path is None and saved:
        raise TmixError(f"{saved[0]}; raise the cap or write the file elsewhere with -o")
    if ctx.kv_path is None:
        raise TmixError("the KV file was removed (by another tmix?) as soon as it was written; run prefill again")
    cli_open.describe(ctx, quiet)
    for line in saved:
        cli_open.status(quiet, line)
    size = ctx.kv_path.stat().st_size
    if as_json:
        print(json.dumps({"kv_path": absolute(ctx.kv_path), "tokens": len(ctx.prefix_ids), "bytes": size,
                          **cli_open.timings_json(ctx), "threads": threads_used(), "cache_hit": ctx.cache_hit,
                          "reused_tokens": ctx.reused_rows, "notes": list(ctx.notes),
                          "kv_notes": [*ctx.kv_notes, *saved], "model": ctx.lm.model_id,
                          "attention": cli_open.attention_json(ctx)}))
    else:
        print(absolute(ctx.kv_path))
        cli_open.status(quiet, f"{len(ctx.prefix_ids)} tokens, {human_size(size)}, "
                               f"{'loaded' if ctx.cache_hit else 'prefilled'} in {ctx.prefill_s:.2f} s")

