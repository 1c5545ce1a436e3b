"""Opening documents (or a KV file) as a Context: a cache hit, rows reused from another KV file, or a fresh
prefill whose KV file is written meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tmixcli import (attention, docindex, generate, kvfolder, kvheader, kvread, kvsave, kvstore, kvwait, kvwrite, oom,
                     prompt, reuse)
from tmixcli.config import AttentionConfig, Settings, default_start_layer
from tmixcli.context import SAME_TEXT, Context, expected_meta, load_into, now, rewind, stored_tokens
from tmixcli.documents import Document
from tmixcli.errors import TmixError
from tmixcli.fit import check_prefix, check_question, fit_document, reserved_room
from tmixcli.kvcache import HEADROOM
from tmixcli.models import LoadedModel, layer_devices
from tmixcli.resident import ResidentKV

_NOT_USED = "cache file "  # starts the note of a KV file that failed its checks
Announce = Callable[[Context, int], None]  # told the prompt's token count before a KV file is read or a prefill runs
WAITING = "another tmix is prefilling this document; waiting for its KV file"


def resolve_attention(lm: LoadedModel, s: Settings) -> tuple[AttentionConfig, str]:
    """The attention settings and where the start layer came from (flag, calibrated profile, paper default)."""
    cfg = lm.model.config
    n_layers = cfg.num_hidden_layers
    if s.start_layer is not None:
        start, source = s.start_layer, "--start-layer"
    else:
        start, source = default_start_layer(cfg.model_type, n_layers), "default"
        profile = _profile(lm)
        if profile is not None:
            start = int(profile["start_layer"])
            from tmixcli.calib_profile import profile_label

            source = profile_label(profile)
    base = AttentionConfig()
    method = s.method or base.method
    if method == "trimix" and start > n_layers:
        raise TmixError(f"--start-layer {start} is past the model's {n_layers} layers")
    if method == "dense":  # the triangle's settings mean nothing here: one dense KV file whatever they are
        return AttentionConfig(method="dense", start_layer=0), source
    try:
        attn = AttentionConfig(method=method, n_init=_or(s.n_init, base.n_init), n_local=_or(s.n_local, base.n_local),
                               last_n=_or(s.last_n, base.last_n), start_layer=start)
    except ValueError as err:
        raise TmixError(str(err)) from None
    return attn, source


def _or(value: int | None, default: int) -> int:
    """`value`, or `default` where it was left unset."""
    return default if value is None else value


def _profile(lm: LoadedModel) -> dict | None:
    """The calibration profile saved or shipped for this very model, if there is one."""
    from tmixcli.calib_profile import load_profile

    return load_profile(kvstore.model_fingerprint(lm.model, lm.tokenizer))


def open_document(lm: LoadedModel, doc: Document, s: Settings, kv_out: Path | None = None,
                  resident: ResidentKV | None = None, ident: docindex.Identity | None = None,
                  announce: Announce | None = None, say: Callable[[str], None] | None = None) -> Context:
    """Prefilled state for a document: a cache hit loads the KV file (or takes it from `resident`), a miss
    prefills; the KV file of a miss (unless --no-cache) is written during the prefill and completed by
    `ctx.save()`, which callers run after the first answer. `ident` (docindex.identity of the files read)
    records which KV file they led to; `announce` is told the prompt's tokens before the load or prefill; `say`
    the line that this run waits for another tmix writing the same KV file."""
    ctx = _open_document(lm, doc, s, kv_out, resident, announce, say)
    if ident is not None and s.use_cache and kv_out is None and ctx.kv_path is not None:
        notes = [n for n in ctx.notes if not n.startswith((_NOT_USED, SAME_TEXT, prompt.PLAIN_NOTE))]  # documents'
        docindex.remember(ident, _index_key(lm, ctx.attn, s), ctx.kv_path, doc.name, doc.sha256, notes)
    return ctx


def open_known(lm: LoadedModel, ident: docindex.Identity, s: Settings, resident: ResidentKV | None = None,
               announce: Announce | None = None) -> Context | None:
    """Prefilled state of documents unchanged since a run recorded them (docindex), loaded without reading
    them; None when nothing usable is recorded (then read them and call open_document)."""
    if not s.use_cache:
        return None
    attn, source = resolve_attention(lm, s)
    entry = docindex.lookup(ident, _index_key(lm, attn, s))
    path = kvfolder.kv_dir(create=False) / entry["kv"] if entry else None
    if path is None or not path.is_file():
        return None
    try:
        n_tokens = stored_tokens(kvheader.read_checked_meta(path))
        fp = kvstore.model_fingerprint(lm.model, lm.tokenizer)
        if kvstore.cache_key(fp, attn, kvheader.read_prefix_ids(path)) != path.stem:
            return None  # not the prefix its name addresses (a KV file copied under another key): read the documents
    except TmixError:
        return None
    if not s.truncate:
        try:
            check_prefix(lm, n_tokens, entry["doc_name"], s)
        except TmixError:
            return None  # read them again, so the usual "does not fit" error names the numbers
    check_question(lm, n_tokens, s)
    attention.attach(lm.model, attn)
    ctx = Context(lm, attn, [], None, entry["doc_name"], s.system, start_layer_source=source,
                  notes=[*prompt.plain_notes(lm.tokenizer), *map(str, entry["notes"])], doc_unread=True)
    if announce is not None:
        announce(ctx, n_tokens)
    try:
        load_into(ctx, path, s, None, resident)
    except TmixError:
        return None
    ctx.doc_name = entry["doc_name"]
    return ctx


def open_kv(lm: LoadedModel, path: Path, s: Settings, resident: ResidentKV | None = None,
            announce: Announce | None = None) -> Context:
    """Prefilled state from a KV file alone (no document); the attention settings and system prompt left unset take
    the file's values (kvstore.settings_for)."""
    meta = kvheader.read_checked_meta(path)
    s = kvstore.settings_for(meta, s)
    attn, _ = resolve_attention(lm, s)
    attention.attach(lm.model, attn)
    name = meta.get("doc_name", path.name)
    check_prefix(lm, stored_tokens(meta), name, s)
    check_question(lm, stored_tokens(meta), s)
    ctx = Context(lm, attn, [], None, name, s.system, start_layer_source="KV file",
                  notes=prompt.plain_notes(lm.tokenizer))
    if announce is not None:
        announce(ctx, stored_tokens(meta))
    return load_into(ctx, path, s, None, resident)


def _index_key(lm: LoadedModel, attn: AttentionConfig, s: Settings) -> str:
    """The document index's key for these settings; with --truncate, also the room its cut left (fit_document)."""
    room = reserved_room(lm, s) if s.truncate else None
    return docindex.settings_key(kvstore.model_fingerprint(lm.model, lm.tokenizer), attn.to_dict(),
                                 prompt.template_hash(lm.tokenizer, s.system), room)


def _open_document(lm: LoadedModel, doc: Document, s: Settings, kv_out: Path | None,
                   resident: ResidentKV | None, announce: Announce | None,
                   say: Callable[[str], None] | None) -> Context:
    """open_document's context: the cache hit, or the prefill with its KV file planned first."""
    attn, source = resolve_attention(lm, s)
    cap = kvfolder.cache_limit() if s.use_cache and kv_out is None else None  # the cache folder's (not an -o file's)
    ids, notes = fit_document(lm, doc, s)
    check_question(lm, len(ids), s)
    attention.attach(lm.model, attn)
    fp = kvstore.model_fingerprint(lm.model, lm.tokenizer)
    ctx = Context(lm, attn, ids, None, doc.name, s.system, start_layer_source=source,
                  notes=[*prompt.plain_notes(lm.tokenizer), *doc.notes, *notes])
    path = kv_out or (kvsave.cache_path(ctx, s, kvstore.cache_key(fp, attn, ids)) if s.use_cache else None)
    if kv_out is None and path is not None:
        hit = _try_hit(ctx, path, s, resident, announce, say)
        if hit is not None:
            return hit
    meta = kvstore.build_meta(model_id=lm.model_id, fingerprint=fp, dtype=lm.dtype, attn=attn, doc_name=doc.name,
                              doc_sha256=doc.sha256, template_hash=prompt.template_hash(lm.tokenizer, s.system),
                              n_tokens=len(ids), system=s.system or "")
    writer = kvsave.plan_save(ctx, s, path, meta, cap, in_cache=kv_out is None) if path is not None else None
    _prefill(ctx, s, writer, resident, announce)
    if writer is not None:
        kvsave.finish_save(ctx, writer, meta, cap, resident)
    return ctx


def _try_hit(ctx: Context, path: Path, s: Settings, resident: ResidentKV | None, announce: Announce | None,
             say: Callable[[str], None] | None) -> Context | None:
    """The cached KV file at `path` loaded, once another tmix still writing it is done; None when there is none,
    or, with a note saying why, when it failed its checks: then this run prefills."""
    if not path.is_file():
        _wait_for_writer(ctx, path, announce, say)
    if not path.is_file():
        return None
    if announce is not None:
        announce(ctx, len(ctx.prefix_ids))
    try:
        return load_into(ctx, path, s, ctx.prefix_ids, resident)
    except TmixError as err:
        why = kvstore.refusal_facts(str(err))  # no advice to re-run tmix prefill: that is done here
        ctx.notes.append(f"{_NOT_USED}{path.name} not used ({why}); prefilling again")
        return None


def _prefill(ctx: Context, s: Settings, writer: kvwrite.KVWriter | None, resident: ResidentKV | None,
             announce: Announce | None) -> None:
    """Prefill the prompt into ctx.cache, from the rows `tmix serve`'s memory or a cached KV file holds where they
    share enough of it, feeding `writer` as rows come; any error (Ctrl-C included) aborts the writer."""
    lm, ids = ctx.lm, ctx.prefix_ids
    try:
        if announce is not None:  # every refusal is said by now: the tokens line comes before rows are read or run
            announce(ctx, len(ids))
        held = resident.take() if resident is not None else None  # its memory goes back before the prefill needs it
        start = now(lm)
        base = _resident_rows(ctx, held, s) if s.use_cache and held is not None else None
        held = None  # unless it became `base`, the held cache is freed here, before a file is read or prefilled
        if base is None and s.use_cache:
            base = _reusable(ctx, s)
        for i, layer in enumerate(base.layers if base is not None and writer is not None else []):
            writer.rows(i, layer.keys, layer.values, 0)  # the rows `base` already holds
        with oom.step("prefilling the document", oom.DOCUMENT_ADVICE, f"{len(ids)} tokens"):
            ctx.cache, _ = generate.prefill(lm.model, ids, chunk_size=s.chunk_size, progress=s.progress, cache=base,
                                            on_rows=writer.rows if writer is not None else None)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    ctx.prefill_s = now(lm) - start


def _wait_for_writer(ctx: Context, path: Path, announce: Announce | None, say: Callable[[str], None] | None) -> None:
    """Another tmix prefilling this very prompt into `path` now: wait for its KV file rather than prefill it twice
    (it is then loaded as a cache hit; a writer that died or gave up leaves none, and this run prefills, as it does,
    saying so, when that writer is stopped or stalled)."""
    def waiting() -> None:
        if announce is not None:
            announce(ctx, len(ctx.prefix_ids))
        if say is not None:
            say(WAITING)
    why = kvwait.wait_for_writer(path, waiting)
    if why is not None and say is not None:
        say(why)


def _resident_rows(ctx: Context, held: tuple, s: Settings) -> object | None:
    """`tmix serve`'s cache in memory as the first rows of this prefill, when it shares enough of the prompt (a
    document that grew since the last question): reuse.py's rule, without reading its file again."""
    path, cache, stored, meta = held
    try:
        kvstore.check_fields(meta, expected_meta(ctx.lm, ctx.attn, s))
    except TmixError:
        return None
    rows = reuse.usable_rows(reuse.shared_len(stored, ctx.prefix_ids), len(stored), len(ctx.prefix_ids), ctx.attn)
    if rows < reuse.MIN_ROWS:
        return None
    rewind(cache, rows)  # the prefill appends after them, in place (GrowingLayer regrows when it must)
    ctx.reused_rows, ctx.reused_from, ctx.kept_in_memory = rows, path, True
    return cache


def _reusable(ctx: Context, s: Settings) -> object | None:
    """The first rows of a cached KV file that this prefix starts with (reuse.py), loaded with room for the
    rest; None when no file shares enough of it."""
    lm, ids = ctx.lm, ctx.prefix_ids
    expected = expected_meta(lm, ctx.attn, s)
    found = reuse.best_file(ids, expected, ctx.attn)
    if found is None:
        return None
    path, rows = found
    try:
        cache, _, meta = kvread.load_kv(path, layer_devices(lm.model) or lm.device, rows=rows,
                                         headroom=len(ids) - rows + HEADROOM)
        kvstore.check_kv({**meta, "n_tokens": str(rows)}, cache, expected, lm.model.config)
    except TmixError:
        return None
    ctx.reused_rows, ctx.reused_from = rows, path
    return cache
