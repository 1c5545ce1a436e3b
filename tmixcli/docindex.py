"""Which KV file an unchanged document led to, so a warm `ask` loads it without reading the document again.

Reading a 250-page PDF and tokenizing it takes seconds on every question, while the KV file it leads to loads in
a fraction of that. An entry is keyed by the files' identities (path, size, mtime, ctime, inode: any edit changes
ctime) and the reading options, then by everything else that shapes the prefix (model, attention, template,
--truncate's room); it is only a pointer: the KV file is still checked against the model and settings when loaded.
Files whose stat tells no change (/proc, /sys, a size of 0) are always read; `chat` hashes their contents. A stat
taken within seconds of a change may stay the same through the next edit on coarse clocks (git's "racy clean"):
what it recorded is trusted only while the files' bytes are still the ones read. An entry also names the documents'
paths and stats, so that `tmix cache` can tell whose KV file it is and whether it holds their current version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tmixcli import __version__
from tmixcli.errors import TmixError
from tmixcli.kvfolder import remove_file
from tmixcli.paths import cache_subdir
from tmixcli.filekind import open_regular, read_regular

INDEX_VERSION = "3"  # 3: headings "Document i: name" (2 led to files headed "i of n"; racy entries marked since 2)
RACY_NS = 3 * 10**9  # FAT keeps mtime in 2 s steps, and the kernel stamps files from a clock a tick behind


@dataclass(frozen=True)
class Identity:
    """identity()'s digest (the index file's name), with its files and whether their stat was taken too soon after a
    change to stand for their bytes alone (`racy`: then what it leads to is checked against their bytes), and for
    `tmix cache` the documents' paths as given (made absolute) and the files' stat rows."""

    digest: str
    files: tuple[str, ...] = ()
    racy: bool = False
    paths: tuple[str, ...] = ()
    stats: tuple[list, ...] = ()


def identity(paths: Sequence[str], pages: str | None, password: str | None) -> Identity | None:
    """Digest of the documents' file identities and reading options; None when those cannot stand for the text
    (stdin, a password, an empty path, a path that does not stat): such runs always read their documents."""
    if password is not None or not paths or "-" in paths or "" in paths:
        return None
    taken = time.time_ns()  # before the stats: an edit after this moment is stamped no earlier than RACY_NS before it
    try:
        files = file_stats(paths)
    except (OSError, TmixError, _StatTellsNothing):
        return None
    return Identity(_digest([INDEX_VERSION, __version__, files, pages]), tuple(f[0] for f in files),
                    any(_racy(f, taken) for f in files), tuple(os.path.realpath(p) for p in paths), tuple(files))


def _racy(row: list, taken: int) -> bool:
    """Whether a file_stats row, stat'ed at `taken` (ns) or later, could stay the same through an edit made after it:
    its mtime or ctime is not safely older than that moment on a file system with coarse timestamps."""
    return len(row) == 6 and max(row[2], row[3]) >= taken - RACY_NS


class _StatTellsNothing(Exception):
    """A document whose stat cannot tell whether it changed (stat_tells_changes): only its bytes can."""


def file_stats(paths: Sequence[str], contents: bool = False) -> list[list]:
    """[path, size, mtime, ctime, inode, device] of each file the paths stand for (a folder: the files in it), from
    stat alone; raises OSError or TmixError when one cannot be listed or stat'ed. A file whose stat tells no change
    raises _StatTellsNothing, or with `contents` gives [path, its bytes' sha256]."""
    from tmixcli.folders import folder_files

    files: list[list] = []
    for p in paths:
        path = Path(p)
        for f in folder_files(path) if path.is_dir() else [path]:
            st = f.stat()
            if stat_tells_changes(st):
                files.append([str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev])
            elif contents:
                files.append([str(f.resolve()), _content_digest(f)])
            else:
                raise _StatTellsNothing(str(f))
    return files


_PSEUDO_FS = frozenset({"proc", "sysfs", "debugfs", "tracefs", "securityfs", "configfs", "cgroup", "cgroup2", "pstore",
                        "efivarfs", "bpf", "fusectl", "binfmt_misc", "selinuxfs", "rpc_pipefs", "nsfs"})
_fs_types: dict[int, str | None] = {}  # device number -> file system type, from /proc/self/mountinfo


def stat_tells_changes(st: os.stat_result) -> bool:
    """Whether a file's size, times and inode move when its contents change: not on /proc, /sys and the like (size 0
    or 4096, a fixed mtime, contents made as they are read), nor for a file of size 0 (reading an empty one costs
    nothing; one that is not empty reads what it holds now)."""
    return st.st_size > 0 and _fs_type(st.st_dev) not in _PSEUDO_FS


def _fs_type(dev: int) -> str | None:
    """The type of the file system mounted with device number `dev` ("proc", "ext4", ...); None where not told."""
    if dev not in _fs_types:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.split()  # id parent major:minor root mountpoint options ... - type source ...
                    major, minor = fields[2].split(":")
                    _fs_types[os.makedev(int(major), int(minor))] = fields[fields.index("-") + 1]
        except (OSError, ValueError, IndexError):
            pass
        _fs_types.setdefault(dev, None)
    return _fs_types[dev]


def _content_digest(path: Path) -> str:
    """The sha256 of a file's bytes, read without waiting on a FIFO or device put in its place (OSError)."""
    digest = hashlib.sha256()
    with os.fdopen(open_regular(str(path)), "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class SourceWatch:
    """Tells from stat alone (size, times, inode; nothing is read) when documents change on disk (`tmix chat`); a
    file whose stat tells no change (/proc, /sys), or one stat'ed within seconds of a change (racy), by its bytes."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self.seen = {p: _state(p) for p in self.paths}  # the versions read (taken before the reading)
        self._new: dict[str, list] = {}  # versions found by the last poll, not yet read (accept)

    def poll(self) -> list[tuple[str, str | None]]:
        """(name, None) for each document changed since the version read, (name, why) for one that cannot be read
        (said once). A change is told again by each poll until accept() says the new version was read."""
        changed = []
        self._new = {}
        for p in self.paths:
            now = _state(p)
            if _same(self.seen[p], now):
                self.seen[p] = now  # a racy state its bytes confirmed may be old enough now for stat alone
            elif isinstance(now, str):
                changed.append((Path(p).name, now))
                self.seen[p] = now
            else:
                changed.append((Path(p).name, None))
                self._new[p] = now
        return changed

    def accept(self) -> None:
        """The documents changed at the last poll were read again: later polls compare with those versions."""
        self.seen.update(self._new)
        self._new = {}


def _state(path: str) -> list | str:
    """The stat identity of a document's files (a folder's: each), with the sha256 of the bytes of each stat'ed too
    soon after a change to stand for them alone; or why it cannot be had."""
    taken = time.time_ns()
    try:
        return [[*f, _content_digest(Path(f[0]))] if _racy(f, taken) else f for f in file_stats([path], contents=True)]
    except OSError as err:
        return err.strerror or str(err)
    except TmixError as err:
        return str(err)


def _same(old: list | str, new: list | str) -> bool:
    """Whether two states tell the same version of a document: the same stats, and where the old one was racy, the
    same bytes (read now unless the new state holds their digest)."""
    if isinstance(old, str) or isinstance(new, str) or len(old) != len(new):
        return old == new
    for was, now in zip(old, new):
        if was[:6] != now[:6]:
            return False
        if len(was) == 7 and was[6] != (now[6] if len(now) == 7 else _files_digest([now[0]])):
            return False
    return True


def _files_digest(files: Sequence[str]) -> str | None:
    """Document.sha256 of these files' bytes (documents.py: of the one file's bytes, or of the files' digests joined
    for several); None when one cannot be read."""
    try:
        digests = [_content_digest(Path(f)) for f in files]
    except OSError:
        return None
    return digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()


def settings_key(fingerprint: str, attn: dict, template_hash: str, truncate_room: int | None) -> str:
    """Everything besides the documents that decides the prefix tokens (truncate_room: None without --truncate)."""
    return _digest([fingerprint, attn, template_hash, truncate_room])


def known(ident: Identity | None) -> bool:
    """Whether some run has recorded these documents (then reading them can wait until the model is loaded)."""
    return ident is not None and os.path.isfile(_path(ident.digest))  # False also in a folder that cannot be searched


def lookup(ident: Identity, key: str) -> dict | None:
    """The entry {kv, doc_name, doc_sha256, notes} recorded for these documents and settings, if any; one recorded
    from a racy stat only while the files' bytes are those read then (doc_sha256), and from then on by stat alone
    once this stat is not racy."""
    try:
        entries = _read(_path(ident.digest))
        entry = entries.get(key)
    except (OSError, ValueError, AttributeError):
        return None
    fields = ("kv", "doc_name", "doc_sha256", "notes")
    if not isinstance(entry, dict) or not all(f in entry for f in fields):
        return None
    if entry.get("racy"):
        if _files_digest(ident.files) != entry["doc_sha256"]:
            return None
        if not ident.racy:
            entry = {f: v for f, v in entry.items() if f != "racy"}
            _write(_path(ident.digest), {**entries, key: entry})
    return entry


def remember(ident: Identity, key: str, kv_path: Path, doc_name: str, doc_sha256: str, notes: Sequence[str]) -> None:
    """Record that these documents and settings lead to `kv_path` (atomically; a failure, such as a cache folder
    that cannot be written, only costs speed). A racy identity's entry is marked, for lookup to check the bytes."""
    try:
        path = _path(ident.digest, create=True)
    except TmixError:
        return
    try:
        entries = _read(path)
    except (OSError, ValueError):
        entries = {}
    entries[key] = {"kv": kv_path.name, "doc_name": doc_name, "doc_sha256": doc_sha256, "notes": list(notes),
                    "paths": list(ident.paths), "stats": list(ident.stats)}  # for `tmix cache`: whose, which version
    if ident.racy:
        entries[key]["racy"] = True
    _write(path, entries)


def _write(path: Path, entries: dict) -> None:
    """Replace an index file atomically; one that cannot be written is left as it was."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f)
        os.replace(tmp, path)
    except BaseException as err:  # also Ctrl-C or SIGTERM (tmixcli/terminate.py): no temp file stays
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if not isinstance(err, OSError):
            raise


def forget_missing(kv_folder: Path) -> int:
    """Remove index files none of whose KV files exist any more (edited documents leave them behind)."""
    gone = 0
    for path in index_dir().glob("*.json"):
        try:
            entries = _read(path)
            alive = any((kv_folder / e["kv"]).is_file() for e in entries.values())
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            alive = False
        if not alive and remove_file(path) is None:  # one that cannot be removed points nowhere: harmless
            gone += 1
    return gone


class Recorded(NamedTuple):
    """Documents an index entry was recorded for: their paths as given (absolute), their files, and whether they are
    unchanged since (then its KV file is of their current version)."""

    paths: tuple[str, ...]
    files: tuple[str, ...]
    current: bool


def recorded() -> dict[str, list[Recorded]]:
    """The documents each KV file (by name) was recorded for, most recently recorded first; entries of a tmix that
    did not record paths are left out. Current: the same files, of the same stat (not racy) or the same bytes."""
    found: dict[str, list[Recorded]] = {}
    stats_of, digest_of = functools.cache(_stats_of), functools.cache(_files_digest)  # once per set of documents
    for path in sorted(index_dir().glob("*.json"), key=_mtime, reverse=True):
        try:
            entries = _read(path)
        except (OSError, ValueError):
            continue
        for entry in entries.values():
            try:
                kv, stats, sha = entry["kv"], entry["stats"], entry["doc_sha256"]
                paths, files = tuple(map(str, entry["paths"])), tuple(str(row[0]) for row in stats)
            except (KeyError, TypeError, IndexError):
                continue
            now = stats_of(paths)
            current = now is not None and [row[0] for row in now] == list(files)
            if current and (now != stats or entry.get("racy")):  # touched, copied back, or racy: the bytes tell
                current = digest_of(files) == sha
            found.setdefault(str(kv), []).append(Recorded(paths, files, current))
    return found


def _mtime(path: Path) -> float:
    """When an index file was last written (0 when it cannot be told), to list the latest entries first."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _stats_of(paths: Sequence[str]) -> list | None:
    """file_stats of these paths now; None when one is gone or cannot tell a change."""
    try:
        return file_stats(paths)
    except (OSError, TmixError, _StatTellsNothing):
        return None


def index_dir(create: bool = False) -> Path:
    """cache_dir()/docs; made only when an entry is recorded (create=True)."""
    return cache_subdir("docs", create)


def _path(digest: str, create: bool = False) -> Path:
    return index_dir(create) / f"{digest}.json"


def _read(path: Path) -> dict:
    """An index file's entries; OSError or ValueError when it cannot be read as one. A FIFO or device put in its place
    is never waited on (filekind.read_regular)."""
    try:
        entries = json.loads(read_regular(path))
    except FileNotFoundError:
        return {}
    if not isinstance(entries, dict):
        raise ValueError(f"{path} is not an index file")
    return entries


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]
