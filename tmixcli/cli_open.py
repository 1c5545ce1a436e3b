"""What ask, prefill, chat and serve share: the model loaded (or found in a `tmix serve`), documents or a KV file
opened as a Context, and the status lines about them."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from tmixcli import startup, serving, stdout
from tmixcli.cli_options import ARGV, check_model_options
from tmixcli.config import Settings
from tmixcli.errors import TmixError
from tmixcli.filekind import names_stdin, not_a_file

if TYPE_CHECKING:
    from tmixcli.context import Context
    from tmixcli.models import LoadedModel
    from tmixcli.textcap import Budget


def status(quiet: bool, msg: str) -> None:
    """A status line on stderr, unless --quiet."""
    if not quiet:
        print(f"tmix: {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    """A status line that --quiet does not hide: answers now come from a version of the documents that is gone."""
    print(f"tmix: {msg}", file=sys.stderr, flush=True)


def status_after_interrupt(quiet: bool, msg: str) -> None:
    """The first status line after a Ctrl-C: the answer's line it cut ended on stdout first, and a line break before
    the message only at a terminal, off the echoed ^C (stdout.interrupt_lead); --quiet still ends the answer's line."""
    stdout.end_line()
    if not quiet:
        print(f"{stdout.interrupt_lead()}tmix: {msg}", file=sys.stderr, flush=True)


def load(model: Optional[str], device: str, dtype: str, quiet: bool, device_map: Optional[str] = None,
         threads: Optional[str] = None, compile: str = "off") -> LoadedModel:
    """The model, loaded (and compiled if asked), or the one a `tmix serve` answering this run holds."""
    if serving.served:  # inside `tmix serve`: the client found the server by these very options
        status(quiet, f"answered by tmix serve (pid {os.getpid()}): model already loaded")
        _follow_threads(serving.served["lm"], threads, served=True)
        return serving.served["lm"]
    with startup.quick_exit():
        from tmixcli.fuse import compile_blocks, resolve_compile
        from tmixcli.models import load_model, resolve_device

        _silence_libraries()
    try:
        wanted = resolve_compile(compile, resolve_device(device))
    except ValueError as err:
        raise TmixError(str(err)) from None
    lm = load_model(model, device, dtype, progress=not quiet, device_map=device_map, threads=threads)
    if wanted:
        compile_blocks(lm.model)
    _follow_threads(lm, threads)
    return lm


def _follow_threads(lm: LoadedModel, threads: Optional[str], served: bool = False) -> None:
    """On the CPU, torch's threads follow --threads (auto: decided as each work begins, shared with other tmix runs)."""
    if lm.device.type == "cpu":
        from tmixcli.threads import follow

        follow(threads, served)


def maybe_forward(sources: list[str], model: Optional[str], device: str, dtype: str, device_map: Optional[str],
                  compile: str, quiet: bool, texts: Sequence[Optional[str]] = ()) -> None:
    """Hand this run to a `tmix serve` holding the same model, if one runs (stdin, FIFOs, devices and /dev/fd/N stay
    local: filekind.process_bound): exits with its code. `texts`: the arguments that are text, not paths (the question,
    --system, --password), which a server in another locale must not read as file names.

    Inside the server, this is where a request is taken (or, reading such an input, handed back to run locally)."""
    from tmixcli import serve_client
    from tmixcli.filekind import process_bound
    from tmixcli.serverkey import server_key

    if serving.served:
        from tmixcli import serve

        serve.take_request(sources)
        return
    if any(process_bound(p) for p in sources):
        return
    code = serve_client.forward(ARGV, server_key(model, device, dtype, device_map, compile), quiet, texts)
    if code is not None:
        raise SystemExit(code)  # the server already said all there is to say (e.g. 'interrupted'): nothing more


def _silence_libraries() -> None:
    """No transformers warnings or progress bars: tmix says what matters in its own status lines."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _tokens_line(ctx: Context, n_prompt: int) -> str:
    """The status line on a context's tokens, model and attention."""
    from tmixcli.config import no_triangle_note, short_prompt_note

    lm, a = ctx.lm, ctx.attn
    note = no_triangle_note(a, lm.model.config.num_hidden_layers)
    short = None if note else short_prompt_note(a, n_prompt)
    attn = "dense" if a.method == "dense" else (
        f"trimix from layer {a.start_layer} ({ctx.start_layer_source}{f'; {note}' if note else ''}), "
        f"n_init={a.n_init} n_local={a.n_local} last_n={a.last_n}{f' ({short})' if short else ''}")
    return (f"{ctx.doc_name}: {doc_tokens(ctx, n_prompt)} document tokens ({n_prompt} with the prompt) | "
            f"{lm.model_id} on {lm.device.type} {str(lm.dtype).removeprefix('torch.')} | attention {attn}")


def announcer(quiet: bool) -> Callable[[Context, int], None]:
    """What opening's open_* tell the prompt's token count before a KV file is read or a prefill runs: the tokens line
    and the notes so far are said then, not after a prefill of minutes (a line said once, however often told)."""
    said: set[str] = set()

    def announce(ctx: Context, n_prompt: int) -> None:
        for line in (_tokens_line(ctx, n_prompt), *ctx.notes):
            if line not in said:
                said.add(line)
                status(quiet, line)
        ctx.notes_said = len(ctx.notes)
    return announce


def describe(ctx: Context, quiet: bool) -> None:
    """The status lines about an opened context: its tokens, model and attention (unless said before its prefill),
    the notes not said yet, and cache hit or miss."""
    if ctx.notes_said is None:
        status(quiet, _tokens_line(ctx, len(ctx.prefix_ids)))
    for note in [*ctx.notes[ctx.notes_said or 0:], *ctx.kv_notes]:
        status(quiet, note)
    if ctx.cache_hit:
        if ctx.kept_in_memory:  # nothing was read: no time to tell
            said = f"{ctx.kv_path}, kept in memory by tmix serve"
        elif ctx.recomputed is not None:
            said = (f"prefilled again (reading the file was on course to take longer than the {ctx.recomputed:.1f} s "
                    f"its prefill took) for {ctx.kv_path} in {ctx.prefill_s:.2f} s")
        else:
            said = f"loaded {ctx.kv_path} in {ctx.prefill_s:.2f} s"
        unread = " (documents unchanged since: not read again)" if ctx.doc_unread else ""
        status(quiet, f"cache hit: {said}{unread}")
    else:
        where = f" ({ctx.unsaved or 'cache off'})"
        if ctx.kv_path:  # a fresh prefill's file is complete only once ctx.save() has run (after the first answer)
            where = f", {'saving the KV file to' if ctx.pending_save else 'KV file'} {ctx.kv_path}"
        reused = ""
        if ctx.reused_rows:
            memory = " as kept in memory by tmix serve" if ctx.kept_in_memory else ""
            reused = (f" (the first {ctx.reused_rows} tokens taken from {ctx.reused_from.name}{memory}, "
                      f"{len(ctx.prefix_ids) - ctx.reused_rows} prefilled)")
        status(quiet, f"cache miss: prefilled in {ctx.prefill_s:.2f} s{reused}{where}")
    from tmixcli.threads import note

    if said := note():
        status(quiet, said)


def open_context(sources: Optional[list[str]], kv: Optional[Path], s: Settings, pages: Optional[str],
                 password: Optional[str], quiet: bool, model: Optional[str], device: str, dtype: str,
                 device_map: Optional[str] = None, threads: Optional[str] = None, compile: str = "off",
                 lm: Optional[LoadedModel] = None, env: frozenset[str] = frozenset(),
                 kv_out: Optional[Path] = None) -> Context:
    """The documents' (or the KV file's) context: bad input is refused before the model loads. `env`: the options
    that came from their environment variable (cli_options.env_options); `kv_out`: prefill -o's file, written from
    the documents read afresh (no document index: it neither serves nor records that file)."""
    from tmixcli.documents import load_documents
    from tmixcli.fit import check_early

    check_model_options(device, dtype, device_map, threads, compile, model, env)
    if kv is not None:
        why = "stdin is closed" if sys.stdin is None and names_stdin(str(kv)) else not_a_file(kv)
        if why is not None:
            raise TmixError(f"--kv {kv}: {why}")
        _refuse_for_kv(pages, password, s)
        with startup.quick_exit():
            from tmixcli.kvheader import read_checked_meta
            from tmixcli.kvstore import settings_for

        s = settings_for(read_checked_meta(kv), s)  # a foreign or damaged file, or settings it cannot take
        doc = ident = None
    else:
        from tmixcli import docindex
        from tmixcli.modelcheck import check_start_layer

        check_start_layer(model, s.method, s.start_layer)
        ident = docindex.identity(sources, pages, password) if s.use_cache and kv_out is None else None
        budget = read_budget(model, s)
        # documents no run has recorded are read first, so bad input fails before torch is imported
        doc = None if docindex.known(ident) else load_documents(sources, pages=pages, password=password,
                                                                 budget=budget)
        if doc is not None and lm is None and not serving.served:  # a document that cannot fit is refused before
            check_early(model, doc, s)  # torch, where it can be (a server's loaded model checks it at once)
    with startup.quick_exit():
        from tmixcli import opening

    if lm is None:
        lm = load(model, device, dtype, quiet, device_map, threads, compile)
    resident = serving.served.get("resident")  # inside `tmix serve`: the last KV file it loaded, kept in memory
    announce = announcer(quiet)
    if kv is not None:
        return opening.open_kv(lm, kv, s, resident, announce)
    if doc is None:
        ctx = opening.open_known(lm, ident, s, resident, announce)
        if ctx is not None:
            return ctx
        doc = load_documents(sources, pages=pages, password=password, budget=budget)
    return opening.open_document(lm, doc, s, kv_out=kv_out, resident=resident, ident=ident, announce=announce,
                                 say=functools.partial(status, quiet))


def check_cache_cap(s: Settings, kv_file: Optional[Path]) -> None:
    """Refuse a bad TMIX_CACHE_MAX at once (before a server or the model) in a run that may write to the cache, on a
    cache hit as on a miss: a mistyped cap must not let the cache grow past what the user meant."""
    if s.use_cache and kv_file is None:
        from tmixcli.kvfolder import cache_limit

        cache_limit()


def read_budget(model: Optional[str], s: Settings) -> Budget:
    """How much of the documents to read: what the model's context could hold, judged from its files (no torch)."""
    from tmixcli.textcap import Budget, files_cap

    return Budget(s.truncate, functools.partial(files_cap, model))


def _refuse_for_kv(pages: Optional[str], password: Optional[str], s: Settings) -> None:
    """Options about reading or caching a document cannot apply to a KV file, which holds exactly the text it was
    made from."""
    for flag, given in (("--pages", pages is not None), ("--password", password is not None),
                        ("--truncate", s.truncate)):
        if given:
            raise TmixError(f"{flag} cannot apply to --kv: a KV file holds exactly the text it was made from; use "
                            f"{flag} with tmix prefill (or ask about the document itself)")
    if not s.use_cache:
        raise TmixError("--no-cache cannot apply to --kv: the KV file given is the cache that is read")


def doc_tokens(ctx: Context, n_prompt: int | None = None) -> int:
    """The documents' own tokens: the prompt's (`n_prompt`, else the context's) less those of an empty one."""
    from tmixcli import prompt

    n_prompt = len(ctx.prefix_ids) if n_prompt is None else n_prompt
    return n_prompt - len(prompt.prefix_ids(ctx.lm.tokenizer, "", ctx.system))


def attention_json(ctx: Context) -> dict:
    """--json's attention: the settings, and whether every layer attended densely (a short prompt, a late start)."""
    from tmixcli.config import all_layers_dense

    dense = all_layers_dense(ctx.attn, ctx.lm.model.config.num_hidden_layers, len(ctx.prefix_ids))
    return {**ctx.attn.to_dict(), "all_layers_dense": dense}


def timings_json(ctx: Context) -> dict:
    """--json's prefill_s, the time spent prefilling (a miss, or a hit whose file was slower to read than to prefill
    again), and kv_load_s, the time a cache hit took to load its KV file; the one that did not happen is 0."""
    loaded = ctx.cache_hit and ctx.recomputed is None
    took = round(ctx.prefill_s, 4)
    return {"prefill_s": 0.0 if loaded else took, "kv_load_s": took if loaded else 0.0}


def save_quietly(ctx: Context) -> list[str]:
    """Finish the KV file after an answer: "KV file saved", or a failure (full disk, the file removed meanwhile) as a
    status line, not an error: the answer stands and the next run prefills again."""
    saving = ctx.pending_save is not None
    try:
        lines = ctx.save()
    except TmixError as err:
        ctx.kv_path = None
        return [f"KV file not saved: {err}"]
    if not saving or ctx.kv_path is None:
        return lines
    from tmixcli.sizes import human_size

    try:
        size = f" ({human_size(ctx.kv_path.stat().st_size)})"
    except OSError:  # removed meanwhile, by another tmix's trim
        size = ""
    return [f"KV file saved{size}", *lines]
