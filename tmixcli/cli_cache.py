"""`tmix cache`: list, inspect and remove saved KV files."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from tmixcli import convtemp, docindex, kvfolder, kvheader
from tmixcli.cache_json import attention_of, info_json, listing_json
from tmixcli.errors import TmixError
from tmixcli.filekind import not_a_file, readable_name
from tmixcli.paths import models_dir
from tmixcli.sizes import count, human_size
from tmixcli.stdout import is_terminal

app = typer.Typer(help="List, inspect and remove saved KV cache files.", no_args_is_help=True)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _local_time(iso: str | None) -> str:
    """A listing's UTC time (ISO) as the local time, to the minute."""
    try:
        return datetime.fromisoformat(iso or "").astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso or "-"


def _with_versions(entries: list[dict]) -> list[dict]:
    """Each entry with the documents the index recorded its KV file for: "doc_paths" (absolute; None where not
    known) and "version": "current" where they are unchanged since, "old" where they changed or are gone, None."""
    recorded = docindex.recorded()
    for e in entries:
        found = recorded.get(Path(e["path"]).name, [])
        current = [r for r in found if r.current]
        e["doc_paths"] = list((current or found)[0].paths) if found else None
        e["version"] = ("current" if current else "old") if found else None
    return entries


def _shown(path: str) -> str:
    """A document's path as `ls` shows it: from the current folder where under it, else from ~ where under home."""
    for base, label in ((Path.cwd, "."), (Path.home, "~")):
        try:
            rel = Path(path).relative_to(os.path.realpath(base()))
        except (ValueError, OSError, RuntimeError):  # elsewhere, or a current folder removed, or no home
            continue
        return readable_name(str(rel) if label == "." else f"~/{rel}".removesuffix("/."))
    return readable_name(path)


def _document(entry: dict) -> str:
    if entry["doc_paths"]:
        return " + ".join(map(_shown, entry["doc_paths"]))
    return entry["doc_name"] or "-"


UNUSABLE = "unusable"  # ls's VERSION of a KV file that cannot be read as one (damaged, cut short, another format)


def _version(entry: dict) -> str:
    return UNUSABLE if entry["error"] else entry["version"] or "-"


@app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json", help="Print the listing as one JSON object.")] = False) -> None:
    """List KV files, most recently used first, with the document each was made from and whether it is that
    document's current version."""
    folder = kvfolder.listed_dir()  # an unusable folder or cap is an error before any output, with --json too
    cap = kvfolder.cache_limit()
    entries = _with_versions(kvfolder.list_entries(folder))
    stale, active = kvfolder.temp_state(folder)
    conversions = convtemp.state(models_dir(create=False))[0]
    if as_json:
        typer.echo(json.dumps(listing_json(folder, entries, cap, stale, active, conversions), indent=2))
        return
    if not entries:
        typer.echo(f"no KV files in {folder}")
    else:
        rows = [["KEY", "DOCUMENT", "VERSION", "MODEL", "ATTENTION", "TOKENS", "SIZE", "LAST USED (local time)"]]
        for e in entries:
            rows.append([e["key"], _document(e), _version(e), e["model_id"] or "-", attention_of(e["meta"])[1],
                         str(e["n_tokens"] or "-"), human_size(e["size"]), _local_time(e["last_used"])])
        typer.echo(_table(rows))
        total = human_size(sum(e["size"] for e in entries))
        typer.echo(f"{count(len(entries), 'file')}, {total} in {folder}; {_cap_text(cap)}")
        _echo_unusable(entries)
    _echo_leftovers(stale)
    _echo_in_progress(active)
    if conversions:
        them = "it" if len(conversions) == 1 else "them"
        typer.echo(f"{convtemp.described(conversions)}: `tmix cache prune` removes {them}")


def _echo_unusable(entries: list[dict]) -> None:
    """The KV files marked unusable, each with why (its path shortened to its name), and how to remove them."""
    bad = [e for e in entries if e["error"]]
    if not bad:
        return
    keys, them = " ".join(e["key"] for e in bad), "it" if len(bad) == 1 else "them"
    typer.echo(f"{count(len(bad), 'unusable KV file')}: `tmix cache rm {keys}` removes {them}")
    for e in bad:
        name = Path(e["path"]).name
        why = e["error"].replace(e["path"], name)
        typer.echo(f"  {why if name in why else f'{name}: {why}'}")


def _echo_leftovers(stale: list[kvfolder.TempFile]) -> None:
    """Leftover temp files of interrupted saves: the disk space they take (what removing them frees: a leftover's
    size is that of the KV file it was to become) until `tmix cache prune` removes them."""
    size = human_size(sum(t.disk for t in stale))
    if len(stale) == 1:
        typer.echo(f"1 leftover temp file of an interrupted save, {size} on disk: `tmix cache prune` removes it")
    elif stale:
        typer.echo(f"{len(stale)} leftover temp files of interrupted saves, {size} on disk: `tmix cache prune` "
                   "removes them")


def _echo_in_progress(active: list[kvfolder.TempFile], tail: str = "") -> None:
    """KV files being written now (never removed: their save lands once done); `tail` says what a removal did."""
    if active:
        size = human_size(sum(t.size for t in active))  # a writer sizes its temp file first: what it will hold
        typer.echo(f"{count(len(active), 'KV file')} being written now, {size} when done{tail}")


def _echo_removed(entry: dict) -> None:
    typer.echo(f"removed {entry['key']} ({entry['doc_name'] or '?'}, {human_size(entry['size'])})")


def _remove_temp_files(folder: Path) -> list[tuple[Path, str]]:
    """Remove leftover temp files (never a live writer's) and folders of killed model conversions, and say how many
    went; (path, why) for those that could not be removed."""
    gone, failed = kvfolder.remove_leftovers(folder)
    if gone:
        typer.echo(f"removed {count(len(gone), 'leftover temp file')} ({human_size(sum(n for _, n in gone))} freed)")
    gone, more = convtemp.remove_leftovers(models_dir(create=False))
    if gone:
        typer.echo(f"removed {convtemp.described(gone)}")
    return failed + more


LEFT_ALONE = ": left alone"  # a save in progress is never removed, by prune or clear


def _cap_text(limit: int | None, source: str = "TMIX_CACHE_MAX") -> str:
    return "no size cap" if limit is None else f"cap {human_size(limit)} ({source}; least recently used go first)"


@app.command("prune")
def prune(max_size: Annotated[str | None, typer.Option(
        "--max-size", metavar="SIZE", help="Cap to apply now, e.g. 5G; 0 removes "
        "every KV file (default: TMIX_CACHE_MAX, else 20G).")] = None,
          ) -> None:
    """Remove leftovers of interrupted saves, then least recently used KV files until the cache fits its cap."""
    if max_size is not None and not max_size.strip():
        raise TmixError("--max-size is empty: give a size such as 5G, 0 (remove every KV file) or off (no cap)")
    folder = kvfolder.listed_dir()
    limit = kvfolder.parse_size(max_size, "--max-size") if max_size is not None else kvfolder.cache_limit()
    failed = _remove_temp_files(folder)
    removed, more = kvfolder.trim_cache(limit, root=folder)
    failed += more
    for e in removed:
        _echo_removed(e)
    docindex.forget_missing(folder)
    if failed:
        raise TmixError(kvfolder.cannot_remove(failed))
    total = sum(e["size"] for e in kvfolder.list_entries(folder))
    typer.echo(f"{human_size(total)} in {folder}; "
               f"{_cap_text(limit, 'TMIX_CACHE_MAX' if max_size is None else '--max-size')}")
    _echo_in_progress(kvfolder.temp_state(folder)[1], LEFT_ALONE)


def resolve_key(key: str) -> dict:
    """The one entry whose key starts with `key` (or that a cached KV file's name or path names); TmixError when none
    or several match, or the key is empty."""
    if not key.strip():
        raise TmixError(f"the key {key!r} is empty: give a key or a unique key prefix (see `tmix cache ls`)")
    folder = kvfolder.listed_dir()
    entries = kvfolder.list_entries(folder)
    if key.endswith(kvfolder.SUFFIX):
        return _cached_file(key, entries, folder)
    matches = [e for e in entries if e["key"] == key] or [e for e in entries if e["key"].startswith(key)]
    if not matches:
        raise TmixError(f"no KV file with key {key!r} in {folder} (see `tmix cache ls`)")
    if len(matches) > 1:
        raise TmixError(f"key prefix {key!r} is ambiguous: matches {', '.join(e['key'] for e in matches)}")
    return matches[0]


def _cached_file(name: str, entries: list[dict], folder: Path) -> dict:
    """The entry of the cached KV file that `name` (KEY.safetensors, or a path to it) names."""
    path = Path(name).expanduser()
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


def document_entries(paths: list[str]) -> list[dict]:
    """The entries of the KV files the index recorded for each document (a file or folder as given to `ask`, or a
    file of such a folder), every version; TmixError for a path with none, or an empty one."""
    folder = kvfolder.listed_dir()
    by_name = {Path(e["path"]).name: e for e in kvfolder.list_entries(folder)}
    recorded = docindex.recorded()
    found = []
    for path in paths:
        if not path.strip():
            raise TmixError(f"the document path {path!r} is empty: give the path of a document tmix has read")
        real = os.path.realpath(path)
        mine = [by_name[kv] for kv, docs in recorded.items()
                if kv in by_name and any(real in r.paths or real in r.files for r in docs)]
        if not mine:
            raise TmixError(f"no KV file of {path} in {folder}: tmix knows the KV files of the documents it read "
                            "from that path (see `tmix cache ls`)")
        found += mine
    return found


class _RmCommand(TyperCommand):
    """`tmix cache rm`, whose bare --doc is told that it needs documents' paths, not that KEY... is missing."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as err:  # click's MissingParameter is one
            if type(err).__name__ == "MissingParameter" and ctx.params.get("doc"):
                raise TmixError("--doc needs the paths of documents: tmix cache rm --doc FILE... removes the KV files "
                                "made from them") from None
            raise


@app.command("rm", cls=_RmCommand)
def rm(keys: Annotated[list[str], typer.Argument(
        metavar="KEY...", help="Keys, unique key prefixes or KV file names; with --doc, documents' paths.")],
       doc: Annotated[bool, typer.Option("--doc", help="The arguments are documents (files or folders, as given to "
                                         "ask): remove every KV file made from each, of any version, model or "
                                         "settings.")] = False) -> None:
    """Remove KV files by key (a unique key prefix, or the file's name or path in the cache folder), or with --doc
    those of documents."""
    targets = document_entries(keys) if doc else [resolve_key(k) for k in keys]
    failed = []
    for e in {e["path"]: e for e in targets}.values():
        why = kvfolder.remove_file(Path(e["path"]))
        if why is None:
            _echo_removed(e)
        else:
            failed.append((Path(e["path"]), why))
    docindex.forget_missing(kvfolder.listed_dir())
    if failed:
        raise TmixError(kvfolder.cannot_remove(failed))


@app.command("clear")
def clear(yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False) -> None:
    """Remove all KV files (and leftovers of interrupted saves)."""
    folder = kvfolder.listed_dir()
    entries = kvfolder.list_entries(folder)
    stale = kvfolder.temp_state(folder)[0] + convtemp.state(models_dir(create=False))[0]
    total = sum(e["size"] for e in entries)
    if not entries and not stale:
        docindex.forget_missing(folder)  # files removed by hand leave index entries behind
        typer.echo(f"no KV files in {folder}")
        _echo_in_progress(kvfolder.temp_state(folder)[1], LEFT_ALONE)
        return
    if not yes:
        if not is_terminal(sys.stdin):  # None when fd 0 is closed
            raise TmixError("`tmix cache clear` needs --yes when stdin is not a terminal")
        if not typer.confirm(f"Remove {count(len(entries), 'KV file')} ({human_size(total)})?"):
            typer.echo("nothing removed")  # a normal answer; Ctrl-C at the prompt still ends with exit 130
            return
    failed = kvfolder.remove_files([Path(e["path"]) for e in entries])
    kept = {str(p) for p, _ in failed}
    gone = [e for e in entries if e["path"] not in kept]
    if gone:
        typer.echo(f"removed {count(len(gone), 'KV file')} ({human_size(sum(e['size'] for e in gone))}) from "
                   f"{folder}")
    failed += _remove_temp_files(folder)
    docindex.forget_missing(folder)
    _echo_in_progress(kvfolder.temp_state(folder)[1], LEFT_ALONE)
    if failed:
        raise TmixError(kvfolder.cannot_remove(failed))


@app.command("info")
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
        typer.echo(json.dumps(info_json(facts), indent=2))
    else:
        typer.echo(_info_text(facts))
    if facts["damage"] is not None:  # what could be read is shown; the damage is the command's error
        raise TmixError(facts["damage"])


def _info_text(facts: dict) -> str:
    """`tmix cache info`'s plain report."""
    meta = facts["metadata"]
    width = max(map(len, meta), default=0)
    lines = [f"path: {facts['path']}"] + [f"  {k.ljust(width)}  {v}" for k, v in sorted(meta.items())]
    lines += [f"tensors: {facts['tensor_count']}",
              f"file size: {facts['file_size']} bytes ({human_size(facts['file_size'])})",
              f"header: {facts['header_bytes']} bytes",
              f"kv bytes: {facts['kv_bytes']} ({_formula_check(facts['kv_bytes'], facts['expected_kv_bytes'])})"]
    return "\n".join(lines)


def _formula_check(kv_bytes: int | None, expected: int | None) -> str:
    """The header's K/V bytes against the size formula (whether the file holds them all is `damage`'s, told as the
    command's error)."""
    formula = "layers x 2 x kv_heads x tokens x head_dim x dtype bytes"
    if expected is None:
        return f"{formula}: cannot be checked, the metadata lacks these sizes"
    return f"{formula} = {expected}: {'ok' if kv_bytes == expected else 'MISMATCH'}"
