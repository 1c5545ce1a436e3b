"""A fresh prefill's KV file: planned before the prefill (the cache cap, disk room, its writer started), so a file
that cannot be saved is told first; completed after the first answer (ctx.pending_save)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from tmixcli import diskerrors, kvfolder, kvheader, kvstore, kvwrite
from tmixcli.config import Settings
from tmixcli.context import Context, timing_device
from tmixcli.errors import TmixError
from tmixcli.models import LoadedModel
from tmixcli.resident import ResidentKV
from tmixcli.sizes import count, human_size


def plan_save(ctx: Context, s: Settings, path: Path, meta: dict, cap: int | None,
              in_cache: bool) -> kvwrite.KVWriter | None:
    """The started writer of the KV file this prefill makes at `path`; None, said before the prefill (an error for
    `prefill`), when it exceeds the cache cap `cap`, the disk has no room for it or its folder refuses it."""
    lm, n_tokens = ctx.lm, len(ctx.prefix_ids)
    if cap is not None and _planned_bytes(lm, n_tokens) > cap:
        over = f"its {human_size(_planned_bytes(lm, n_tokens))} exceed the cache cap TMIX_CACHE_MAX ({human_size(cap)})"
        _unsaved(ctx, s, over, f"KV file not saved: {over}; raise the cap or write the file elsewhere with -o",
                 "over the cache cap")
        return None
    if not _disk_has_room(ctx, path, meta, s):
        return None
    writer = _writer(lm, path, ctx.prefix_ids, meta)
    if writer.error is not None:  # its folder refused the file: told now, not after the answer
        _cannot_start(ctx, writer, s, in_cache)
        return None
    return writer


def finish_save(ctx: Context, writer: kvwrite.KVWriter, meta: dict, cap: int | None,
                resident: ResidentKV | None) -> None:
    """The prefill is done: `writer` completes the file in the background, `ctx.save()` waits for it (or writes the
    cache whole) and trims the cache to `cap`."""
    if not ctx.reused_rows:  # what recomputing this file costs, so a slow disk can be skipped (read_or_recompute)
        meta["prefill_s"], meta["prefill_device"] = f"{ctx.prefill_s:.3f}", timing_device(ctx.lm)
    writer.finish({k: meta[k] for k in ("prefill_s", "prefill_device") if k in meta})
    ctx.pending_save = _saver(writer.path, ctx.cache, ctx.prefix_ids, meta, cap, resident, writer)
    ctx.kv_path = writer.path


def cache_path(ctx: Context, s: Settings, key: str) -> Path | None:
    """The KV file `key` in the cache folder; None, with a note saying why, when that folder cannot be used (an error
    for `prefill`, whose product the file is)."""
    try:
        return kvfolder.kv_path_for(key)
    except TmixError as err:
        _unsaved(ctx, s, str(err), f"{err}; write the KV file elsewhere with -o", "cache folder unusable")
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
    said, missing = short
    _unsaved(ctx, s, f"not enough disk space ({said})",
             f"not enough disk space for KV file {path} ({said}); {kvfolder.room_hint(path, missing)}",
             "not enough disk space", code=1)
    return False


def _cannot_start(ctx: Context, writer: kvwrite.KVWriter, s: Settings, in_cache: bool) -> None:
    """A writer that could not even start its file (a read-only or unwritable folder, a full disk, a file-size
    limit): said before the prefill, as a disk short of room is, never as a file being saved."""
    writer.abort()
    failed = kvwrite.write_error(writer.path, writer.error, writer.size)
    err, code = str(failed), failed.code if isinstance(failed, TmixError) else 2
    elsewhere = "; write the KV file elsewhere with -o" if in_cache and diskerrors.elsewhere_helps(writer.error) else ""
    _unsaved(ctx, s, err, f"{err}{elsewhere}", _short_reason(writer.error), code)


def _short_reason(err: BaseException | None) -> str:
    """What the cache miss line says of a KV file that could not be started: "not enough disk space", "cache folder
    not writable" where that is so, else the system's words in lower case ("file too large")."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return "not enough disk space"
    if diskerrors.elsewhere_helps(err) or not isinstance(err, OSError) or not err.strerror:
        return "cache folder not writable"
    return err.strerror[:1].lower() + err.strerror[1:]


def _unsaved(ctx: Context, s: Settings, why: str, error: str, short: str, code: int = 2) -> None:
    """A KV file this prefill will not write, known before it: `error` (exit `code`) for `prefill`, whose product the
    file is; `ask` and `chat` answer anyway, with the note "KV file not saved: `why`" and `short` on the cache miss
    line."""
    if s.kv_required:
        raise TmixError(error, code)
    ctx.kv_notes.append(f"KV file not saved: {why}")
    ctx.unsaved = short


def _writer(lm: LoadedModel, path: Path, ids: list[int], meta: dict) -> kvwrite.KVWriter:
    """A KV file writer fed layer by layer (kvwrite.py): reused rows first, then the prefill's."""
    n_layers, kv_heads, head_dim = kvstore.model_kv_dims(lm.model.config)
    return kvwrite.KVWriter(path, n_layers, kv_heads, head_dim, lm.dtype, ids, meta)


def _prefix_rows(cache: object, n: int) -> SimpleNamespace:
    """The cache's first n rows per layer, as kvread.load_kv reads them (views; sliding layers stay marked as such)."""
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
        size = kvwrite.cache_bytes(prefix)
        if limit is not None and size > limit:
            if writer is not None:
                writer.abort()
            return [f"KV file not saved: its {human_size(size)} exceed the cache cap TMIX_CACHE_MAX "
                    f"({human_size(limit)})"]
        if writer is not None and writer.usable:
            writer.wait()
        else:
            kvwrite.save_kv(path, prefix, ids, meta)
        if resident is not None and cache.get_seq_length() == len(ids):
            resident.put(path, cache, ids, kvheader.read_meta(path))
        gone, failed = kvfolder.trim_cache(limit, keep=path)
        lines = [f"{kvfolder.cannot_remove(failed)}; the cache stays over TMIX_CACHE_MAX"] if failed else []
        if not gone:
            return lines
        freed = human_size(sum(e["size"] for e in gone))
        removed = count(len(gone), "least recently used KV file")
        return [f"removed {removed} ({freed}) to stay under TMIX_CACHE_MAX ({human_size(limit)})", *lines]
    return save

