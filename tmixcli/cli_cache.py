"""`tmix cache`: list, inspect and remove saved KV files."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tmixcli import docindex, kvfolder, kvheader
from tmixcli.config import AttentionConfig, no_triangle_note
from tmixcli.errors import TmixError
from tmixcli.kvfolder import human_size
from tmixcli.paths import not_a_file
from tmixcli.stdout import is_terminal

TRIANGLE_FIELDS = ("start_layer", "n_init", "n_local", "last_n")
app = typer.Typer(help="List, inspect and remove saved KV cache files.", no_args_is_help=True)


def cli_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a TmixError into `tmix: error: <msg>` on stderr and exit with its code."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TmixError as err:
            typer.echo(f"tmix: error: {err}", err=True)
            raise typer.Exit(err.code) from None
    return wrapper


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _short_time(iso: str | None) -> str:
    return (iso or "-").replace("T", " ")[:16]


@app.command("ls")
@cli_errors
def ls(as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON.")] = False) -> None:
    """List KV files, most recently used first."""
    entries = kvfolder.list_entries()
    labels = []
    for e in entries:
        e["attention"], label = _attention(e)
        labels.append(label)
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        typer.echo(f"no KV files in {kvfolder.kv_dir()}")
        _echo_temp_files()
        return
    rows = [["KEY", "DOCUMENT", "MODEL", "ATTENTION", "TOKENS", "SIZE", "LAST USED"]]
    for e, label in zip(entries, labels):
        doc = e["doc_name"] or f"(invalid: {e['error']})"
        rows.append([e["key"], doc, e["model_id"] or "-", label, str(e["n_tokens"] or "-"),
                     human_size(e["size"]), _short_time(e["last_used"])])
    typer.echo(_table(rows))
    total = human_size(sum(e["size"] for e in entries))
    typer.echo(f"{kvfolder.count(len(entries), 'file')}, {total} in {kvfolder.kv_dir()}; "
               f"{_cap_text(kvfolder.cache_limit())}")
    _echo_temp_files()


def _attention(entry: dict) -> tuple[dict | None, str]:
    """The attention settings a listed KV file was made with, and `ls`'s short form of them: "dense", or
    "tri@15 8/512/128" (start layer, n_init/n_local/last_n), "(dense)" added where no layer reaches the start."""
    try:
        meta = kvheader.read_meta(Path(entry["path"])) if entry["error"] is None else {}
    except TmixError:  # removed or replaced since it was listed
        meta = {}
    attn = {k.removeprefix("attn_"): int(v) if v.isdigit() else v for k, v in meta.items() if k.startswith("attn_")}
    if attn.get("method") == "dense":
        return attn, "dense"
    known = attn.get("method") == "trimix" and all(isinstance(attn.get(k), int) for k in TRIANGLE_FIELDS)
    if not known:  # an older or damaged file: its fields as they are, if any
        return attn or None, "-"
    start, n_init, n_local, last_n = (attn[k] for k in TRIANGLE_FIELDS)
    layers = meta.get("num_layers", "")
    past = layers.isdigit() and no_triangle_note(AttentionConfig(start_layer=start), int(layers)) is not None
    return attn, f"tri@{start} {n_init}/{n_local}/{last_n}" + (" (dense)" if past else "")


def _echo_temp_files() -> None:
    """The temp files beside the KV files: a leftover takes disk space until `tmix cache prune` removes it."""
    stale, active = kvfolder.temp_state()
    size = human_size(sum(n for _, n in stale))
    if len(stale) == 1:
        typer.echo(f"1 leftover temp file of an interrupted save, {size}: `tmix cache prune` removes it")
    elif stale:
        typer.echo(f"{len(stale)} leftover temp files of interrupted saves, {size}: `tmix cache prune` removes them")
    if active:
        written = human_size(sum(n for _, n in active))
        typer.echo(f"{kvfolder.count(len(active), 'KV file')} being written now, {written} so far")


def _echo_removed(entry: dict) -> None:
    typer.echo(f"removed {entry['key']} ({entry['doc_name'] or '?'}, {human_size(entry['size'])})")


def _remove_temp_files() -> list[tuple[Path, str]]:
    """Remove leftover temp files (never a live writer's) and say how many went; (path, why) for those that could
    not be removed."""
    gone, failed = kvfolder.remove_leftovers()
    if gone:
        typer.echo(f"removed {kvfolder.count(len(gone), 'leftover temp file')} ({human_size(sum(n for _, n in gone))})")
    return failed


def _cap_text(limit: int | None, source: str = "TMIX_CACHE_MAX") -> str:
    return "no size cap" if limit is None else f"cap {human_size(limit)} ({source}; least recently used go first)"


@app.command("prune")
@cli_errors
def prune(max_size: Annotated[str | None, typer.Option(
        "--max-size", metavar="SIZE", help="Cap to apply now, e.g. 5G; 0 removes "
        "every KV file (default: TMIX_CACHE_MAX, else 20G).")] = None,
          ) -> None:
    """Remove leftovers of interrupted saves, then least recently used KV files until the cache fits its cap."""
    if max_size is not None and not max_size.strip():
        raise TmixError("--max-size is empty: give a size such as 5G, 0 (remove every KV file) or off (no cap)")
    limit = kvfolder.parse_size(max_size, "--max-size") if max_size is not None else kvfolder.cache_limit()
    failed = _remove_temp_files()
    removed, more = kvfolder.trim_cache(limit)
    failed += more
    for e in removed:
        _echo_removed(e)
    docindex.forget_missing(kvfolder.kv_dir())
    if failed:
        raise TmixError(kvfolder.cannot_remove(failed))
    total = sum(e["size"] for e in kvfolder.list_entries())
    typer.echo(f"{human_size(total)} in {kvfolder.kv_dir()}; "
               f"{_cap_text(limit, 'TMIX_CACHE_MAX' if max_size is None else '--max-size')}")


def resolve_key(key: str) -> dict:
    """The one entry whose key starts with `key` (or that a cached KV file's name or path names); TmixError when none
    or several match, or the key is empty."""
    if not key.strip():
        raise TmixError(f"the key {key!r} is empty: give a key or a unique key prefix (see `tmix cache ls`)")
    entries = kvfolder.list_entries()
    if key.endswith(kvfolder.SUFFIX):
        return _cached_file(key, entries)
    matches = [e for e in entries if e["key"] == key] or [e for e in entries if e["key"].startswith(key)]
    if not matches:
        raise TmixError(f"no KV file with key {key!r} in {kvfolder.kv_dir()} (see `tmix cache ls`)")
    if len(matches) > 1:
        raise TmixError(f"key prefix {key!r} is ambiguous: matches {', '.join(e['key'] for e in matches)}")
    return matches[0]


def _cached_file(name: str, entries: list[dict]) -> dict:
    """The entry of the cached KV file that `name` (KEY.safetensors, or a path to it) names."""
    path = Path(name).expanduser()
    folder = kvfolder.kv_dir(create=False)
    if path.parent != Path(".") and _real(path.parent) != _real(folder):
        if not path.is_file():
            raise TmixError(f"{name}: {not_a_file(path)}")
        raise TmixError(f"{name} is not in the cache folder {folder}: tmix cache removes only the KV files it keeps")
    found = [e for e in entries if Path(e["path"]).name == path.name]
    if not found:
        raise TmixError(f"no KV file {path.name} in {folder} (see `tmix cache ls`)")
    return found[0]


def _real(folder: Path) -> Path:
    try:
        return folder.resolve()
    except (OSError, RuntimeError):
        return folder.absolute()


@app.command("rm")
@cli_errors
def rm(keys: Annotated[list[str], typer.Argument(metavar="KEY...",
                                                  help="Keys, unique key prefixes or KV file names.")]) -> None:
    """Remove KV files by key (a unique key prefix, or the file's name or path in the cache folder)."""
    targets = [resolve_key(k) for k in keys]
    failed = []
    for e in {e["path"]: e for e in targets}.values():
        why = kvfolder.remove_file(Path(e["path"]))
        if why is None:
            _echo_removed(e)
        else:
            failed.append((Path(e["path"]), why))
    docindex.forget_missing(kvfolder.kv_dir())
    if failed:
        raise TmixError(kvfolder.cannot_remove(failed))


@app.command("clear")
@cli_errors
def clear(yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False) -> None:
    """Remove all KV files (and leftovers of interrupted saves)."""
    entries = kvfolder.list_entries()
    stale = kvfolder.temp_state()[0]
    total = sum(e["size"] for e in entries)
    if not entries and not stale:
        docindex.forget_missing(kvfolder.kv_dir())  # files removed by hand leave index entries behind
        typer.echo(f"no KV files in {kvfolder.kv_dir()}")
        return
    if not yes:
        if not is_terminal(sys.stdin):  # None when fd 0 is closed
            raise TmixError("`tmix cache clear` needs --yes when stdin is not a terminal")
        if not typer.confirm(f"Remove {kvfolder.count(len(entries), 'KV file')} ({human_size(total)})?"):
            typer.echo("nothing removed")  # a normal answer; Ctrl-C at the prompt still ends with exit 130
            return
    failed = kvfolder.remove_files([Path(e["path"]) for e in entries])
    kept = {str(p) for p, _ in failed}
    gone = [e for e in entries if e["path"] not in kept]
    if gone:
        typer.echo(f"removed {kvfolder.count(len(gone), 'KV file')} ({human_size(sum(e['size'] for e in gone))}) from "
                   f"{kvfolder.kv_dir()}")
    failed += _remove_temp_files()
    docindex.forget_missing(kvfolder.kv_dir())
    if failed:
        raise TmixError(kvfolder.cannot_remove(failed))


@app.command("info")
@cli_errors
def info(target: Annotated[str, typer.Argument(metavar="PATH_OR_KEY",
                                               help="A KV file path, key (prefix) or cached file name.")],
         as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Show a KV file's metadata, tensor count, sizes and whether the size fits the formula."""
    path = Path(target)
    if not path.is_file():
        try:
            path = Path(resolve_key(target)["path"])
        except TmixError:
            why = not_a_file(path) if target.strip() else None  # Path("") is the current folder
            if why in (None, "no such file"):
                raise
            raise TmixError(f"{target}: {why}") from None
    facts = kvheader.inspect_kv(path)
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
    else:
        typer.echo(_info_text(facts))
    if facts["damage"] is not None:  # what could be read is shown; the damage is the command's error
        raise TmixError(facts["damage"])


def _info_text(facts: dict) -> str:
    """`tmix cache info`'s plain report."""
    meta = facts["metadata"]
    width = max(map(len, meta), default=0)
    lines = [f"path: {facts['path']}"] + [f"  {k.ljust(width)}  {v}" for k, v in sorted(meta.items())]
    check = "ok" if facts["size_matches"] else "MISMATCH"
    lines += [f"tensors: {facts['tensor_count']}",
              f"file size: {facts['file_size']} bytes ({human_size(facts['file_size'])})",
              f"header: {facts['header_bytes']} bytes",
              (f"kv bytes: {facts['kv_bytes']} (layers x 2 x kv_heads x tokens x head_dim x dtype bytes"
               f" = {facts['expected_kv_bytes']}: {check})")]
    return "\n".join(lines)

