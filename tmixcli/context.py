"""A document's prefilled state (Context), and loading it from a KV file, or prefilling its ids again where
reading the file would be slower."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tmixcli import generate, kvheader, kvread, kvstore, prompt
from tmixcli.config import AttentionConfig, Settings
from tmixcli.models import LoadedModel, layer_devices
from tmixcli.resident import ResidentKV

SAME_TEXT = "same text as "  # starts the note of a cache hit on a KV file made from a file of another name


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
    kv_notes: list[str] = field(default_factory=list)  # why a fresh prefill's KV file is not saved, known before it
    notes_said: int | None = None  # once the tokens line was said before the load or prefill: the notes said with it
    pending_save: Callable[[], list[str]] | None = None
    unsaved: str = ""  # the same in short for the cache miss line: "over the cache cap", "cache folder not writable"

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


def rewind(cache: object, length: int) -> None:
    """Drop everything after the first `length` positions (the document prefix) from every layer."""
    for layer in cache.layers:
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]


def now(lm: LoadedModel) -> float:
    """perf_counter() once the model's device has finished its queued work."""
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    return time.perf_counter()


def expected_meta(lm: LoadedModel, attn: AttentionConfig, s: Settings) -> dict[str, str]:
    """The fields a KV file must match. Not the document's bytes: files whose text is the same (a re-saved PDF, the
    .docx of a PDF) share one KV file, addressed and checked by its tokens."""
    meta = kvstore.build_meta(
        model_id=lm.model_id, fingerprint=kvstore.model_fingerprint(lm.model, lm.tokenizer), dtype=lm.dtype,
        attn=attn, doc_name="", doc_sha256="",
        template_hash=prompt.template_hash(lm.tokenizer, s.system), n_tokens=0)
    keep = set(kvstore.CHECKED_FIELDS) - {"doc_sha256"}
    return {k: v for k, v in meta.items() if k in keep}


def load_into(ctx: Context, path: Path, s: Settings, ids: list[int] | None,
              resident: ResidentKV | None = None) -> Context:
    """Fill `ctx` from the KV file at `path` (or `resident`'s copy of it), checked against the settings and `ids`."""
    lm = ctx.lm
    start = now(lm)
    expected = expected_meta(lm, ctx.attn, s)
    held = resident.get(path) if resident is not None else None
    if held is not None:
        cache, stored_ids, meta = held
        rewind(cache, len(stored_ids))  # an answer leaves the prefix behind; this only makes sure of it
    else:
        cache, stored_ids, meta = read_or_recompute(ctx, path, s, expected, ids)
    kvstore.check_kv(meta, cache, expected, lm.model.config, lm.model_id)
    if ids is not None:
        kvstore.check_prefix_ids(stored_ids, ids)
    if resident is not None and held is None:
        resident.put(path, cache, stored_ids, meta)
    ctx.cache, ctx.prefix_ids, ctx.cache_hit, ctx.kv_path = cache, stored_ids, True, path
    ctx.kept_in_memory = held is not None
    ctx.prefill_s = now(lm) - start
    stored = meta.get("doc_name", path.name)
    same = f"{SAME_TEXT}{stored}, prefilled earlier: its KV file is used"
    if ctx.doc_name and stored != ctx.doc_name and same not in ctx.notes:  # say whose prefill this is, once
        ctx.notes.append(same)
    ctx.doc_name = ctx.doc_name or stored
    return ctx


RECOMPUTE_MARGIN = 1.15  # stop reading once the projected read time exceeds this x the file's recorded prefill
WARM_S, LOOK_S = 0.25, 1.0  # the read rate is measured from WARM_S (thread and buffer start-up left out) to LOOK_S


def read_or_recompute(ctx: Context, path: Path, s: Settings, expected: dict[str, str],
                      ids: list[int] | None) -> tuple[object, list[int], dict[str, str]]:
    """Load a KV file; but when it comes off the disk so slowly that prefilling its ids again (timed when the file
    was made) would be faster, stop reading and recompute the same state (a 16 GiB file from a ~1.5 GB/s disk)."""
    lm = ctx.lm
    meta = kvheader.read_meta(path)
    try:
        made_in = float(meta.get("prefill_s", "nan"))
    except ValueError:
        made_in = float("nan")
    if meta.get("prefill_device") != timing_device(lm):
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
        return kvread.load_kv(path, layer_devices(lm.model) or lm.device, give_up=give_up)
    except kvread.Abandoned:
        pass
    kvstore.check_fields(meta, expected, lm.model_id)  # never recompute for a file that would be refused
    stored_ids = kvheader.read_prefix_ids(path)
    if ids is not None:
        kvstore.check_prefix_ids(stored_ids, ids)
    cache, _ = generate.prefill(lm.model, stored_ids, chunk_size=s.chunk_size, progress=s.progress)
    ctx.recomputed = made_in
    return cache, stored_ids, meta


def timing_device(lm: LoadedModel) -> str:
    """What a recorded prefill time was measured on: the GPU's name, or "cpu"."""
    dev = torch.device(lm.device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


def stored_tokens(meta: dict[str, str]) -> int:
    """The prefix tokens a KV file's metadata records (0 when damaged: loading it then says what is wrong)."""
    try:
        return max(0, int(meta.get("n_tokens", "0")))
    except ValueError:
        return 0
