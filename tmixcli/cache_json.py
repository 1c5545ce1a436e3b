"""`tmix cache ls --json` and `cache info --json`: a KV file told in the words of `ask --json` and `prefill --json`
(model, tokens, bytes, kv_path, attention with all_layers_dense), and `ls`'s short form of its attention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tmixcli.config import AttentionConfig, all_layers_dense, no_triangle_note
from tmixcli.filekind import absolute
from tmixcli.kvfolder import TempFile
from tmixcli.kvheader import as_int

TRIANGLE_FIELDS = ("start_layer", "n_init", "n_local", "last_n")


def attention_of(meta: dict[str, str]) -> tuple[dict | None, str]:
    """The attention settings a KV file was made with, with all_layers_dense where they are known, and `ls`'s short
    form: "dense", or "tri@15 8/512/128" (start layer, n_init/n_local/last_n), "(dense)" added where every layer
    attended densely (a start past the model's layers, a prompt within n_init + n_local + last_n)."""
    attn = {k.removeprefix("attn_"): int(v) if v.isdigit() else v for k, v in meta.items() if k.startswith("attn_")}
    if attn.get("method") == "dense":
        return {**attn, "all_layers_dense": True}, "dense"
    try:
        config = AttentionConfig(**{k: attn[k] for k in TRIANGLE_FIELDS}) if attn.get("method") == "trimix" else None
    except (KeyError, TypeError, ValueError):
        config = None
    if config is None:  # an older or damaged file: its fields as they are, if any
        return attn or None, "-"
    layers, tokens = as_int(meta.get("num_layers", "")), _tokens(meta)
    depth = layers if layers >= 0 else None
    if tokens is None:  # a prompt of unknown length: dense only where no layer reaches the start
        dense = no_triangle_note(config, depth) is not None
    else:
        dense = all_layers_dense(config, depth, tokens)
    label = f"tri@{config.start_layer} {config.n_init}/{config.n_local}/{config.last_n}" + (" (dense)" if dense else "")
    return {**attn, "all_layers_dense": dense}, label


def _tokens(meta: dict[str, str]) -> int | None:
    n = as_int(meta.get("n_tokens", ""))
    return n if n >= 0 else None


def file_json(path: Path | str, size: int, meta: dict[str, str]) -> dict[str, Any]:
    """What `ls --json` and `info --json` both say of a KV file (None where its metadata cannot tell)."""
    return {"kv_path": absolute(path), "doc_name": meta.get("doc_name"), "model": meta.get("model_id"),
            "tokens": _tokens(meta), "bytes": size, "created": meta.get("created"), "attention": attention_of(meta)[0]}


def entry_json(entry: dict) -> dict[str, Any]:
    """One `ls --json` entry of a kvfolder.list_entries() dict: its key, the file's facts, the documents' paths and
    which version of them it holds (where `ls` found them in the document index), last use and error."""
    return {"key": entry["key"], **file_json(entry["path"], entry["size"], entry["meta"]),
            "doc_paths": entry.get("doc_paths"), "version": entry.get("version"), "last_used": entry["last_used"],
            "error": entry["error"]}


def listing_json(folder: Path, entries: list[dict], cap: int | None, stale: list[TempFile],
                 active: list[TempFile], conversions: list[tuple[Path, int]] | None = None) -> dict[str, Any]:
    """`tmix cache ls --json`: what the text form shows, the entries, total, cap, temp files and leftover folders of
    killed model conversions."""
    return {"folder": absolute(folder), "entries": [entry_json(e) for e in entries],
            "total_bytes": sum(e["size"] for e in entries), "cap_bytes": cap,
            "temp_files": {"leftover": _files(stale), "in_progress": _files(active)},
            "leftover_conversions": {"count": len(conversions or []), "bytes": sum(n for _, n in conversions or [])}}


def _files(found: list[TempFile]) -> dict[str, int]:
    """Temp files' count, size (what their KV files take once done) and disk_bytes (what they take now)."""
    return {"count": len(found), "bytes": sum(t.size for t in found), "disk_bytes": sum(t.disk for t in found)}


def info_json(facts: dict[str, Any]) -> dict[str, Any]:
    """`tmix cache info --json`: the file's facts as `ls --json` gives them, then its raw metadata, tensor count,
    header and data sizes, the size-formula check and any damage (kvheader.inspect_kv)."""
    rest = {k: v for k, v in facts.items() if k not in ("path", "file_size")}
    return {**file_json(facts["path"], facts["file_size"], facts["metadata"]), **rest}
