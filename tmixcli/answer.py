"""The ask/prefill/chat workflow: a prefilled document (from cache or fresh) and answers streamed against it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from tmixcli import attention, docindex, generate, kvread, kvstore, kvwrite, prompt, reuse, textcap
from tmixcli.config import AttentionConfig, Settings, default_start_layer
from tmixcli.documents import Document, joined_text, within_cap
from tmixcli.errors import TmixError
from tmixcli.kvcache import HEADROOM
from tmixcli.models import LoadedModel, layer_devices
from tmixcli.resident import ResidentKV


@dataclass
class Context:
    """A document's prefilled state: the cache holds exactly `prefix_ids` after every answer (unless history)."""

    lm: LoadedModel
    attn: AttentionConfig
    prefix_ids: list[int]
    cache: object
    doc_name: str
    system: str | None
    cache_hit: bool = False
    kv_path: Path | None = None
    kept_in_memory: bool = False  # the cache hit (or the reused rows) came from `tmix serve`'s memory, not from disk
    doc_unread: bool = False  # the documents were unchanged since their KV file was made, so not read again
    reused_rows: int = 0  # a fresh prefill that started from this many rows of another KV file (reuse.py)
    reused_from: Path | None = None
    recomputed: float | None = None  # a cache hit prefilled again because reading the file was slower (its prefill_s)
    prefill_s: float = 0.0
    start_layer_source: str = ""
    notes: list[str] = field(default_factory=list)
    pending_save: Callable[[], list[str]] | None = None
    unsaved: str = ""  # why a fresh prefill's KV file is not written: "over the cache cap", "cache folder unusable"

    def save(self) -> list[str]:
        """Complete the KV file of a fresh prefill (written meanwhile, so the first answer is not held up by the disk);
        returns status lines (files evicted to keep the cache under its cap, or why nothing was written)."""
        if self.pending_save is None:
            return []
        pending, self.pending_save = self.pending_save, None
        lines = pending()
        if self.kv_path is not None and not self.kv_path.is_file():
            self.kv_path = None  # over the cache cap: not written
        return lines


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    decode_tokens_per_s: float
    stop_reason: str = "end"  # end (a stop token), length (the token budget) or repeat (a loop was cut)
    ids: list[int] = field(default_factory=list)  # the answer's tokens (a cut loop's copies included)


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
            from tmixcli.calibrate import profile_label

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
    try:
        from tmixcli.calibrate import load_profile
    except ImportError:
        return None
    return load_profile(kvstore.model_fingerprint(lm.model, lm.tokenizer))


def context_limit(lm: LoadedModel) -> int:
    return int(getattr(lm.model.config, "max_position_embeddings", 0) or 1 << 30)


_NOT_USED = "cache file "  # starts the note of a KV file that failed its checks
_SAME_TEXT = "same text as "  # starts the note of a cache hit on a KV file made from a file of another name
QUESTION_ROOM = 64  # question tokens every document leaves room for (ask, chat and prefill alike)
ANSWER_ROOM = Settings.max_new_tokens  # answer tokens --truncate leaves at least, whatever --max-new-tokens says
MIN_DOC_ROOM = 64  # with less room than this left for the document, the error names what takes the rest
SHORT_TEXT = 16  # characters per context token below which a text is tokenized whole, without the text cap


def fit_document(lm: LoadedModel, doc: Document, s: Settings) -> tuple[list[int], list[str]]:
    """Prefix ids of the document; refuse (or with --truncate cut the end) when it does not fit the context.

    --truncate cuts to leave QUESTION_ROOM + max(ANSWER_ROOM, --max-new-tokens) tokens, so `prefill` and `ask`
    with any shorter --max-new-tokens cut a document alike and share its KV file. Several documents are cut to a
    fair share each: the short ones stay whole, the long ones lose their ends."""
    tok = lm.tokenizer
    limit = context_limit(lm)
    if len(doc.text) > SHORT_TEXT * limit:  # shorter texts are cheap to tokenize whole: no vocabulary scan for them
        doc = within_cap(doc, textcap.cap_of(limit, tok.get_vocab()), s.truncate)
    ids = prompt.prefix_ids(tok, doc.text, s.system)
    room = QUESTION_ROOM + (max(ANSWER_ROOM, s.max_new_tokens) if s.truncate else s.max_new_tokens)
    need = len(ids) + room
    if need <= limit:
        return ids, []
    fixed = len(prompt.prefix_ids(tok, "", s.system))  # the prompt without the document
    if limit - fixed - room < MIN_DOC_ROOM:
        raise TmixError(_crowded_out(lm, doc, s, len(ids), fixed, room))
    if not s.truncate:
        system = f" ({_system_tokens(lm, s)} of them the system prompt)" if s.system else ""
        longest = limit - len(ids) - QUESTION_ROOM  # the longest answer beside the whole document
        shorter = f", or --max-new-tokens {longest} or less" if longest > 0 else ""
        raise TmixError(f"{doc.name} needs {len(ids)} prompt tokens{system} + {QUESTION_ROOM} question + "
                        f"{s.max_new_tokens} answer = {need} tokens, over the model's {limit}; "
                        f"use --truncate to cut the document{shorter}")
    parts = doc.parts or (doc,)
    part_ids = [tok(p.text, add_special_tokens=False)["input_ids"] for p in parts]
    budget = sum(map(len, part_ids)) - (need - limit) - 8 * len(parts)
    while budget > 0:
        caps = fair_share([len(p) for p in part_ids], budget)
        texts = [tok.decode(p[:c]) for p, c in zip(part_ids, caps)]
        text = texts[0] if not doc.parts else joined_text([(p.name, t) for p, t in zip(parts, texts)])
        ids = prompt.prefix_ids(tok, text, s.system)
        if len(ids) + room <= limit:
            return ids, [f"truncated {p.name}: kept its first {c} of "
                         f"{f'more than {limit}' if p.partial else len(i)} tokens"
                         for p, i, c in zip(parts, part_ids, caps) if c < len(i)]
        budget -= 16
    raise TmixError(f"{doc.name} cannot be cut to fit: the model's {limit}-token context leaves it "
                    f"{limit - fixed - room} tokens after {_taken(lm, s, fixed, room)}")


def _system_tokens(lm: LoadedModel, s: Settings) -> int:
    """The tokens of --system itself (the chat template around it aside)."""
    return len(lm.tokenizer(s.system or "", add_special_tokens=False)["input_ids"])


def _taken(lm: LoadedModel, s: Settings, fixed: int, room: int) -> str:
    """What a prompt holds besides the document, in tokens: "prompt template 40 + system prompt 9000 + ..."."""
    system = _system_tokens(lm, s) if s.system else 0
    parts = [f"prompt template {fixed - system}"] + ([f"system prompt {system}"] if system else [])
    return " + ".join([*parts, f"question {QUESTION_ROOM}", f"answer {room - QUESTION_ROOM}"])


def _crowded_out(lm: LoadedModel, doc: Document, s: Settings, n_ids: int, fixed: int, room: int) -> str:
    """The error when the answer room (--max-new-tokens) or the system prompt leaves a document under MIN_DOC_ROOM
    tokens of the context: it names that culprit, the numbers and what to do."""
    limit = context_limit(lm)
    numbers = (f"{_taken(lm, s, fixed, room)} = {fixed + room} tokens of the model's {limit}-token context, "
               f"leaving {max(0, limit - fixed - room)} for {doc.name}")
    extra = room - QUESTION_ROOM - ANSWER_ROOM  # answer room asked for beyond the default
    if extra > 0 and limit - fixed - room + extra >= MIN_DOC_ROOM:
        whole = limit - n_ids - QUESTION_ROOM  # the longest answer beside the whole document
        keeps_all = whole > 0 and (whole >= ANSWER_ROOM or not s.truncate)
        hint = (f"{whole} or less to keep all of {doc.name}" if keeps_all else
                f"at most {limit - fixed - QUESTION_ROOM - MIN_DOC_ROOM}, with --truncate")
        return f"--max-new-tokens {s.max_new_tokens} is too large: {numbers}; use {hint}"
    if s.system:
        system = _system_tokens(lm, s)
        whole = limit - room - (n_ids - system)  # the longest system prompt beside the whole document
        hint = (f"to {whole} tokens or less to keep all of {doc.name}" if whole > 0 else
                f"to under {limit - room - (fixed - system) - MIN_DOC_ROOM} tokens, with --truncate")
        return f"the system prompt (--system) is too long: {numbers}; shorten it {hint}"
    return f"the model's context is too small for {doc.name}: {numbers}; use a shorter --max-new-tokens"


def fair_share(lengths: list[int], budget: int) -> list[int]:
    """Per-item caps summing to at most `budget`: items under an equal share keep all, the rest split what is left."""
    caps = [0] * len(lengths)
    left, todo = budget, sorted(range(len(lengths)), key=lengths.__getitem__)
    for k, i in enumerate(todo):
        caps[i] = min(lengths[i], left // (len(todo) - k))
        left -= caps[i]
    return caps


def _expected_meta(lm: LoadedModel, attn: AttentionConfig, s: Settings) -> dict[str, str]:
    """The fields a KV file must match. Not the document's bytes: files whose text is the same (a re-saved PDF, the
    .docx of a PDF) share one KV file, addressed and checked by its tokens."""
    meta = kvstore.build_meta(
        model_id=lm.model_id, fingerprint=kvstore.model_fingerprint(lm.model, lm.tokenizer), dtype=lm.dtype,
        attn=attn, doc_name="", doc_sha256="",
        template_hash=prompt.template_hash(lm.tokenizer, s.system), n_tokens=0)
    keep = set(kvstore.CHECKED_FIELDS) - {"doc_sha256"}
    return {k: v for k, v in meta.items() if k in keep}


def open_document(lm: LoadedModel, doc: Document, s: Settings, kv_out: Path | None = None,
                  resident: ResidentKV | None = None, ident: str | None = None) -> Context:
    """Prefilled state for a document: a cache hit loads the KV file (or takes it from `resident`), a miss
    prefills; the KV file of a miss (unless --no-cache) is written during the prefill and completed by
    `ctx.save()`, which callers run after the first answer. `ident` (docindex.identity of the files read)
    records which KV file they led to."""
    ctx = _open_document(lm, doc, s, kv_out, resident)
    if ident is not None and s.use_cache and kv_out is None and ctx.kv_path is not None:
        notes = [n for n in ctx.notes if not n.startswith((_NOT_USED, _SAME_TEXT))]  # about the documents only
        docindex.remember(ident, _index_key(lm, ctx.attn, s), ctx.kv_path, doc.name, doc.sha256, notes)
    return ctx


def open_known(lm: LoadedModel, ident: str, s: Settings, resident: ResidentKV | None = None) -> Context | None:
    """Prefilled state of documents unchanged since a run recorded them (docindex), loaded without reading
    them; None when nothing usable is recorded (then read them and call open_document)."""
    if not s.use_cache:
        return None
    attn, source = resolve_attention(lm, s)
    entry = docindex.lookup(ident, _index_key(lm, attn, s))
    path = kvstore.kv_dir(create=False) / entry["kv"] if entry else None
    if path is None or not path.is_file():
        return None
    try:
        n_tokens = _stored_tokens(kvstore.read_checked_meta(path))
    except TmixError:
        return None
    if not s.truncate and n_tokens + QUESTION_ROOM + s.max_new_tokens > context_limit(lm):
        return None  # read it again, so the usual "does not fit" error names the numbers
    check_question(lm, n_tokens, s)
    attention.attach(lm.model, attn)
    ctx = Context(lm, attn, [], None, entry["doc_name"], s.system, start_layer_source=source,
                  notes=[str(n) for n in entry["notes"]], doc_unread=True)
    try:
        _load_into(ctx, path, s, None, resident)
    except TmixError:
        return None
    ctx.doc_name = entry["doc_name"]
    return ctx


def _index_key(lm: LoadedModel, attn: AttentionConfig, s: Settings) -> str:
    room = QUESTION_ROOM + max(ANSWER_ROOM, s.max_new_tokens) if s.truncate else None
    return docindex.settings_key(kvstore.model_fingerprint(lm.model, lm.tokenizer), attn.to_dict(),
                                 prompt.template_hash(lm.tokenizer, s.system), room)


def _open_document(lm: LoadedModel, doc: Document, s: Settings, kv_out: Path | None,
                   resident: ResidentKV | None) -> Context:
    attn, source = resolve_attention(lm, s)
    cap = kvstore.cache_limit() if s.use_cache and kv_out is None else None  # the cache folder's (not an -o file's)
    ids, notes = fit_document(lm, doc, s)
    check_question(lm, len(ids), s)
    attention.attach(lm.model, attn)
    fp = kvstore.model_fingerprint(lm.model, lm.tokenizer)
    ctx = Context(lm, attn, ids, None, doc.name, s.system, start_layer_source=source, notes=[*doc.notes, *notes])
    path = kv_out or (_cache_path(ctx, s, kvstore.cache_key(fp, attn, ids)) if s.use_cache else None)
    if kv_out is None and path is not None and path.is_file():
        try:
            return _load_into(ctx, path, s, ids, resident)
        except TmixError as err:
            ctx.notes.append(f"{_NOT_USED}{path.name} not used ({err}); prefilling again")
    held = resident.take() if resident is not None else None  # its memory goes back before the prefill needs it
    start = _now(lm)
    base = _resident_rows(ctx, held, s) if s.use_cache and held is not None else None
    held = None  # unless it became `base`, the held cache is freed here, before a file is read or prefilled
    if base is None and s.use_cache:
        base = _reusable(ctx, s)
    save = path is not None
    meta = kvstore.build_meta(model_id=lm.model_id, fingerprint=fp, dtype=lm.dtype, attn=attn, doc_name=doc.name,
                              doc_sha256=doc.sha256, template_hash=prompt.template_hash(lm.tokenizer, s.system),
                              n_tokens=len(ids), system=s.system or "")
    if save and cap is not None and _planned_bytes(lm, len(ids)) > cap:
        over = (f"KV file not saved: its {kvstore.human_size(_planned_bytes(lm, len(ids)))} exceed the cache cap "
                f"TMIX_CACHE_MAX ({kvstore.human_size(cap)})")
        if s.kv_required:
            raise TmixError(f"{over}; raise the cap or write the file elsewhere with -o")
        ctx.notes.append(over)
        ctx.unsaved, save = "over the cache cap", False
    if save:
        save = _disk_has_room(ctx, path, meta, s)
    writer = _writer(lm, path, ids, meta, base) if save else None
    try:
        ctx.cache, _ = generate.prefill(lm.model, ids, chunk_size=s.chunk_size, progress=s.progress, cache=base,
                                        on_rows=writer.rows if writer is not None else None)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    ctx.prefill_s = _now(lm) - start
    if save:
        if base is None:  # what recomputing this file costs, so a slow disk can be skipped (_read_or_recompute)
            meta["prefill_s"], meta["prefill_device"] = f"{ctx.prefill_s:.3f}", _device_name(lm)
        if writer is not None:
            writer.finish({k: meta[k] for k in ("prefill_s", "prefill_device") if k in meta})
        ctx.pending_save = _saver(path, ctx.cache, ids, meta, cap, resident, writer)
        ctx.kv_path = path
    return ctx


def _cache_path(ctx: Context, s: Settings, key: str) -> Path | None:
    """The KV file `key` in the cache folder; None, with a note saying why, when that folder cannot be used (an error
    for `prefill`, whose product the file is)."""
    try:
        return kvstore.kv_path_for(key)
    except TmixError as err:
        if s.kv_required:
            raise TmixError(f"{err}; write the KV file elsewhere with -o") from None
        ctx.notes.append(f"KV file not saved: {err}")
        ctx.unsaved = "cache folder unusable"
        return None


def _planned_bytes(lm: LoadedModel, n_tokens: int) -> int:
    """The K/V bytes of this model's KV file for `n_tokens` (what the cache cap compares)."""
    n_layers, kv_heads, head_dim = kvstore.model_kv_dims(lm.model.config)
    return kvwrite.planned_size(n_layers, kv_heads, head_dim, lm.dtype, n_tokens)


def _disk_has_room(ctx: Context, path: Path, meta: dict, s: Settings) -> bool:
    """Whether the disk has room for the KV file a prefill is about to write, told before the prefill: short of it,
    `prefill` (whose product the file is) fails, `ask` and `chat` answer without saving, with a note."""
    n_layers, kv_heads, head_dim = kvstore.model_kv_dims(ctx.lm.model.config)
    size = kvwrite.file_size(n_layers, kv_heads, head_dim, ctx.lm.dtype, len(ctx.prefix_ids), meta)
    short = kvwrite.room_shortfall(path, size)
    if short is None:
        return True
    if s.kv_required:
        raise TmixError(f"not enough disk space for KV file {path} ({short}); {kvstore.room_hint(path)}")
    ctx.notes.append(f"KV file not saved: not enough disk space ({short})")
    ctx.unsaved = "not enough disk space"
    return False


def _writer(lm: LoadedModel, path: Path, ids: list[int], meta: dict, base: object | None) -> kvwrite.KVWriter:
    """A KV file writer fed by the prefill layer by layer (kvwrite.py), given the rows `base` already holds."""
    n_layers, kv_heads, head_dim = kvstore.model_kv_dims(lm.model.config)
    writer = kvwrite.KVWriter(path, n_layers, kv_heads, head_dim, lm.dtype, ids, meta)
    for i, layer in enumerate(base.layers if base is not None else []):
        writer.rows(i, layer.keys, layer.values, 0)
    return writer


def _resident_rows(ctx: Context, held: tuple, s: Settings) -> object | None:
    """`tmix serve`'s cache in memory as the first rows of this prefill, when it shares enough of the prompt (a
    document that grew since the last question): reuse.py's rule, without reading its file again."""
    path, cache, stored, meta = held
    try:
        kvstore.check_fields(meta, _expected_meta(ctx.lm, ctx.attn, s))
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
    expected = _expected_meta(lm, ctx.attn, s)
    found = reuse.best_file(ids, expected, ctx.attn)
    if found is None:
        return None
    path, rows = found
    try:
        cache, _, meta = kvstore.load_kv(path, layer_devices(lm.model) or lm.device, rows=rows,
                                         headroom=len(ids) - rows + HEADROOM)
        kvstore.check_kv({**meta, "n_tokens": str(rows)}, cache, expected, lm.model.config)
    except TmixError:
        return None
    ctx.reused_rows, ctx.reused_from = rows, path
    return cache


def _prefix_rows(cache: object, n: int) -> SimpleNamespace:
    """The cache's first n rows per layer, as kvstore reads them (views; sliding layers stay marked as such)."""
    return SimpleNamespace(layers=[SimpleNamespace(
        keys=None if x.keys is None else x.keys[..., :n, :], values=None if x.values is None else x.values[..., :n, :],
        is_sliding=bool(getattr(x, "is_sliding", False)) or "Sliding" in type(x).__name__) for x in cache.layers])


def _saver(path: Path, cache: object, ids: list[int], meta: dict, limit: int | None,
           resident: ResidentKV | None = None, writer: kvwrite.KVWriter | None = None) -> Callable[[], list[str]]:
    """Finish the KV file (wait for `writer`, or write the cache whole where the writer gave up), then evict least
    recently used files past `limit` (None: no cap, or not the cache dir); `tmix serve` keeps the cache in memory
    as that file's state (`resident`) while it holds only the prefix."""
    def save() -> list[str]:
        prefix = _prefix_rows(cache, len(ids))  # chat --keep-history may have grown the cache past the prefix
        size = kvstore.cache_bytes(prefix)
        if limit is not None and size > limit:
            if writer is not None:
                writer.abort()
            return [f"KV file not saved: its {kvstore.human_size(size)} exceed the cache cap TMIX_CACHE_MAX "
                    f"({kvstore.human_size(limit)})"]
        if writer is not None and writer.usable:
            writer.wait()
        else:
            kvstore.save_kv(path, prefix, ids, meta)
        if resident is not None and cache.get_seq_length() == len(ids):
            resident.put(path, cache, ids, kvstore.read_meta(path))
        gone, failed = kvstore.trim_cache(limit, keep=path)
        lines = [f"{kvstore.cannot_remove(failed)}; the cache stays over TMIX_CACHE_MAX"] if failed else []
        if not gone:
            return lines
        freed = kvstore.human_size(sum(e["size"] for e in gone))
        return [f"removed {len(gone)} least recently used KV files ({freed}) to stay under TMIX_CACHE_MAX "
                f"({kvstore.human_size(limit)})", *lines]
    return save


def _load_into(ctx: Context, path: Path, s: Settings, ids: list[int] | None,
               resident: ResidentKV | None = None) -> Context:
    lm = ctx.lm
    start = _now(lm)
    expected = _expected_meta(lm, ctx.attn, s)
    held = resident.get(path) if resident is not None else None
    if held is not None:
        cache, stored_ids, meta = held
        rewind(cache, len(stored_ids))  # an answer leaves the prefix behind; this only makes sure of it
    else:
        cache, stored_ids, meta = _read_or_recompute(ctx, path, s, expected, ids)
    kvstore.check_kv(meta, cache, expected, lm.model.config)
    if ids is not None:
        kvstore.check_prefix(stored_ids, ids)
    if resident is not None and held is None:
        resident.put(path, cache, stored_ids, meta)
    ctx.cache, ctx.prefix_ids, ctx.cache_hit, ctx.kv_path = cache, stored_ids, True, path
    ctx.kept_in_memory = held is not None
    ctx.prefill_s = _now(lm) - start
    stored = meta.get("doc_name", path.name)
    same = f"{_SAME_TEXT}{stored}, prefilled earlier: its KV file is used"
    if ctx.doc_name and stored != ctx.doc_name and same not in ctx.notes:  # say whose prefill this is, once
        ctx.notes.append(same)
    ctx.doc_name = ctx.doc_name or stored
    return ctx


RECOMPUTE_MARGIN = 1.15  # stop reading once the projected read time exceeds this x the file's recorded prefill
WARM_S, LOOK_S = 0.25, 1.0  # the read rate is measured from WARM_S (thread and buffer start-up left out) to LOOK_S


def _read_or_recompute(ctx: Context, path: Path, s: Settings, expected: dict[str, str],
                       ids: list[int] | None) -> tuple[object, list[int], dict[str, str]]:
    """Load a KV file; but when it comes off the disk so slowly that prefilling its ids again (timed when the file
    was made) would be faster, stop reading and recompute the same state (a 16 GiB file from a ~1.5 GB/s disk)."""
    lm = ctx.lm
    meta = kvstore.read_meta(path)
    try:
        made_in = float(meta.get("prefill_s", "nan"))
    except ValueError:
        made_in = float("nan")
    if meta.get("prefill_device") != _device_name(lm):
        made_in = float("nan")  # timed elsewhere (another GPU, or a GPU for a CPU run): no estimate here
    give_up, mark = None, []
    if made_in > 0:
        def give_up(done: int, total: int, elapsed: float) -> bool:
            if elapsed < WARM_S:
                return False
            if not mark:
                mark.extend((elapsed, done))
            if elapsed < LOOK_S:
                return False
            rate = (done - mark[1]) / max(elapsed - mark[0], 1e-9)  # bytes/s since WARM_S
            return rate <= 0 or elapsed + (total - done) / rate > RECOMPUTE_MARGIN * made_in
    try:
        return kvstore.load_kv(path, layer_devices(lm.model) or lm.device, give_up=give_up)
    except kvread.Abandoned:
        pass
    kvstore.check_fields(meta, expected)  # never recompute for a file that would be refused
    stored_ids = kvstore.read_prefix_ids(path)
    if ids is not None:
        kvstore.check_prefix(stored_ids, ids)
    cache, _ = generate.prefill(lm.model, stored_ids, chunk_size=s.chunk_size, progress=s.progress)
    ctx.recomputed = made_in
    return cache, stored_ids, meta


def _device_name(lm: LoadedModel) -> str:
    """What a recorded prefill time was measured on: the GPU's name, or "cpu"."""
    dev = torch.device(lm.device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


def open_kv(lm: LoadedModel, path: Path, s: Settings, resident: ResidentKV | None = None) -> Context:
    """Prefilled state from a KV file alone (no document); the attention settings and system prompt left unset take
    the file's values (kvstore.settings_for)."""
    meta = kvstore.read_checked_meta(path)
    s = kvstore.settings_for(meta, s)
    attn, _ = resolve_attention(lm, s)
    attention.attach(lm.model, attn)
    check_question(lm, _stored_tokens(meta), s)
    ctx = Context(lm, attn, [], None, meta.get("doc_name", path.name), s.system, start_layer_source="KV file")
    return _load_into(ctx, path, s, None, resident)


def _stored_tokens(meta: dict[str, str]) -> int:
    """The prefix tokens a KV file's metadata records (0 when damaged: loading it then says what is wrong)."""
    try:
        return max(0, int(meta.get("n_tokens", "0")))
    except ValueError:
        return 0


def rewind(cache: object, length: int) -> None:
    """Drop everything after the first `length` positions (the document prefix) from every layer."""
    for layer in cache.layers:
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]


def ask(ctx: Context, question: str, s: Settings, on_text: Callable[[str], None] | None = None,
        keep: bool = False) -> Answer:
    """Answer one question on top of the document's state; the cache is rewound afterwards unless `keep`."""
    return ask_ids(ctx, prompt.question_ids(ctx.lm.tokenizer, question, ctx.system), s, on_text, keep)


def ask_ids(ctx: Context, q_ids: list[int], s: Settings, on_text: Callable[[str], None] | None = None,
            keep: bool = False) -> Answer:
    """Run question ids on top of the cache and stream the answer; rewinds the cache unless `keep`."""
    lm = ctx.lm
    base = ctx.cache.get_seq_length()
    if base + len(q_ids) + 1 > context_limit(lm):
        before = "document prompt" if base == len(ctx.prefix_ids) else "document prompt and conversation"
        raise TmixError(_question_too_long(lm, base, len(q_ids), s, before))
    budget = min(s.max_new_tokens, context_limit(lm) - base - len(q_ids))
    stops = generate.stop_ids(lm.tokenizer, lm.model)
    start = _now(lm)
    first: list[float] = []
    tokens = generate.generate_ids(lm.model, ctx.cache, q_ids, stops, budget, s.temperature, s.top_p, s.seed,
                                   on_first=lambda: first.append(_now(lm)))
    pieces: list[str] = []
    tokens = _explained(ctx, tokens)
    ids: list[int] = []
    cut = 0
    stream = generate.stream_text(lm.tokenizer, _record(tokens, ids))
    try:
        for piece in stream:
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)
            # a word ends only at whitespace, so only then can the check's answer change
            if s.stop_repeats and any(c.isspace() for c in piece) and (cut := generate.repeated_tail("".join(pieces))):
                break
    except BaseException:  # Ctrl-C in chat: an interrupted turn is dropped, never half kept in the history
        keep = False
        raise
    finally:
        stream.close()
        tokens.close()
        if not keep:
            rewind(ctx.cache, base)
    text = "".join(pieces)
    kept = _tokens_for(lm.tokenizer, ids, cut) if cut else ids
    if keep:
        _close_turn(lm, ctx.cache, base + len(q_ids), kept)
    end = _now(lm)
    ttft = (first[0] if first else end) - start
    n = len(ids)
    rate = (n - 1) / (end - first[0]) if first and n > 1 and end > first[0] else 0.0
    reason = "repeat" if cut else "length" if n >= budget else "end"
    if cut and on_text is None:  # nothing was shown yet: drop the repeated copies
        text = text[:cut]
    return Answer(text, base + len(q_ids), n, ttft, rate, reason, ids)


def _explained(ctx: Context, tokens: Iterator[int]) -> Iterator[int]:
    """Pass the tokens on; non-numbers from the model say which input is at fault (a damaged cache file is removed)."""
    try:
        yield from tokens
    except generate.NonFiniteOutput as err:
        if not ctx.cache_hit or ctx.kv_path is None:
            raise TmixError(f"{err}: the model overflows in {str(ctx.lm.dtype).removeprefix('torch.')} on this "
                            "input; try another --dtype (fp32, or bf16 on a GPU)") from None
        if ctx.kv_path.parent == kvstore.kv_dir() and not ctx.kept_in_memory:
            ctx.kv_path.unlink(missing_ok=True)
            raise TmixError(f"{err}: the cached KV file {ctx.kv_path.name} is damaged; removed it, so the next run "
                            "prefills again") from None
        raise TmixError(f"{err}: the KV file {ctx.kv_path} is damaged; make it again with tmix prefill") from None


def check_question(lm: LoadedModel, n_prefix: int, s: Settings) -> None:
    """Refuse `ask`'s question (`s.question`) when it leaves no room for an answer after the `n_prefix`-token
    document prompt: told before a prefill or a KV file load, not after."""
    if s.question is None:
        return
    n_question = len(prompt.question_ids(lm.tokenizer, s.question, s.system))
    if n_prefix + n_question + 1 > context_limit(lm):
        raise TmixError(_question_too_long(lm, n_prefix, n_question, s))


def _question_too_long(lm: LoadedModel, base: int, n_question: int, s: Settings,
                       before: str = "document prompt") -> str:
    """The error for a question that leaves no room for an answer: its tokens, what comes before it, the context."""
    limit = context_limit(lm)
    room = limit - base - s.max_new_tokens
    hint = (f"shorten it to {room} tokens or less (room for a {s.max_new_tokens}-token answer)" if room > 0
            else "shorten it")
    return (f"the question does not fit: {n_question} tokens after the {base}-token {before} exceed the model's "
            f"{limit}-token context; {hint}")


def _close_turn(lm: LoadedModel, cache: object, answer_start: int, kept: list[int]) -> None:
    """Leave exactly `kept` answer tokens in a kept cache: one copy of a cut loop, a last token never fed."""
    want = answer_start + len(kept)
    have = cache.get_seq_length()
    if have > want:
        rewind(cache, want)
    elif have < want:
        generate.extend(lm.model, cache, kept[have - answer_start:])


def _tokens_for(tokenizer, ids: list[int], chars: int) -> list[int]:
    """The shortest prefix of `ids` whose text reaches `chars` characters."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= chars:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo]


def _record(tokens, ids: list[int]):
    """Pass tokens on, keeping them in `ids`."""
    for tok in tokens:
        ids.append(tok)
        yield tok


def _now(lm: LoadedModel) -> float:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    return time.perf_counter()
