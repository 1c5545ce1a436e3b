"""The temp folders of GGUF conversions in the models folder (".convert-<pid>-XXXXXXXX"): each locked (flock) by its
converter while it writes, so that one a killed conversion left (kill -9, the OOM killer) is told from one being
written: the next conversion, `tmix cache prune` and `clear` remove it, `tmix cache ls` names it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tmixcli.owners import alive, lock_held, on_disk
from tmixcli.sizes import human_size

PREFIX = ".convert-"
LEFTOVER_AFTER_S = 3600.0  # a folder whose writer cannot be told (an older tmix's) untouched this long is a leftover
_NAME = re.compile(r"\.convert-(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+")


def make(folder: Path) -> tuple[Path, int]:
    """A new temp folder in `folder` and a descriptor of it whose lock (held until it is closed) marks it as being
    written. A folder a remover took before it was locked (found unlocked) is given up for another."""
    for _ in range(8):
        tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=folder))
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:  # a remover took it at once
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink:
                return tmp, fd
        except BlockingIOError:  # a remover holds it, found unlocked: it removes it
            pass
        except OSError:  # no locks on this file system: removers judge by the pid in the name
            return tmp, fd
        os.close(fd)
    raise OSError(errno.EAGAIN, "every new conversion folder was removed at once")


def state(folder: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(leftovers of killed conversions, conversions in progress) in the models `folder`, each with the bytes it
    takes on disk."""
    stale, active = [], []
    for p in _temp_folders(folder):
        with _lock_tested(p) as held:
            (stale if _stale(p, held) else active).append((p, _disk_bytes(p)))
    return stale, active


def remove_leftovers(folder: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
    """Remove the temp folders no conversion will finish, never a live one's: (path, bytes) of those removed, (path,
    why) of those that could not be. Each goes while its lock is held here, so a converter cannot take it meanwhile."""
    removed, failed = [], []
    for p in _temp_folders(folder):
        with _lock_tested(p) as held:
            if not _stale(p, held):
                continue
            size = _disk_bytes(p)
            try:
                shutil.rmtree(p)
            except FileNotFoundError:
                pass
            except OSError as err:
                failed.append((p, err.strerror or str(err)))
                continue
        removed.append((p, size))
    return removed, failed


def described(found: list[tuple[Path, int]]) -> str:
    """"1 leftover folder of an interrupted model conversion, 119.0 MiB, in FOLDER" (or "2 leftover folders ...")."""
    what = "1 leftover folder of an interrupted model conversion" if len(found) == 1 else \
        f"{len(found)} leftover folders of interrupted model conversions"
    return f"{what}, {human_size(sum(n for _, n in found))}, in {found[0][0].parent}"


def _temp_folders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if _NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    except OSError:  # no models folder (yet), or one that cannot be read: nothing of tmix's to remove there
        return []


def _stale(path: Path, held: bool | None) -> bool:
    """Whether a temp folder is a leftover: free of its converter's lock; where the lock cannot be tested, once the
    pid in its name is gone or (no pid: an older tmix's) nothing in it changed for LEFTOVER_AFTER_S."""
    m = _NAME.fullmatch(path.name)
    pid = int(m["pid"]) if m and m["pid"] else None
    if held is not None and pid is not None:
        return not held
    if held:
        return False
    if pid is not None and not alive(pid):
        return True
    return time.time() - _last_change(path) > LEFTOVER_AFTER_S


def _files(path: Path) -> list[os.stat_result]:
    """The stat of a folder and of each file in it (a conversion writes no subfolders)."""
    found = []
    with contextlib.suppress(OSError):
        found.append(path.stat())
        for p in path.iterdir():
            with contextlib.suppress(OSError):
                found.append(p.lstat())
    return found


def _last_change(path: Path) -> float:
    return max((st.st_mtime for st in _files(path)), default=time.time())


def _disk_bytes(path: Path) -> int:
    """Bytes the folder's files take on disk (their blocks: a weight file cut short may be sparse)."""
    return sum(on_disk(st) for st in _files(path)[1:])


@contextlib.contextmanager
def _lock_tested(path: Path) -> Iterator[bool | None]:
    """Whether a converter holds its lock on the folder `path` (None: it cannot be told); when the lock is free, a
    shared lock is held here until the block ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        yield lock_held(fd)
    finally:
        os.close(fd)
