"""What a `tmix serve` client does while the server sends nothing: it says once that the server is busy with another
request, and gives up on a server whose process is stopped (Ctrl-Z in its terminal, SIGSTOP, a debugger). The kernel
still queues connections and requests for a stopped process, so its clients would otherwise wait on it forever."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tmixcli.procstat import STOPPED, state
from tmixcli.serve_place import marked_pid

POLL_S = 0.25  # seconds between looks at a server that sends nothing
STOPPED_FOR = 2.0  # seconds a server stays stopped before its client gives up on it (Ctrl-Z, then `bg`, is let be)


class ServerStopped(Exception):
    """The server's process is stopped: by a signal (Ctrl-Z, SIGSTOP) or by a debugger (`traced`)."""

    def __init__(self, pid: int, traced: bool) -> None:
        self.pid, self.traced, self.how = pid, traced, "by a debugger" if traced else "(Ctrl-Z?)"
        super().__init__(f"the tmix server (pid {pid}) is stopped {self.how}")

    def remedy(self) -> str:
        """How to get the server going again, or to end it."""
        if self.traced:
            return f"`kill -9 {self.pid}` ends it"
        return f"`kill -CONT {self.pid}` resumes it, `tmix serve --stop` ends it"


def stopped(pid: int | None) -> ServerStopped | None:
    """Why the process `pid` is stopped, or None when it is not (or no pid is known)."""
    letter = state(pid) if pid else None
    return ServerStopped(pid, letter == "t") if pid and letter in STOPPED else None


def server_stopped(sock: Path) -> ServerStopped | None:
    """Why the server of socket `sock` is stopped (its pid from its lock file), or None."""
    return stopped(marked_pid(sock.with_suffix(".lock")))


class Watch:
    """Called each POLL_S seconds the server of socket `sock` sends nothing: `on_busy` once, `busy_after` seconds
    without its first frame (unless it is stopped); ServerStopped once its process has stayed stopped STOPPED_FOR s."""

    def __init__(self, sock: Path, on_busy: Callable[[], None] | None, busy_after: float) -> None:
        self.sock, self.on_busy, self.busy_at = sock, on_busy, time.monotonic() + busy_after
        self.stopped_since: float | None = None

    def __call__(self) -> None:
        now, found = time.monotonic(), server_stopped(self.sock)
        if found is not None:
            self.stopped_since = self.stopped_since or now
            if now - self.stopped_since >= STOPPED_FOR:
                raise found
            return
        self.stopped_since = None
        if self.on_busy is not None and now >= self.busy_at:
            self.on_busy()
            self.on_busy = None

    def answered(self) -> None:
        """The server took the request: no busy line from here on."""
        self.on_busy = None
