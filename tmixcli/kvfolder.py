"""The KV cache folder ($TMIX_CACHE_DIR/kv): its files listed, its size cap, trimming, removal and temp files."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.kvheader import as_int, read_meta
from tmixcli.paths import cache_subdir

SUFFIX = ".safetensors"
TMP_SUFFIX = ".tmp"


def kv_dir(create: bool = True) -> Path:
    """cache_dir()/kv, created on demand (create=False: only its path, for reading)."""
    return cache_subdir("kv", create)


def kv_path_for(key: str) -> Path:
    return kv_dir() / f"{key}{SUFFIX}"


def room_hint(path: Path) -> str:
    """How to make room for a KV file: `tmix cache clear` only where it frees space on the file's disk, so where the
    cache holds KV files (besides this one) or leftover temp files there."""
    folder = kv_dir(create=False)
    inside = path.parent.resolve() == folder.resolve()
    try:
        shared = (inside or path.parent.stat().st_dev == folder.stat().st_dev) and _worth_clearing(folder, path)
    except OSError:
        shared = False
    if inside:
        return "free space or run `tmix cache clear`" if shared else f"free space in {path.parent}"
    if shared:
        return f"free space in {path.parent} or run `tmix cache clear` (the KV cache is on the same disk)"
    return f"free space in {path.parent}, or write the file to another disk with -o"


def _worth_clearing(folder: Path, path: Path) -> bool:
    """Whether the cache folder holds KV files other than `path`, or leftover temp files of interrupted saves."""
    return any(p != path and _is_kv_file(p) for p in folder.iterdir()) or any(map(temp_is_stale, temp_files(folder)))


def _is_kv_file(p: Path) -> bool:
    return p.is_file() and p.name.endswith(SUFFIX) and not p.name.startswith(".")


def list_entries(root: Path | None = None) -> list[dict]:
    """One dict per KV file under root (default cache_dir()/kv, not created), most recently used first; TmixError
    when the folder cannot be read."""
    root = Path(root) if root is not None else kv_dir(create=False)
    if not root.is_dir():
        return []
    try:
        entries = [e for e in map(_entry, root.iterdir()) if e is not None]
    except OSError as err:
        raise TmixError(f"cannot read the cache folder {root}: {err.strerror or err}") from None
    return sorted(entries, key=lambda e: e["last_used"], reverse=True)


def _entry(p: Path) -> dict | None:
    """The listing of one KV file; None for anything else, or a file removed meanwhile."""
    if not _is_kv_file(p):
        return None
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    entry = {"key": p.name[: -len(SUFFIX)], "doc_name": None, "model_id": None, "n_tokens": None,
             "size": st.st_size, "created": None,
             "last_used": datetime.fromtimestamp(st.st_mtime, timezone.utc)
             .isoformat(timespec="seconds"), "path": str(p), "error": None}
    try:
        meta = read_meta(p)
    except TmixError as err:
        entry["error"] = str(err)
        return entry
    entry.update(doc_name=meta.get("doc_name"), model_id=meta.get("model_id"),
                 n_tokens=as_int(meta.get("n_tokens", "-1")), created=meta.get("created"))
    return entry


def human_size(n: int) -> str:
    """1536 -> "1.5 KiB"."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"



_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", re.IGNORECASE)
DEFAULT_CACHE_MAX = "20G"


def parse_size(text: str, what: str = "TMIX_CACHE_MAX") -> int | None:
    """Bytes from "20G", "500M", "1.5T", "123456", "0"; None for "off", "none" or "" (no limit)."""
    if text.strip().lower() in ("", "off", "none"):
        return None
    match = _SIZE.fullmatch(text)
    if not match:
        raise TmixError(f"{what} must be a size like 20G, 500M or off, not {text!r}")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " "))


def cache_limit() -> int | None:
    """The KV cache's size cap in bytes from TMIX_CACHE_MAX (default 20G), or None for no cap: "off", or a plain
    "0", which TMIX_CACHE_MAX has always read as no cap (`cache prune --max-size 0` means zero bytes)."""
    text = os.environ.get("TMIX_CACHE_MAX", DEFAULT_CACHE_MAX)
    return None if text.strip() == "0" else parse_size(text)


def trim_cache(limit: int | None, keep: Path | None = None,
               root: Path | None = None) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Remove least recently used KV files until the cache fits `limit` bytes (never `keep`); the removed entries,
    and (path, why) for files that could not be removed (skipped: a more recently used one goes instead)."""
    if limit is None:
        return [], []
    entries = list_entries(root)  # most recently used first
    total = sum(e["size"] for e in entries)
    removed, failed = [], []
    for e in reversed(entries):
        if total <= limit:
            break
        if keep is not None and Path(e["path"]).resolve() == Path(keep).resolve():
            continue
        why = remove_file(Path(e["path"]))
        if why is not None:
            failed.append((Path(e["path"]), why))
            continue
        total -= e["size"]
        removed.append(e)
    return removed, failed


def remove_file(path: Path) -> str | None:
    """Unlink a cache file (one already gone counts as removed); why it could not be removed, else None."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        return err.strerror or str(err)
    return None


def remove_files(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Unlink each file (remove_file); (path, why) for those that could not be removed."""
    return [(p, why) for p in paths if (why := remove_file(p)) is not None]


def cannot_remove(failed: Sequence[tuple[Path, str]]) -> str:
    """One line for files that could not be removed: the path and why, or for several the count, a few names and
    the reasons."""
    if len(failed) == 1:
        return f"cannot remove {failed[0][0]}: {failed[0][1]}"
    names = ", ".join(p.name for p, _ in failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
    reasons = "; ".join(dict.fromkeys(why for _, why in failed))
    return f"cannot remove {len(failed)} files in {failed[0][0].parent} ({names}): {reasons}"


def temp_files(root: Path | None = None) -> list[Path]:
    """Leftover temp files of interrupted saves."""
    root = Path(root) if root is not None else kv_dir(create=False)
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)]


def temp_is_stale(path: Path, quiet_s: float = 60.0) -> bool:
    """True for a temp file no save will finish: its writer's pid (in the name) is gone, or, with no readable pid,
    nothing was written to it for `quiet_s`."""
    parts = path.name.split(".")  # "", <name parts...>, <pid>, <8 hex>, "tmp"
    try:
        pid = int(parts[-3])
    except (IndexError, ValueError):
        pid = None
    if pid is not None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, owned by someone else
            pass
        return False
    try:
        return time.time() - path.stat().st_mtime > quiet_s
    except OSError:
        return False

