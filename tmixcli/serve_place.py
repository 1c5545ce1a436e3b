"""Whether a running `tmix serve` can still be found where clients look: its socket path leads to its own socket and
its lock file path to the lock it holds. A cache folder deleted or moved takes both away; such a server stops, as it
would otherwise hold the model's memory where no client and no `tmix serve --stop` reaches it, beside a second one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_GONE = (FileNotFoundError, NotADirectoryError)  # the path, or a folder on its way, no longer there


class Place:
    """The lock file a server holds (its fd, into which its own mark is written) and the sockets it listens on."""

    def __init__(self, sock: Path, lock_fd: int) -> None:
        self.sock, self.lock, self.lock_fd = sock, sock.with_suffix(".lock"), lock_fd
        self.mark: bytes | None = f"{os.getpid()} {os.urandom(8).hex()}\n".encode()  # unlike an inode number, unique
        try:
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, self.mark, 0)
        except OSError:  # a full disk: the inode alone tells
            self.mark = None
        self.sockets: dict[Path, tuple[int, int]] = {}

    def bound(self, path: Path) -> None:
        """Note the socket just bound at `path` as ours."""
        self.sockets[path] = _identity(os.lstat(path))

    def lost(self) -> str | None:
        """What took this server from where clients look (None: its main socket and lock file are still its own)."""
        sock = _state(self.sock, self.sockets.get(self.sock))
        if sock != "ours":
            return f"its socket {self.sock} {sock}, so no client can reach this server" if sock else None
        try:
            lock = _state(self.lock, _identity(os.fstat(self.lock_fd)))
            if lock == "ours" and self.mark is not None and self._lock_text() != self.mark:
                lock = "now leads to another file"
        except _GONE:
            lock = "was removed or moved"
        except OSError:  # unreadable for now (permissions, I/O): not judged
            return None
        if lock in ("ours", None):  # None: cannot tell for now
            return None
        return f"its lock file {self.lock} {lock}, so a second server could start beside this one"

    def own(self, path: Path) -> bool:
        """Whether `path` still leads to the socket this server bound there."""
        return _state(path, self.sockets.get(path)) == "ours"

    def remove(self) -> None:
        """Remove the sockets that are still ours: another server's, at the same path since, stays."""
        for path in self.sockets:
            if self.own(path):
                with contextlib.suppress(OSError):
                    path.unlink()

    def _lock_text(self) -> bytes:
        """The start of the file at the lock's path (its mark, if it is ours)."""
        fd = os.open(self.lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            return os.read(fd, len(self.mark) + 1)
        finally:
            os.close(fd)


def _state(path: Path, ours: tuple[int, int] | None) -> str | None:
    """"ours" while `path` leads to the file `ours` names, else what became of it (None: cannot tell for now)."""
    try:
        found = _identity(os.lstat(path))
    except _GONE:
        return "was removed or moved"
    except OSError:  # unreadable for now (permissions, I/O)
        return None
    return "ours" if found == ours else "now leads to another file"


def _identity(st: os.stat_result) -> tuple[int, int]:
    """A file by its device and inode."""
    return st.st_dev, st.st_ino


def marked_pid(lock: Path) -> int | None:
    """The pid in the mark a server wrote into its lock file `lock` (Place); None without one (a server of an older
    tmix, a full disk). Read without waiting on a FIFO put in its place."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return int(os.read(fd, 64).split()[0])
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(fd)
