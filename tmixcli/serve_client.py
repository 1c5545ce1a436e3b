"""The client side of `tmix serve`: how a `tmix ask` / `tmix prefill` process finds a server and has it run the request.

A server listens on a socket named by its settings (tmixcli/serverkey.py) in the cache folder. A client sends its
arguments, working folder and TMIX_* variables as one JSON line and copies the server's frames to its own stdout and
stderr; `tmix serve --stop` reaches the server's stop socket. TMIX_SERVE=off makes `ask`/`prefill` ignore servers.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tmixcli.startup import working_folder
from tmixcli.envflags import switch
from tmixcli.errors import TmixError
from tmixcli.paths import cache_dir, checked_subdir
from tmixcli.serve_place import marked_pid
from tmixcli.serve_wait import POLL_S, ServerStopped, Watch, server_stopped
from tmixcli.stdout import is_terminal

FRAME = struct.Struct("!cI")  # kind (S started, O stdout, E stderr, X exit code), payload length
_BUSY_AFTER = 1.0  # an idle server takes a request in milliseconds: not taken by then, it is busy with another
_STOP_ANSWER = 10.0  # seconds a server has to answer `tmix serve --stop` (a thread of its own answers it at once)
_STOP_WAIT = 60.0  # seconds `tmix serve --stop` waits for the server to be gone (it may be saving a KV file)

def socket_path(key: str) -> Path:
    """The socket of the server for `key`, in the cache folder (or a private temp folder if that path is too long);
    TmixError when that folder cannot be used."""
    name = hashlib.sha256(key.encode()).hexdigest()[:16] + ".sock"
    path = cache_dir() / "serve" / name
    if len(str(path)) > 100:  # AF_UNIX paths are limited to ~108 bytes
        return Path(tempfile.gettempdir()) / f"tmix-{os.getuid()}" / name
    return checked_subdir("serve") / name  # TmixError also when serve/ is there but cannot be searched


def stop_path(path: Path) -> Path:
    """The socket `tmix serve --stop` reaches the server of socket `path` by, answered even while a request runs."""
    return path.with_suffix(".stop")


def _connect(path: Path, idle: Callable[[], None] | None = None) -> socket.socket | None:
    """A connection to the server listening on `path` (None: none listens there). While its queue of waiting clients
    is full, `idle` is called each POLL_S seconds (it may raise to give up); without one, the connect waits."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(idle is None)
        try:
            sock.connect(str(path))
        except BlockingIOError:  # full: a stopped server takes none of its waiting clients
            sock.close()
            idle()
            time.sleep(POLL_S)
            continue
        except OSError:
            sock.close()
            return None
        sock.setblocking(True)
        return sock


def forward(argv: list[str], key: str, quiet: bool = False, texts: Sequence[str | None] = ()) -> int | None:
    """Run `tmix argv` on the server for `key`: its output goes to ours; returns its exit code (None: run locally).
    Unless `quiet`, a server busy with another request is said in one status line while this one waits. `texts`: the
    values of argv that are text, not paths (the question, --system, --password)."""
    serve = sys.modules.get("tmixcli.serve")  # imported only where a server runs (not by a client)
    if not switch("TMIX_SERVE") or (serve is not None and serve.served):
        return None
    try:
        path = socket_path(key)
    except TmixError:  # no cache folder, so no server listening in it
        return None
    request = _request(argv, texts)  # a deleted working folder: one error line, not a local run (torch dies there)
    watch = Watch(path, None if quiet else _say_busy, _BUSY_AFTER)
    try:
        sock = _connect(path, watch)
    except ServerStopped as stop:
        return _stopped(stop, False, False, quiet)
    if sock is None:
        return None
    with sock:
        return _relay(sock, request, watch, quiet)


def _say_busy() -> None:
    print("tmix: waiting for the tmix server: busy with another request", file=sys.stderr, flush=True)


def _request(argv: list[str], texts: Sequence[str | None] = ()) -> bytes:
    """The request line: arguments, working folder and the TMIX_* variables, the cache folder made absolute. `raw`
    has them as the bytes this process got them as (each byte one character), so that a server in another locale
    names the same files; its `text` lists the arguments that are text (`texts`), which it takes as read here."""
    cwd = working_folder()
    env = {k: v for k, v in os.environ.items() if k.startswith("TMIX_") and k != "TMIX_SERVE"}
    env["TMIX_CACHE_DIR"] = str(cache_dir().absolute())
    tty = {"stdout": is_terminal(sys.stdout), "stderr": is_terminal(sys.stderr)}  # progress bars show as they would
    raw = {"argv": [_raw(a) for a in argv], "cwd": _raw(cwd), "env": {k: _raw(v) for k, v in env.items()},
           "text": [i for i, a in enumerate(argv) if _is_text(a, texts)]}
    return json.dumps({"argv": argv, "cwd": os.fsdecode(cwd), "env": env, "tty": tty, "raw": raw}).encode() + b"\n"


def _raw(value: str | bytes) -> str:
    """A path's bytes, one character each (JSON carries them whatever the locales)."""
    return os.fsencode(value).decode("latin-1")


def _is_text(arg: str, texts: Sequence[str | None]) -> bool:
    """Whether the argument `arg` is (or, as --opt=VALUE, holds) one of the text values."""
    return any(t is not None and (arg == t or (arg.startswith("--") and arg.endswith("=" + t))) for t in texts)


def from_raw(raw: str) -> str:
    """A path sent by _raw, as this process names it."""
    return os.fsdecode(raw.encode("latin-1"))


_ESCAPED = re.compile("[\udc80-\udcff]+")  # undecodable bytes, as surrogateescape holds them


def frame_text(data: bytes) -> str:
    """A stdout or stderr frame's text: UTF-8, but for bytes of a file name the server could not decode, which it
    sends as they are: those are read as this process reads file names."""
    text = data.decode("utf-8", "surrogateescape")
    return _ESCAPED.sub(lambda m: os.fsdecode(bytes(ord(c) - 0xDC00 for c in m[0])), text)

def _frames(sock: socket.socket, request: bytes,
            idle: Callable[[], None] | None = None) -> Iterator[tuple[bytes, int, bytes]]:
    """Send `request`, then yield the server's frames (kind, length, payload); a socket error ends them like EOF.
    `idle` is called each POLL_S seconds the server sends nothing (it may raise to give up)."""
    try:
        sock.sendall(request)
        while len(head := _read(sock, FRAME.size, idle)) == FRAME.size:
            kind, n = FRAME.unpack(head)
            yield kind, n, (b"" if kind in (b"S", b"X") else _read(sock, n, idle))
    except OSError:
        return


def _read(sock: socket.socket, n: int, idle: Callable[[], None] | None) -> bytes:
    """`n` bytes from the server (fewer once it closes), calling `idle` while none come."""
    data = bytearray()
    while len(data) < n:
        if not select.select([sock], [], [], POLL_S)[0]:
            if idle is not None:
                idle()
            continue
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _relay(sock: socket.socket, request: bytes, watch: Watch | None = None, quiet: bool = False) -> int | None:
    """Copy the server's output to ours; its exit code, or None if it closed before taking the request (or stayed
    stopped before it: `watch`)."""
    started, pid, cut = False, 0, False
    try:
        for kind, n, data in _frames(sock, request, watch):
            started = True
            if watch is not None:
                watch.answered()
            if kind == b"S":
                pid = n
            if kind == b"X":
                return n
            if kind in (b"O", b"E"):
                out = sys.stdout if kind == b"O" else sys.stderr
                out.write(frame_text(data))
                out.flush()
                cut = not data.endswith(b"\n") if data else cut  # the last line written is unfinished
    except ServerStopped as stop:
        return _stopped(stop, started, cut, quiet)
    if not started:  # stopping, refusing, or gone before it began: nothing ran, so run it here
        return None
    server = f"the tmix server (pid {pid})" if pid else "the tmix server"  # a server of an older tmix: no pid
    print(("\n" if cut else "") + f"tmix: error: {server} died during this run (killed or crashed); run the command "
          "again", file=sys.stderr)  # on a line of its own, also after an answer cut mid-line
    return 1


def _stopped(stop: ServerStopped, started: bool, cut: bool, quiet: bool) -> int | None:
    """A client giving up on a stopped server: before its request began, it runs here (None), said in a status line;
    once begun, one error line and exit 1 (resumed, the server finds this client gone and ends the request)."""
    if not started:
        if not quiet:
            print(f"tmix: {stop}, so this runs here; {stop.remedy()}", file=sys.stderr, flush=True)
        return None
    print(("\n" if cut else "") + f"tmix: error: the tmix server (pid {stop.pid}) was stopped {stop.how} during this "
          f"run; {stop.remedy()}; run the command again", file=sys.stderr, flush=True)
    return 1


def stop_server(key: str, say: Callable[[str], None] | None = None) -> int:
    """Stop the server for `key` as SIGTERM does (the request it runs ends "interrupted"); its pid, once it is gone.
    A server stopped by Ctrl-Z or SIGSTOP is resumed first, which `say` is told: stopped, it takes no stop request."""
    path = socket_path(key)
    _resume(path, say)
    sock, idle = _connect(stop_path(path)), _within(_STOP_ANSWER)  # answered at once, busy or not
    if sock is None:
        sock, idle = _connect(path), None  # a server of an older tmix, which answers once its request is done
    if sock is None:
        raise TmixError("no tmix server runs with the settings of these --model, --device, --dtype, --device-map and "
                        "--compile")
    with sock:
        head = next(_frames(sock, json.dumps({"stop": True}).encode() + b"\n", idle), None)
    if head is None:
        pid = marked_pid(path.with_suffix(".lock"))
        server = f"the tmix server (pid {pid})" if pid else "the tmix server"
        raise TmixError(f"{server} did not answer the stop request within {_STOP_ANSWER:g} s", code=1)
    pid = head[1]
    deadline = time.monotonic() + _STOP_WAIT
    while _serving(path) and time.monotonic() < deadline and server_stopped(path) is None:
        time.sleep(0.05)
    if _serving(path) and (again := server_stopped(path)) is not None:
        raise TmixError(f"{again} again before it could end; `kill -CONT {pid}` lets it end, `kill -9 {pid}` ends it "
                        "at once", code=1)
    if _serving(path):
        raise TmixError(f"the tmix server (pid {pid}) has not stopped within {_STOP_WAIT:g} s (it may be saving the KV "
                        f"file of the answer it was writing): `tmix serve --stop` again skips that, `kill -9 {pid}` "
                        "ends it", code=1)
    return pid


def _resume(path: Path, say: Callable[[str], None] | None) -> None:
    """Resume (SIGCONT) the server of socket `path` if Ctrl-Z or SIGSTOP stopped it: stopped, it can take no stop
    request (nor any signal). One a debugger holds is left to it: one error line."""
    stop = server_stopped(path) if _serving(path) else None  # its lock held: the pid marked there is the server's
    if stop is None:
        return
    if stop.traced:
        raise TmixError(f"{stop}, so it cannot take the stop request; {stop.remedy()}", code=1)
    try:
        os.kill(stop.pid, signal.SIGCONT)
    except OSError as err:
        raise TmixError(f"{stop} and cannot be resumed to take the stop request: {err.strerror or err}", code=1) \
            from None
    if say is not None:
        say(f"{stop}: resumed it, to stop it")


def _within(seconds: float) -> Callable[[], None]:
    """An `idle` for _frames that gives up (TimeoutError) once `seconds` have passed."""
    deadline = time.monotonic() + seconds

    def idle() -> None:
        if time.monotonic() > deadline:
            raise TimeoutError
    return idle


def _serving(path: Path) -> bool:
    """Whether a server still holds the lock file beside its socket `path` (claim): it lets go as it ends."""
    try:
        fd = os.open(path.with_suffix(".lock"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no locks here: the socket tells
        return path.exists()
    finally:
        os.close(fd)
    return False
