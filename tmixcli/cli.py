"""The `tmix` command line: a thin shell, one function per subcommand."""

from __future__ import annotations

from tmixcli import early  # first: Ctrl-C while the rest imports exits 130 with one line

import functools
import json
import os
import stat
import sys
from pathlib import Path
from typing import Optional

import typer

from tmixcli import stdout
from tmixcli.errors import TmixError
from tmixcli.paths import check_output, names_own_file, names_stdin, not_a_file

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Ask questions about long documents with a local LLM: TriangleMix prefill, reusable KV cache.")

ModelOpt = typer.Option(None, "--model", metavar="MODEL", envvar="TMIX_MODEL",
                        help="HF model id, local model dir or .gguf file (default: embedded SmolLM2-135M-Instruct).")
DeviceOpt = typer.Option("auto", "--device", metavar="auto|cpu|cuda", help="auto, cpu or cuda.")
ThreadsOpt = typer.Option(None, "--threads", metavar="auto|N", envvar="TMIX_THREADS",
                          help="CPU threads: a number, or auto (probe whether threads help here). A run answered "
                          "by `tmix serve` uses the server's threads.")
DeviceMapOpt = typer.Option(None, "--device-map", metavar="auto",
                            help="'auto': spread a model too big for one GPU over all GPUs.")
DtypeOpt = typer.Option("auto", "--dtype", metavar="auto|bf16|fp16|fp32",
                        help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.")
AttnOpt = typer.Option(None, "--attention", metavar="trimix|dense",
                       help="trimix (TriangleMix prefill; the default) or dense. "
                       "Attention options left out take a --kv file's values.")
NInitOpt = typer.Option(None, "--n-init", metavar="N",
                        help="Sink tokens every query sees in triangle layers (default 8).")
NLocalOpt = typer.Option(None, "--n-local", metavar="N", help="Local window of triangle layers (default 512).")
LastNOpt = typer.Option(None, "--last-n", metavar="N",
                        help="Last queries of the prefill that see every token (default 128).")
StartOpt = typer.Option(None, "--start-layer", metavar="N",
                        help="First triangle layer (default: calibrated profile, else the paper's, else half).")
ChunkOpt = typer.Option(None, "--chunk-size", metavar="N",
                        help="Prefill in chunks of this many tokens (bounds memory).")
SystemOpt = typer.Option(None, "--system", metavar="TEXT", help="System prompt.")
PagesOpt = typer.Option(None, "--pages", metavar="PAGES", help="PDF pages to read, e.g. 3-10, 1,4,7-9, 5- or -2.")
PasswordOpt = typer.Option(None, "--password", metavar="TEXT", help="Password of an encrypted PDF.")
TruncOpt = typer.Option(False, "--truncate", help="Cut the end of a document that does not fit the context.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No status lines on stderr.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object instead of streaming text.")
NoCacheOpt = typer.Option(False, "--no-cache", help="Neither read nor write a KV cache file.")
MaxNewOpt = typer.Option(256, "--max-new-tokens", metavar="N", help="Answer length limit.")
TempOpt = typer.Option(0.0, "--temperature", metavar="T", help="0 = greedy.")
TopPOpt = typer.Option(1.0, "--top-p", metavar="P", help="Nucleus sampling threshold (with --temperature > 0).")
SeedOpt = typer.Option(None, "--seed", metavar="N", help="Sampling seed, 0 to 2**64-1 (18446744073709551615).")
RepeatOpt = typer.Option(True, "--stop-repeats/--no-stop-repeats",
                         help="End an answer that has begun to loop (one passage three times in a row; list numbers "
                         "counting up do not hide a loop).")
CompileOpt = typer.Option("off", "--compile", metavar="off|on|auto",
                          help="torch.compile each layer's norms and MLP (auto = on CUDA): "
                          "faster long prefills after a one-time compilation of a few seconds.")


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's largest seed


def _print_version(value: bool) -> None:
    if value:
        from tmixcli import __version__

        print(f"tmix {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                               help="Print the version and exit.")) -> None:
    """Ask questions about long documents with a local LLM: TriangleMix prefill, reusable KV cache."""


def _status(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"tmix: {msg}", file=sys.stderr, flush=True)


def _settings(**kw):
    from tmixcli.config import Settings

    if kw["method"] not in (None, "trimix", "dense"):
        raise TmixError(f"--attention must be trimix or dense, not {kw['method']!r}")
    if kw.get("max_new_tokens", 1) < 1:
        raise TmixError("--max-new-tokens must be at least 1")
    if not 0 <= kw.get("temperature", 0.0) <= 100:  # also refuses nan and inf
        raise TmixError("--temperature must be between 0 (greedy) and 100")
    if not 0 < kw.get("top_p", 1.0) <= 1:
        raise TmixError("--top-p must be in (0, 1]")
    if kw.get("temperature", 0.0) == 0 and kw.get("top_p", 1.0) < 1:
        raise TmixError("--top-p applies only to sampling: give it with --temperature above 0 (0, the default, is "
                        "greedy decoding)")
    if kw.get("seed") is not None and not 0 <= kw["seed"] <= MAX_SEED:
        raise TmixError(f"--seed must be from 0 to 2**64-1 ({MAX_SEED}), not {kw['seed']}")
    if kw.get("chunk_size") is not None and kw["chunk_size"] < 1:
        raise TmixError("--chunk-size must be at least 1")
    for name, value, low in (("--n-init", "n_init", 0), ("--n-local", "n_local", 1), ("--last-n", "last_n", 0),
                             ("--start-layer", "start_layer", 0)):
        if kw.get(value) is not None and kw[value] < low:
            raise TmixError(f"{name} must be at least {low}")
    return Settings(**kw)


def _check_model_options(device: str, dtype: str, device_map: Optional[str], threads: Optional[str],
                         compile: str, model: Optional[str] = None) -> None:
    """Refuse a mistyped model option or TMIX_* switch before torch is imported (seconds) or a document is read."""
    from tmixcli.envflags import check_switches
    from tmixcli.modelcheck import check_model

    check_switches()
    check_model(model)
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise TmixError(f"unknown device {device!r}: use auto, cpu or cuda")
    if dtype not in ("auto", "bf16", "fp16", "fp32"):
        raise TmixError(f"unknown dtype {dtype!r}: use auto, bf16, fp16 or fp32")
    if device_map not in (None, "auto"):
        raise TmixError(f"--device-map takes only 'auto', not {device_map!r}")
    if compile not in ("auto", "on", "off"):
        raise TmixError(f"--compile takes auto, on or off, not {compile!r}")
    spec = threads or os.environ.get("TMIX_THREADS") or "auto"
    if spec != "auto" and not (spec.isdigit() and 1 <= int(spec) <= (os.cpu_count() or 1)):
        name = "--threads" if _given("--threads") else "TMIX_THREADS"
        raise TmixError(f"{name} must be 'auto' or a number from 1 to this machine's {os.cpu_count()} CPUs, "
                        f"not {spec!r}")


def _given(flag: str) -> bool:
    """Whether this run's arguments name `flag` (else an option's value came from its environment variable)."""
    return any(arg == flag or arg.startswith(flag + "=") for arg in _ARGV)


def _load(model: Optional[str], device: str, dtype: str, quiet: bool, device_map: Optional[str] = None,
          threads: Optional[str] = None, compile: str = "off"):
    from tmixcli import serve

    if serve.served:  # inside `tmix serve`: the client found the server by these very options
        _status(quiet, f"answered by tmix serve (pid {os.getpid()}): model already loaded")
        return serve.served["lm"]
    with early.quick_exit():
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
    return lm


_ARGV: list[str] = []  # this run's arguments, for handing them to a `tmix serve`


def _maybe_forward(sources: list[str], model, device: str, dtype: str, device_map, compile: str,
                   quiet: bool) -> None:
    """Hand this run to a `tmix serve` holding the same model, if one runs (stdin, FIFOs, devices and /dev/fd/N stay
    local: paths.process_bound): exits with its code.

    Inside the server, this is where a request is taken (or, reading such an input, handed back to run locally)."""
    from tmixcli import serve
    from tmixcli.paths import process_bound
    from tmixcli.serverkey import server_key

    if serve.served:
        serve.take_request(sources)
        return
    if any(process_bound(p) for p in sources):
        return
    code = serve.forward(_ARGV, server_key(model, device, dtype, device_map, compile), quiet)
    if code is not None:
        raise SystemExit(code)  # the server already said all there is to say (e.g. 'interrupted'): nothing more


def _silence_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _describe(ctx, quiet: bool) -> None:
    from tmixcli.config import no_triangle_note

    lm, a = ctx.lm, ctx.attn
    note = no_triangle_note(a, lm.model.config.num_hidden_layers)
    attn = "dense" if a.method == "dense" else (
        f"trimix from layer {a.start_layer} ({ctx.start_layer_source}{f'; {note}' if note else ''}), "
        f"n_init={a.n_init} n_local={a.n_local} last_n={a.last_n}")
    _status(quiet, f"{ctx.doc_name}: {_doc_tokens(ctx)} document tokens ({len(ctx.prefix_ids)} with the prompt) | "
                   f"{lm.model_id} on {lm.device.type} "
                   f"{str(lm.dtype).removeprefix('torch.')} | attention {attn}")
    for note in ctx.notes:
        _status(quiet, note)
    if ctx.cache_hit:
        how = "kept in memory by tmix serve" if ctx.kept_in_memory else "loaded"
        if ctx.recomputed is not None:
            how = (f"prefilled again (reading the file was on course to take longer than the "
                   f"{ctx.recomputed:.1f} s its prefill took) for")
        unread = " (documents unchanged since: not read again)" if ctx.doc_unread else ""
        _status(quiet, f"cache hit: {how} {ctx.kv_path} in {ctx.prefill_s:.2f} s{unread}")
    else:
        where = f" ({ctx.unsaved or 'cache off'})"
        if ctx.kv_path:
            where = f", KV file {ctx.kv_path}"
        reused = ""
        if ctx.reused_rows:
            memory = " as kept in memory by tmix serve" if ctx.kept_in_memory else ""
            reused = (f" (the first {ctx.reused_rows} tokens taken from {ctx.reused_from.name}{memory}, "
                      f"{len(ctx.prefix_ids) - ctx.reused_rows} prefilled)")
        _status(quiet, f"cache miss: prefilled in {ctx.prefill_s:.2f} s{reused}{where}")


def _open(sources: Optional[list[str]], kv: Optional[Path], s, pages, password, quiet: bool,
          model, device, dtype, device_map=None, threads=None, compile="off", lm=None):
    from tmixcli.documents import load_documents

    _check_model_options(device, dtype, device_map, threads, compile, model)
    if kv is not None:
        why = "stdin is closed" if sys.stdin is None and names_stdin(str(kv)) else not_a_file(kv)
        if why is not None:
            raise TmixError(f"--kv {kv}: {why}")
        _refuse_for_kv(pages, password, s)
        with early.quick_exit():
            from tmixcli.kvheader import read_checked_meta
            from tmixcli.kvstore import settings_for

        s = settings_for(read_checked_meta(kv), s)  # a foreign or damaged file, or settings it cannot take
        doc = ident = None
    else:
        from tmixcli import docindex
        from tmixcli.modelcheck import check_start_layer

        check_start_layer(model, s.method, s.start_layer)
        ident = docindex.identity(sources, pages, password) if s.use_cache else None
        budget = _budget(model, s)
        # documents no run has recorded are read first, so bad input fails before torch is imported
        doc = None if docindex.known(ident) else load_documents(sources, pages=pages, password=password,
                                                                 budget=budget)
    with early.quick_exit():
        from tmixcli import opening, serve

    if lm is None:
        lm = _load(model, device, dtype, quiet, device_map, threads, compile)
    resident = serve.served.get("resident")  # inside `tmix serve`: the last KV file it loaded, kept in memory
    if kv is not None:
        return opening.open_kv(lm, kv, s, resident)
    if doc is None:
        ctx = opening.open_known(lm, ident, s, resident)
        if ctx is not None:
            return ctx
        doc = load_documents(sources, pages=pages, password=password, budget=budget)
    return opening.open_document(lm, doc, s, resident=resident, ident=ident)


def _check_cache_cap(s, kv_file: Optional[Path]) -> None:
    """Refuse a bad TMIX_CACHE_MAX at once (before a server or the model) in a run that may write to the cache, on a
    cache hit as on a miss: a mistyped cap must not let the cache grow past what the user meant."""
    if s.use_cache and kv_file is None:
        from tmixcli.kvfolder import cache_limit

        cache_limit()


def _budget(model: Optional[str], s):
    """How much of the documents to read: what the model's context could hold, judged from its files (no torch)."""
    from tmixcli.textcap import Budget, files_cap

    return Budget(s.truncate, functools.partial(files_cap, model))


def _refuse_for_kv(pages: Optional[str], password: Optional[str], s) -> None:
    """Options about reading or caching a document cannot apply to a KV file, which holds exactly the text it was
    made from."""
    for flag, given in (("--pages", pages is not None), ("--password", password is not None),
                        ("--truncate", s.truncate)):
        if given:
            raise TmixError(f"{flag} cannot apply to --kv: a KV file holds exactly the text it was made from; use "
                            f"{flag} with tmix prefill (or ask about the document itself)")
    if not s.use_cache:
        raise TmixError("--no-cache cannot apply to --kv: the KV file given is the cache that is read")


@app.command()
@early.command
def ask(
    args: list[str] = typer.Argument(..., metavar="FILE QUESTION",
                                     help="Document(s) (.pdf, .docx, .odt, .pptx, .epub, .html, text; a folder; - for "
                                     "stdin), then the question; with --kv only the question."),
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
    if kv is None and question == "-":
        raise TmixError("the question '-' is stdin; put the question last, after the documents")
    if kv is None and (_names_a_file(question) or _names_an_input(question)):
        raise TmixError(f"the question {question!r} is a file name; put the question last, after the documents")
    if kv is None and _names_a_folder(question):
        raise TmixError(f"the question {question!r} is a folder; put the question last, after the documents")
    if kv is None and _missing_document(question):
        raise TmixError(f"no such document: {question} (the question goes last, after the documents)")
    quiet = quiet or as_json
    s = _settings(method=attention, n_init=n_init, n_local=n_local, last_n=last_n, start_layer=start_layer,
                  system=system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                  stop_repeats=stop_repeats, use_cache=not no_cache, truncate=truncate, chunk_size=chunk_size,
                  progress=not quiet, question=question)
    _check_cache_cap(s, kv)
    _maybe_forward(args[:-1] + ([str(kv)] if kv is not None else []), model, device, dtype, device_map, compile, quiet)
    ctx = _open(args[:-1] if kv is None else None, kv, s, pages, password, quiet, model, device, dtype,
                device_map, threads, compile)
    _describe(ctx, quiet)
    from tmixcli import answer

    on_text = None if as_json else _show
    try:
        ans = answer.ask(ctx, question, s, on_text)
    except KeyboardInterrupt:
        _save_after_interrupt(ctx, quiet)
        raise
    except stdout.OutputClosed:  # `| head`: the answer is not wanted any more, the prefill's KV file still is
        _save_quietly(ctx)
        raise
    except TmixError:  # e.g. a question that does not fit: the prefill's KV file is still kept for the next try
        _save_quietly(ctx)
        raise
    saved = _save_quietly(ctx)
    ttft = ctx.prefill_s + ans.ttft_s
    if as_json:
        print(json.dumps({
            "answer": ans.text.strip(), "prompt_tokens": ans.prompt_tokens, "document_tokens": _doc_tokens(ctx),
            "ttft_s": round(ttft, 4), "prefill_s": round(ctx.prefill_s, 4),
            "decode_tokens_per_s": round(ans.decode_tokens_per_s, 2), "cache_hit": ctx.cache_hit,
            "kv_recomputed": ctx.recomputed is not None,
            "reused_tokens": ctx.reused_rows,
            "kv_path": str(ctx.kv_path) if ctx.kv_path else None,
            "notes": list(ctx.notes) + ([NO_ANSWER] if not ans.text.strip() else []), "kv_notes": saved,
            "model": ctx.lm.model_id,
            "attention": ctx.attn.to_dict(), "new_tokens": ans.new_tokens, "stop_reason": ans.stop_reason}))
        return
    print(flush=True)
    _status(quiet, f"TTFT {ttft:.2f} s ({'KV load' if ctx.cache_hit else 'prefill'} {ctx.prefill_s:.2f} s + "
                   f"question {ans.ttft_s:.2f} s), {_tokens_said(ans)}" + _ending(ans))
    if not ans.text.strip():
        _status(quiet, NO_ANSWER)
    for line in saved:
        _status(quiet, line)


def _show(text: str) -> None:
    """Stream a piece of the answer to stdout at once."""
    sys.stdout.write(text)
    sys.stdout.flush()


def _save_after_interrupt(ctx, quiet: bool) -> None:
    """Ctrl-C during the answer to a fresh prefill: still write its KV file, so the next question starts warm."""
    if ctx.pending_save is None:
        return
    if not quiet:
        print(file=sys.stderr)  # the answer's line was cut mid-way
    _status(quiet, "answer interrupted; saving the KV file of the prefill (Ctrl-C again to skip)")
    try:
        for line in _save_quietly(ctx):
            _status(quiet, line)
    except KeyboardInterrupt:
        _status(quiet, "KV file not saved")


def _save_quietly(ctx) -> list[str]:
    """Finish the KV file after an answer; a failure (full or read-only disk, the file removed meanwhile) is a
    status line, not an error: the answer stands and the next run prefills again."""
    try:
        return ctx.save()
    except TmixError as err:
        ctx.kv_path = None
        return [f"KV file not saved: {err}"]


NO_ANSWER = "the model gave no answer"


def _tokens_said(ans) -> str:
    """The answer's length for the status line, with the decode rate only where there is one (two tokens or more)."""
    if ans.new_tokens > 1:
        return f"{ans.new_tokens} tokens at {ans.decode_tokens_per_s:.1f} tok/s"
    return f"{ans.new_tokens} token" + ("" if ans.new_tokens == 1 else "s")


def _ending(ans) -> str:
    """Why an answer ended early, for the status line (nothing when the model finished it)."""
    if ans.stop_reason == "repeat":
        return "; cut: the answer began to repeat itself (--no-stop-repeats lets it run)"
    if ans.stop_reason == "length":
        return "; cut at --max-new-tokens"
    if ans.stop_reason == "context":
        return "; cut: the model's context is full (a shorter question leaves more room)"
    return ""


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


_DOC_SUFFIXES = {".pdf", ".docx", ".doc", ".odt", ".pptx", ".epub", ".html", ".htm", ".xhtml", ".txt", ".text", ".md",
                 ".markdown", ".rst", ".tex", ".log"}


def _missing_document(text: str) -> bool:
    """True when `text` reads as a document's file name (one word with a document suffix) that does not exist."""
    if any(c.isspace() for c in text) or Path(text).suffix.lower() not in _DOC_SUFFIXES:
        return False
    return not _names_a_file(text)


def _doc_tokens(ctx) -> int:
    from tmixcli import prompt

    return len(ctx.prefix_ids) - len(prompt.prefix_ids(ctx.lm.tokenizer, "", ctx.system))


@app.command()
@early.command
def prefill(
    files: list[str] = typer.Argument(..., metavar="FILE",
                                      help="Document(s) (.pdf, .docx, .odt, .pptx, .epub, .html, text; a folder; "
                                      "- for stdin)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="PATH",
                                          help="Write the KV file here (default: cache)."),
    model: Optional[str] = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt, threads: Optional[str] = ThreadsOpt,
    attention: Optional[str] = AttnOpt, n_init: Optional[int] = NInitOpt, n_local: Optional[int] = NLocalOpt,
    last_n: Optional[int] = LastNOpt,
    start_layer: Optional[int] = StartOpt, chunk_size: Optional[int] = ChunkOpt, compile: str = CompileOpt,
    system: Optional[str] = SystemOpt, pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    truncate: bool = TruncOpt, quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Prefill a document (or several read together) and save its KV cache file; prints the path."""
    from tmixcli.documents import load_documents

    quiet = quiet or as_json
    s = _settings(method=attention, n_init=n_init, n_local=n_local, last_n=last_n, start_layer=start_layer,
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
    _check_cache_cap(s, output)
    _maybe_forward(files, model, device, dtype, device_map, compile, quiet)
    if output is None:
        ctx = _open(files, None, s, pages, password, quiet, model, device, dtype, device_map, threads, compile)
    else:
        from tmixcli.modelcheck import check_start_layer

        _check_model_options(device, dtype, device_map, threads, compile, model)
        check_start_layer(model, s.method, s.start_layer)
        doc = load_documents(files, pages=pages, password=password, budget=_budget(model, s))
        with early.quick_exit():
            from tmixcli import opening, serve

        lm = _load(model, device, dtype, quiet, device_map, threads, compile)
        ctx = opening.open_document(lm, doc, s, kv_out=output, resident=serve.served.get("resident"))
    saved = ctx.save()
    if ctx.kv_path is None and saved:
        raise TmixError(f"{saved[0]}; raise the cap or write the file elsewhere with -o")
    if ctx.kv_path is None:
        raise TmixError("the KV file was removed (by another tmix?) as soon as it was written; run prefill again")
    _describe(ctx, quiet)
    for line in saved:
        _status(quiet, line)
    size = ctx.kv_path.stat().st_size
    if as_json:
        print(json.dumps({"kv_path": str(ctx.kv_path), "tokens": len(ctx.prefix_ids), "bytes": size,
                          "prefill_s": round(ctx.prefill_s, 4), "cache_hit": ctx.cache_hit,
                          "reused_tokens": ctx.reused_rows, "notes": list(ctx.notes),
                          "model": ctx.lm.model_id, "attention": ctx.attn.to_dict()}))
    else:
        print(ctx.kv_path)
        _status(quiet, f"{len(ctx.prefix_ids)} tokens, {size / 2**20:.1f} MiB, "
                       f"{'loaded' if ctx.cache_hit else 'prefilled'} in {ctx.prefill_s:.2f} s")


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


@app.command()
@early.command
def chat(
    files: Optional[list[str]] = typer.Argument(None, metavar="FILE", help="Document(s) (.pdf, .docx, .odt, "
                                                ".pptx, .epub, .html, text; a folder); or use --kv."),
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
    s = _settings(method=attention, n_init=n_init, n_local=n_local, last_n=last_n, start_layer=start_layer,
                  system=system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                  stop_repeats=stop_repeats, use_cache=not no_cache, truncate=truncate, chunk_size=chunk_size,
                  progress=not quiet)
    from tmixcli.docindex import SourceWatch

    _check_cache_cap(s, kv)
    watch = SourceWatch(files or [])  # before the documents are read: an edit made meanwhile is seen at once
    ctx = _open(files, kv, s, pages, password, quiet, model, device, dtype, device_map, threads, compile)
    _describe(ctx, quiet)
    from tmixcli.conversation import Conversation

    interactive = _interactive()
    show = _show
    talk = Conversation(ctx, s, keep_history, lambda msg: _status(quiet, msg))
    reopen = functools.partial(_open, files, kv, s, pages, password, quiet, model, device, dtype, device_map, threads,
                               compile, lm=ctx.lm)
    refused = False
    while True:
        line = _next_question(interactive)
        if not line.strip():
            for note in _save_quietly(talk.ctx):
                _status(quiet, note)
            if refused and not stdout.is_terminal(sys.stdin):  # a script learns that some questions got no answer
                raise typer.Exit(2)
            break
        _follow_changes(watch, talk, reopen, quiet)
        try:
            ans = talk.ask(line, show)
        except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat (the model stays loaded)
            print(flush=True)
            _status(quiet, "answer interrupted" + (", left out of the conversation" if keep_history else ""))
            continue
        except TmixError as err:  # e.g. a question that does not fit: say so and wait for the next one
            print(f"tmix: error: {err}", file=sys.stderr, flush=True)
            refused = True
            continue
        except stdout.OutputClosed:
            _save_quietly(talk.ctx)
            raise
        for note in _save_quietly(talk.ctx):
            _status(quiet, note)
        print(flush=True)
        _status(quiet, f"TTFT {ans.ttft_s:.2f} s, {_tokens_said(ans)}" + _ending(ans))
        if not ans.text.strip():
            _status(quiet, NO_ANSWER)


def _follow_changes(watch, talk, reopen, quiet: bool) -> None:
    """Before a chat question: read the documents again when they changed on disk, or say that one can no longer be
    read; either way the chat goes on (from the version already read when the new one cannot be had)."""
    changed = watch.poll()
    lost = [f"{name} can no longer be read ({why})" for name, why in changed if why is not None]
    if lost:
        _warn(f"{'; '.join(lost)}; answering from the version already read")
        return
    if not changed:
        return
    names = ", ".join(name for name, _ in changed)
    _status(quiet, f"{names} changed; reading {'it' if len(changed) == 1 else 'them'} again")
    for note in _save_quietly(talk.ctx):  # the old version's KV file: the new prefill takes its unchanged rows
        _status(quiet, note)
    try:
        ctx = reopen()
    except TmixError as err:
        _warn(f"cannot read {names} again ({err}); answering from the version already read")
        return
    except KeyboardInterrupt:
        _warn(f"reading {names} again was interrupted; answering from the version already read")
        return
    _describe(ctx, quiet)
    if talk.turns:
        _status(quiet, "the conversation starts over on the new version")
    talk.restart(ctx)


def _warn(msg: str) -> None:
    """A status line that --quiet does not hide: answers now come from a version of the documents that is gone."""
    print(f"tmix: {msg}", file=sys.stderr, flush=True)


@app.command()
@early.command
def serve(
    model: Optional[str] = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt, threads: Optional[str] = ThreadsOpt, compile: str = CompileOpt,
    quiet: bool = QuietOpt,
    stop: bool = typer.Option(False, "--stop", help="Stop the server started with these model options instead."),
) -> None:
    """Keep the model loaded: `ask` and `prefill` runs whose model options mean the same settings are answered here."""
    from tmixcli import serve as server
    from tmixcli.serverkey import gpu_here, server_key

    _check_model_options(device, dtype, device_map, threads, compile, model)
    if stop:  # found as `ask` finds it
        pid = server.stop_server(server_key(model, device, dtype, device_map, compile))
        _status(quiet, f"stopped the tmix server (pid {pid})")
        return
    cuda = _cuda_available() if device == "auto" else None  # what auto means here, from torch itself
    key = server_key(model, device, dtype, device_map, compile, cuda)
    server.socket_path(key)  # a cache folder that cannot be made fails here, before the model loads
    if cuda is not None and cuda != gpu_here():  # clients judge without torch (seconds): they would miss this one
        mine = "cuda" if cuda else "cpu"
        _warn(f"--device auto is {mine} here, which clients cannot tell without torch: ask with --device {mine}")
    with server.claim(key) as path:  # a second server with these settings is refused before its model loads
        lm = _load(model, device, dtype, quiet, device_map, threads, compile)
        server.run_server(lm, key, path, quiet)


def _cuda_available() -> bool:
    """Whether torch finds a CUDA GPU (imports torch: seconds)."""
    import torch

    return torch.cuda.is_available()


def _register_optional() -> None:
    """Subcommands that live in their own modules (cache, bench, eval, calibrate)."""
    from tmixcli import cli_cache

    app.add_typer(cli_cache.app, name="cache", help="List, inspect and remove cached KV files.")
    for module, name, attr in (("bench", "bench", "bench_command"), ("evaluate", "eval", "eval_command"),
                               ("calibrate", "calibrate", "calibrate_command")):
        try:
            mod = __import__(f"tmixcli.{module}", fromlist=[attr])
        except ImportError:
            continue
        if hasattr(mod, attr):
            app.command(name)(early.command(getattr(mod, attr)))


_register_optional()
early.imported()


def _usage_error_base() -> type[Exception]:
    """The class of click's usage errors as typer uses it (typer >= 0.2x vendors its own click)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _usage_line(err: Exception) -> str:
    """One line for a usage error: the message and where help is."""
    msg = " ".join(err.format_message().split())
    ctx = getattr(err, "ctx", None)
    return f"tmix: error: {msg}" + (f" (see '{ctx.command_path} --help')" if ctx is not None else "")


def _abort_writers() -> None:
    """A KV file still being written when the command ends (it failed after its prefill) is dropped, not left."""
    kvwrite = sys.modules.get("tmixcli.kvwrite")  # never imported (nor torch) by commands that wrote nothing
    if kvwrite is not None:
        kvwrite.abort_all()


def _say_interrupted() -> None:
    """'tmix: interrupted', saying why when it is the `tmix serve` answering this run that was stopped."""
    serve = sys.modules.get("tmixcli.serve")
    why = " (the tmix server was stopped)" if serve is not None and serve.served and serve.stopping() else ""
    print(f"\ntmix: interrupted{why}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point: TmixError -> one line on stderr and its exit code; never a traceback for user errors."""
    with stdout.dropping_stderr():  # status lines that cannot be written are dropped, the answer still comes
        _main(argv)


def _main(argv: list[str] | None) -> None:
    """main's work, with stderr already dropping what it cannot write."""
    try:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        stdout.tolerant_streams()
        _ARGV[:] = sys.argv[1:] if argv is None else list(argv)
        command = typer.main.get_command(app)
        try:
            with stdout.guarded():
                code = command.main(args=argv, prog_name="tmix", standalone_mode=False)
        finally:
            _abort_writers()
    except TmixError as err:
        print(f"tmix: error: {err}", file=sys.stderr)
        sys.exit(err.code)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        print("tmix: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        _say_interrupted()
        sys.exit(130)
    except stdout.OutputClosed as err:
        if err.why is None:  # the reader of our output left: end quietly, as on SIGPIPE
            sys.exit(141)
        print(f"tmix: error: cannot write to stdout: {err.why}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(141)
    except Exception as err:
        if not isinstance(err, _usage_error_base()):
            raise
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `tmix` or `tmix cache`: the help text
            err.show()
        else:
            print(_usage_line(err), file=sys.stderr)
        sys.exit(err.exit_code)
    if code == 130:  # typer turns Ctrl-C into a return value of 130, without a word
        _say_interrupted()
    sys.exit(code if isinstance(code, int) else 0)
