"""The KV cache folder ($TMIX_CACHE_DIR/kv): its files listed, its size cap, trimming, removal and temp files."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from tmixcli.errors import TmixError
from tmixcli.kvheader import as_int, read_meta
from tmixcli.owners import alive, lock_held, on_disk
from tmixcli.paths import cache_subdir, checked_subdir
from tmixcli.sizes import human_size

SUFFIX = ".safetensors"
TMP_SUFFIX = ".tmp"
LOCKED_TMP_SUFFIX = ".lk.tmp"  # a temp file whose writer holds a lock on it (flock) while it writes
LEFTOVER_AFTER_S = 3600.0  # an unlocked temp file (older tmix) not written to for this long is a leftover
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}(?P<suffix>(?:\.lk)?\.tmp)")  # temp_name's, or older


def kv_dir(create: bool = True) -> Path:
    """cache_dir()/kv, created on demand (create=False: only its path, for reading)."""
    return cache_subdir("kv", create)


def listed_dir() -> Path:
    """cache_dir()/kv for `tmix cache`, which only lists and removes: never created; TmixError when it, or the cache
    folder, exists as a file or under one (a missing folder holds no KV files)."""
    return checked_subdir("kv")


def kv_path_for(key: str) -> Path:
    """The cache's KV file of `key` (kvstore.cache_key: model, attention and prompt ids); makes the KV folder, so a
    cache folder that cannot be used is a TmixError before any prefill."""
    return kv_dir() / f"{key}{SUFFIX}"


def room_hint(path: Path, missing: int | None = None) -> str:
    """How to make room for a KV file: `tmix cache clear` only where it frees space on the file's disk (KV files
    besides this one, leftover temp files), and at least the `missing` bytes when they are known; else how much to
    free."""
    folder = kv_dir(create=False)
    inside = path.parent.resolve() == folder.resolve()
    try:
        freeable = _freeable(folder, path) if inside or path.parent.stat().st_dev == folder.stat().st_dev else 0
    except OSError:
        freeable = 0
    if freeable and (missing is None or freeable >= missing):
        if inside:
            return "free space or run `tmix cache clear`"
        return f"free space in {path.parent} or run `tmix cache clear` (the KV cache is on the same disk)"
    room = "space" if missing is None else f"{human_size(missing)} more"
    only = f" (`tmix cache clear` would free only {human_size(freeable)})" if freeable else ""
    return f"free {room} in {path.parent}{only}" + ("" if inside else ", or write the file to another disk with -o")


def _freeable(folder: Path, path: Path) -> int:
    """Bytes `tmix cache clear` would free: the blocks of the KV files other than `path` and of leftover temp files
    of interrupted saves."""
    files = [p for p in folder.iterdir() if p != path and _is_kv_file(p)]
    return sum(map(_blocks, files + [p for p in temp_files(folder) if temp_is_stale(p)]))


def _blocks(p: Path) -> int:
    """Bytes a file takes on its disk: its blocks (a leftover may be sparse), or its size where the file system
    reports none; 0 once removed meanwhile."""
    try:
        return on_disk(p.stat())
    except OSError:
        return 0


def _is_kv_file(p: Path) -> bool:
    return p.is_file() and p.name.endswith(SUFFIX) and not p.name.startswith(".")


def list_entries(root: Path | None = None) -> list[dict]:
    """One dict per KV file under root (default cache_dir()/kv, not created), most recently used first; TmixError
    when the folder cannot be read."""
    root = Path(root) if root is not None else kv_dir(create=False)
    try:
        if not root.is_dir():  # raises in a cache folder that cannot be searched
            return []
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
             .isoformat(timespec="seconds"), "path": str(p), "error": None, "meta": {}}
    try:
        meta = read_meta(p)
    except TmixError as err:
        entry["error"] = str(err)
        return entry
    entry.update(doc_name=meta.get("doc_name"), model_id=meta.get("model_id"),
                 n_tokens=as_int(meta.get("n_tokens", "-1")), created=meta.get("created"), meta=meta)
    return entry


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", re.IGNORECASE)
DEFAULT_CACHE_MAX = "20G"


def parse_size(text: str, what: str = "TMIX_CACHE_MAX") -> int | None:
    """Bytes from "20G", "500M", "1.5T", "123456", "0"; None for "off" (no limit)."""
    if text.strip().lower() == "off":
        return None
    match = _SIZE.fullmatch(text)
    if not match:
        raise TmixError(f"{what} must be a size like 20G, 500M or off, not {text!r}")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " "))


def cache_limit() -> int | None:
    """The KV cache's size cap in bytes from TMIX_CACHE_MAX (unset or empty: 20G, as `TMIX_CACHE_MAX=$CAP` with CAP
    unset means), or None for no cap: "off", or a plain "0", which TMIX_CACHE_MAX has always read as no cap (`cache
    prune --max-size 0` means zero bytes)."""
    text = os.environ.get("TMIX_CACHE_MAX", "")
    text = text if text.strip() else DEFAULT_CACHE_MAX
    return None if text.strip() == "0" else parse_size(text)


def trim_cache(limit: int | None, keep: Path | None = None,
               root: Path | None = None) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Remove leftover temp files of interrupted saves, then least recently used KV files until the cache fits `limit`
    bytes (never `keep`); the removed entries, and (path, why) for KV files that could not be removed (skipped: a
    more recently used one goes instead)."""
    if limit is None:
        return [], []
    remove_leftovers(root)  # never a live writer's file; one that cannot be removed is prune's to name
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
    """The temp files beside the KV files: saves in progress and leftovers of interrupted ones."""
    root = Path(root) if root is not None else kv_dir(create=False)
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)]


def temp_name(path: Path) -> Path:
    """A new temp file's path beside `path`, which is written first, then renamed to it: ".<name>.<pid>.<8
    hex>.lk.tmp" (an older tmix's end in .tmp alone, without the writer's lock)."""
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{LOCKED_TMP_SUFFIX}"


def temp_of(path: Path, temp: Path) -> bool:
    """Whether `temp` is a temp file temp_name gave for `path`."""
    m = _TEMP.fullmatch(temp.name)
    return m is not None and m["name"] == path.name and m["suffix"] == LOCKED_TMP_SUFFIX


def temp_is_stale(path: Path, quiet_s: float = 60.0) -> bool:
    """True for a temp file no save will finish (see _stale): a leftover of a writer that died."""
    with _lock_tested(path) as (held, probe):
        return _stale(path, held, probe, quiet_s)


class TempFile(NamedTuple):
    """A temp file beside the KV files: its size (a writer sizes it first: what its KV file will take once done) and
    the bytes it takes on disk now (_blocks: what removing it frees; a leftover is sparse where never written)."""

    path: Path
    size: int
    disk: int


def temp_state(root: Path | None = None) -> tuple[list[TempFile], list[TempFile]]:
    """(leftovers of interrupted saves, files being written now)."""
    stale, active = [], []
    for p in temp_files(root):
        with _lock_tested(p) as (held, probe):
            try:
                st = p.stat()
            except OSError:  # renamed or removed meanwhile
                continue
            found = TempFile(p, st.st_size, on_disk(st))
            (stale if _stale(p, held, probe) else active).append(found)
    return stale, active


def remove_leftovers(root: Path | None = None) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
    """Remove the temp files no save will finish, never a live writer's: (path, bytes freed: _blocks) of those
    removed, (path, why) of those that could not be. Each goes while its lock is held here, so a writer cannot take
    it meanwhile."""
    removed, failed = [], []
    for p in temp_files(root):
        with _lock_tested(p) as (held, probe):
            if not _stale(p, held, probe):
                continue
            try:
                freed = on_disk(p.stat())
            except OSError:
                continue
            why = remove_file(p)
        if why is None:
            removed.append((p, freed))
        else:
            failed.append((p, why))
    return removed, failed


def _stale(path: Path, held: bool | None, probe: int | None, quiet_s: float = 60.0) -> bool:
    """Whether a temp file is a leftover. A writer of this tmix holds a lock on its file (LOCKED_TMP_SUFFIX) while it
    writes: free, the writer is gone, whatever became of the pid in the name. A file of an older tmix, or one whose
    lock cannot be tested, is a leftover once the process of its pid is gone or does not have it open, or nothing
    was written to it for LEFTOVER_AFTER_S (quiet_s without a pid in its name). `probe`: our own descriptor of it."""
    if held:
        return False
    if held is False and path.name.endswith(LOCKED_TMP_SUFFIX):
        return True
    try:
        quiet = time.time() - path.stat().st_mtime
    except OSError:
        return False
    pid = pid_of(path)
    if pid is None:
        return quiet > quiet_s
    return quiet > LEFTOVER_AFTER_S or not alive(pid) or has_open(pid, path, probe) is False


def pid_of(path: Path) -> int | None:
    """The writer's pid in a temp file's name (temp_name), if it has one."""
    m = _TEMP.fullmatch(path.name)
    return int(m["pid"]) if m is not None else None


def has_open(pid: int, path: Path, probe: int | None) -> bool | None:
    """Whether process `pid` has `path` open, from /proc, our `probe` descriptor aside (None: its descriptors cannot
    be seen, e.g. another user's process, or no /proc)."""
    try:
        st = path.stat()
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    if pid == os.getpid() and probe is not None:
        names = [n for n in names if n != str(probe)]
    for name in names:
        try:
            fst = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:  # closed meanwhile
            continue
        if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


@contextlib.contextmanager
def _lock_tested(path: Path) -> Iterator[tuple[bool | None, int | None]]:
    """Whether a writer holds its lock on `path` (None: it cannot be told: no such file, not a regular one, or no
    locks on its file system), and the descriptor it was tested by. When the lock is free, a shared lock is held
    here until the block ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield None, None
        return
    try:
        yield (lock_held(fd) if stat.S_ISREG(os.fstat(fd).st_mode) else None), fd
    finally:
        os.close(fd)
