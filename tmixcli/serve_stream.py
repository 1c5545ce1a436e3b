"""The output of the request a `tmix serve` runs, sent to its client as frames (tmixcli/serve_client.py reads them).

A client that hangs up ends its request as a local Ctrl-C does. The last frames of a request that a stopped server
ends still reach a client that reads nothing for now (stopped, or its own output blocked): they go into the socket's
grown buffer, so the server ends at once and the client finds them, whole, when it reads on.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable

from tmixcli.serve_client import FRAME
from tmixcli.stdout import STAND_IN

_PIECE = 2048  # characters a frame at most: its <= 8 KiB go into the socket whole or not at all, so a stop signal
# that ends a blocked send never leaves half a frame there (the kernel queues such a write as one piece)
_LAST_WAIT = 5.0  # seconds in all a stopping server's frames wait for room (its grown buffer full too), then dropped


class ClientGone(KeyboardInterrupt):
    """The client of the request in hand hung up (its Ctrl-C): the request stops as a local run's Ctrl-C stops it."""


def hung_up(conn: socket.socket) -> bool:
    """Whether the client has closed its end (EOF or a reset), found without waiting and without taking any data."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Client:
    """The connection of the request in hand. Once it is found closed, the request gets ClientGone (once, in the
    main thread, where requests run) and all it still writes is dropped, as a local run's output after Ctrl-C.
    Once `stopping()`, frames wait _LAST_WAIT s at most (see _send_last)."""

    def __init__(self, conn: socket.socket, stopping: Callable[[], bool]) -> None:
        self.conn, self.stopping, self.gone, self._told = conn, stopping, False, False
        self._deadline: float | None = None

    def send(self, frame: bytes) -> None:
        """Send one frame; a failure means the client is gone."""
        if not self.gone:
            try:
                if self.stopping():
                    self._send_last(frame)
                else:
                    self.conn.sendall(frame)
            except OSError:
                self.gone = True
        self._tell()

    def _send_last(self, frame: bytes) -> None:
        """Send a frame of a request the server's stop ends: the send buffer first grows to make room for the last
        frames while the client reads nothing; no wait past _LAST_WAIT s after the first (TimeoutError)."""
        if self._deadline is None:
            self._deadline = time.monotonic() + _LAST_WAIT
            _grow_send_buffer(self.conn)
        view = memoryview(frame)
        while view:
            try:
                view = view[self.conn.send(view, socket.MSG_DONTWAIT):]
            except BlockingIOError:
                room = select.poll()
                room.register(self.conn, select.POLLOUT)
                left = self._deadline - time.monotonic()
                if left <= 0 or not room.poll(left * 1000):
                    raise TimeoutError("the client reads nothing") from None

    def check(self) -> None:
        """At a checkpoint: ClientGone once the client has hung up (--json sends nothing until the end)."""
        self.gone = self.gone or hung_up(self.conn)
        self._tell()

    def _tell(self) -> None:
        if self.gone and not self._told and threading.current_thread() is threading.main_thread():
            self._told = True
            raise ClientGone


def _grow_send_buffer(conn: socket.socket) -> None:
    """Double the send buffer of `conn` where the system allows it (net.core.wmem_max), never shrinking it."""
    with contextlib.suppress(OSError):
        size = conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)  # doubled by the kernel, up to its cap
        if conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < size:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size // 2)


class Stream:
    """A text stream whose writes go to the client as frames (see Client for a client gone); a terminal where the
    client's own stream is one."""

    def __init__(self, client: Client, kind: bytes, tty: bool = False) -> None:
        self.client, self.kind, self.encoding, self.tty = client, kind, "utf-8", tty

    def write(self, text: str) -> int:
        for start in range(0, len(text) or 1, _PIECE):  # an empty write still finds a client gone
            data = text[start:start + _PIECE].encode("utf-8", STAND_IN)  # a file name's raw bytes as such
            self.client.send(FRAME.pack(self.kind, len(data)) + data)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty
